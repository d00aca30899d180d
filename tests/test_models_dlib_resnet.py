"""The numpy reference forward pass equals dlib's own compute_face_descriptor on real aligned faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware_py.convert.dlib_resnet import ReferenceEmbedder, add_zero_extended, forward, load_face_resnet
from firmware_py.convert.facechips import FIXED_CROPS, DlibAligner, crop_chip, load_rgb
from firmware_py.models.manifest import load_manifest

dlib = pytest.importorskip("dlib", reason="dlib-bin is in the dev extra: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def paths(models_dir: Path) -> tuple[Path, Path]:
    m = load_manifest()
    return m.require("dlib_resnet_v1", models_dir), m.require("dlib_shape_predictor_5", models_dir)


@pytest.fixture(scope="module")
def real_chips(paths: tuple[Path, Path], grace_hopper: np.ndarray, astronaut: np.ndarray) -> np.ndarray:
    """grace_hopper and astronaut aligned by dlib itself (HOG + 5 points + get_face_chip(150, 0.25))."""
    aligner = DlibAligner(paths[1])
    chips = [aligner.chip(grace_hopper), aligner.chip(astronaut)]
    assert all(c is not None and c.shape == (150, 150, 3) for c in chips)
    return np.stack(chips)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def dlib_net(paths: tuple[Path, Path]) -> object:
    return dlib.face_recognition_model_v1(str(paths[0]))


def test_numpy_forward_equals_dlib_on_real_chips(paths: tuple[Path, Path], real_chips: np.ndarray, dlib_net: object) -> None:
    net = load_face_resnet(paths[0])
    ours = forward(net, real_chips)
    theirs = np.array([np.array(dlib_net.compute_face_descriptor(c)) for c in real_chips])  # type: ignore[attr-defined]
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    # dlib's scale, not L2-normalised; two different people are far apart at dlib's 0.6
    assert np.linalg.norm(theirs, axis=1).min() > 1.2 and np.linalg.norm(theirs, axis=1).max() < 1.7
    assert np.linalg.norm(ours[0] - ours[1]) > 0.6


def test_numpy_forward_on_unaligned_crop_still_equals_dlib(paths: tuple[Path, Path], grace_hopper: np.ndarray, dlib_net: object) -> None:
    """Parity is about the network, not the alignment: any 150x150 chip must agree."""
    chip = crop_chip(grace_hopper, FIXED_CROPS["grace_hopper"])
    ours = ReferenceEmbedder(paths[0]).embed(chip)
    np.testing.assert_allclose(ours, np.array(dlib_net.compute_face_descriptor(chip)), atol=1e-5, rtol=0)  # type: ignore[attr-defined]


def test_batch_equals_single(paths: tuple[Path, Path], real_chips: np.ndarray) -> None:
    net = load_face_resnet(paths[0])
    batch = forward(net, real_chips)
    np.testing.assert_allclose(batch[1], forward(net, real_chips[1]), atol=1e-6)
    with pytest.raises(ValueError, match=r"shape \(N, 150, 150, 3\)"):
        forward(net, real_chips[:, :100])


def test_add_prev_zero_extends_top_left() -> None:
    a = np.ones((1, 3, 3, 4), np.float32)
    b = np.full((1, 4, 4, 2), 2.0, np.float32)
    out = add_zero_extended(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert out[0, 0, 0, 0] == 3 and out[0, 0, 0, 3] == 1 and out[0, 3, 3, 0] == 2 and out[0, 3, 3, 3] == 0


@pytest.mark.data
def test_numpy_forward_equals_dlib_on_dlib_example_chips(data_root: Path, paths: tuple[Path, Path], dlib_net: object) -> None:
    """dlib's own aligned 150x150 example chips (5 people x 11)."""
    files = sorted((data_root / "small" / "dlib_johns").rglob("*.jpg"))
    assert len(files) >= 50
    chips = np.stack([load_rgb(f) for f in files])
    ours = ReferenceEmbedder(paths[0]).embed(chips)
    theirs = np.array([np.array(d) for d in dlib_net.compute_face_descriptor(list(chips))])  # type: ignore[attr-defined]
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
