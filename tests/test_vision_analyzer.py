"""FaceAnalyzer: the whole vision pipeline from a Frame, built from the config and the model manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.capture.frame import Frame
from firmware_py.config import load
from firmware_py.config.loader import with_changes
from firmware_py.models.manifest import ModelError
from firmware_py.vision.analyzer import STAGES, FaceAnalyzer


@pytest.fixture(scope="module")
def analyzer(models_dir: Path) -> FaceAnalyzer:
    return FaceAnalyzer.from_config(load(None), models_dir=models_dir)


def scene(grace: np.ndarray, astronaut: np.ndarray) -> np.ndarray:
    canvas = Image.new("RGB", (640, 480), (96, 110, 120))
    for photo, w, at in ((astronaut, 540, (300, 120)), (grace, 420, (0, 0))):
        im = Image.fromarray(photo)
        canvas.paste(im.resize((w, round(im.height * w / im.width))), at)
    return np.asarray(canvas)


def test_primary_face_is_landmarked_aligned_and_measured(analyzer: FaceAnalyzer, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    image = scene(grace_hopper, astronaut)
    result = analyzer.process(Frame(image, ts=10.0, index=0, source="test"))
    obs = result.observations
    assert len(obs) == 2
    p, other = obs
    assert p.primary and not other.primary and result.primary is p
    assert p.detection.width > other.detection.width  # nearest first
    assert p.chip is not None and p.chip.shape == (150, 150, 3) and p.chip.dtype == np.uint8
    assert p.landmarks is not None and p.landmarks.presence > 0.9
    assert p.quality is not None and p.quality.face_px == pytest.approx(p.detection.width)
    assert p.align_source == "facemesh" and p.frame_ts == 10.0  # [vision.align] source = "facemesh" (the default)
    assert other.chip is None and other.landmarks is None and other.quality is None
    assert p.track_id != other.track_id and p.track.matched
    # Timings for the bench: every stage, both models.
    assert set(result.stages_ms) == set(STAGES)
    assert result.invoke_ms["detector"] > 0 and result.invoke_ms["facemesh"] > 0
    assert result.model_invoke_ms == pytest.approx(sum(result.invoke_ms.values()))
    assert result.total_ms >= sum(result.stages_ms.values()) * 0.99
    assert analyzer.last is result
    # Same scene, next frame: same track ids.
    again = analyzer.analyze(Frame(image, ts=10.1, index=1, source="test"))
    assert [o.track_id for o in again] == [p.track_id, other.track_id]


def test_empty_frame_ends_tracks_after_the_gap(models_dir: Path, grace_hopper: np.ndarray) -> None:
    cfg = with_changes(load(None), {"vision.tracker.max_missed": 1})
    a = FaceAnalyzer.from_config(cfg, models_dir=models_dir)
    first = a.analyze(Frame(grace_hopper, 0.0, 0, "t"))[0].track_id
    blank = np.zeros_like(grace_hopper)
    r1 = a.process(Frame(blank, 0.1, 1, "t"))
    assert r1.observations == [] and [t.track_id for t in r1.coasting] == [first] and r1.ended == []
    r2 = a.process(Frame(blank, 0.2, 2, "t"))
    assert [t.track_id for t in r2.ended] == [first]
    assert r2.stages_ms["landmarks"] == 0 and r2.invoke_ms["facemesh"] == 0


def test_detector_alignment_without_facemesh(models_dir: Path, grace_hopper: np.ndarray) -> None:
    cfg = with_changes(load(None), {"vision.landmarks.enabled": False, "vision.align.source": "detector"})
    a = FaceAnalyzer.from_config(cfg, models_dir=models_dir)
    assert a.mesh is None
    (obs,) = a.analyze(Frame(grace_hopper, 0.0, 0, "t"))
    assert obs.landmarks is None and obs.align_source == "detector" and obs.chip is not None
    assert obs.quality is not None and obs.quality.yaw == 0.0


def test_a_corrupt_model_is_refused_by_name(tmp_path: Path, models_dir: Path) -> None:
    bad = tmp_path / "models"
    bad.mkdir()
    for f in models_dir.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / "face_landmark.tflite").unlink()
    (bad / "face_landmark.tflite").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="facemesh"):
        FaceAnalyzer.from_config(load(None), models_dir=bad)


def test_chip_and_quality_cost_nothing_until_asked_for(analyzer: FaceAnalyzer, grace_hopper: np.ndarray) -> None:
    r = analyzer.process(Frame(grace_hopper, 20.0, 0, "t"))
    p = r.primary
    assert p is not None
    assert r.stages_ms["align"] == 0 and r.stages_ms["quality"] == 0
    before = r.total_ms
    chip = p.chip
    assert chip is not None and r.stages_ms["align"] > 0 and r.stages_ms["quality"] == 0
    assert p.chip is chip  # computed once
    assert p.quality is not None and r.stages_ms["quality"] > 0
    assert r.total_ms == pytest.approx(before + r.stages_ms["align"] + r.stages_ms["quality"])
    eager = FaceAnalyzer(analyzer.detector, analyzer.tracker, analyzer.mesh, lazy=False)
    assert eager.process(Frame(grace_hopper, 21.0, 1, "t")).stages_ms["align"] > 0
