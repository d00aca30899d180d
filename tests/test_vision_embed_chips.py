"""The embedding path: which chips describe a face ([vision.align] source) and how they become one descriptor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware_py.capture.frame import Frame
from firmware_py.config import load, with_changes
from firmware_py.vision.align import DETECTOR4_TEMPLATE, FACEMESH5_TEMPLATE, align_chip
from firmware_py.vision.analyzer import FaceAnalyzer
from firmware_py.vision.embedding import describe, describe_face, load_embedder
from firmware_py.vision.landmarks import DLIB5


def _primary(models_dir: Path, image: np.ndarray, source: str):  # type: ignore[no-untyped-def]
    cfg = with_changes(load(None), {"vision.align.source": source})
    return FaceAnalyzer.from_config(cfg, models_dir=models_dir).process(Frame(image, 0.0, 0, "t")).primary


def test_both_gives_the_facemesh_and_the_detector_chip(models_dir: Path, grace_hopper: np.ndarray) -> None:
    obs = _primary(models_dir, grace_hopper, "both")
    assert obs.align_source == "facemesh+detector"
    chips = obs.chips
    assert chips.shape == (2, 150, 150, 3) and chips.dtype == np.uint8
    # The first chip is the observation's chip (quality is measured on it), aligned on FaceMesh's points...
    assert np.array_equal(chips[0], obs.chip)
    assert np.array_equal(chips[0], align_chip(grace_hopper, obs.landmarks.points[list(DLIB5), :2], FACEMESH5_TEMPLATE, exact=False))
    # ...the second on the detector's keypoints: a different cut of the same face.
    assert np.array_equal(chips[1], align_chip(grace_hopper, obs.detection.keypoints[:4], DETECTOR4_TEMPLATE, exact=False))
    assert np.abs(chips[0].astype(int) - chips[1].astype(int)).mean() > 1.0
    one = _primary(models_dir, grace_hopper, "facemesh")
    assert one.align_source == "facemesh" and one.chips.shape == (1, 150, 150, 3) and np.array_equal(one.chips[0], chips[0])


def test_describe_face_averages_every_chip_and_its_mirror(models_dir: Path, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    emb = load_embedder(load(None))
    chips = _primary(models_dir, grace_hopper, "both").chips
    d = describe_face(emb, chips, mirror=True)
    assert d.shape == (128,) and d.dtype == np.float32
    four = emb.embed(np.ascontiguousarray(np.concatenate([chips, chips[:, :, ::-1]])))
    assert d == pytest.approx(four.mean(0), abs=1e-5)
    assert describe_face(emb, chips[:1], mirror=False) == pytest.approx(describe(emb, chips[0])[0], abs=1e-6)
    # Both alignments describe the same person: each alone is close to their mean, a stranger is far from it.
    fm, det = describe_face(emb, chips[:1], True), describe_face(emb, chips[1:], True)
    stranger = describe_face(emb, _primary(models_dir, astronaut, "both").chips, True)
    assert np.linalg.norm(fm - d) < 0.2 and np.linalg.norm(det - d) < 0.2
    assert np.linalg.norm(stranger - d) > 0.6


def test_both_needs_landmarks() -> None:
    from firmware_py.config.schema import ConfigError

    with pytest.raises(ConfigError, match=r"align\.source"):
        with_changes(load(None), {"vision.landmarks.enabled": False, "vision.align.source": "both"})
