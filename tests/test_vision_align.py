"""Landmarks, alignment against dlib's own chips, and face quality, on real photos."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from firmware_py.models.manifest import load_manifest
from firmware_py.vision.align import (
    DETECTOR4_TEMPLATE,
    DLIB5_TEMPLATE,
    FACEMESH5_TEMPLATE,
    Resampler,
    _pyramid_down,
    align_chip,
    chip_geometry,
    similarity_transform,
)
from firmware_py.vision.detector import LEFT_EYE, RIGHT_EYE, FaceDetector
from firmware_py.vision.landmarks import DLIB5, LEFT_EYE_EAR, RIGHT_EYE_EAR, FaceMesh
from firmware_py.vision.quality import QualityThresholds, head_pose, measure_quality, sharpness

dlib = pytest.importorskip("dlib", reason="dlib-bin is in the dev extra: pip install -e .[dev]")


@pytest.fixture(scope="module")
def models(models_dir: Path) -> dict[str, Any]:
    m = load_manifest()
    return {
        "detector": FaceDetector(m.require("blazeface_short_range", models_dir), min_face_px=40),
        "mesh": FaceMesh(m.require("facemesh", models_dir)),
        "hog": dlib.get_frontal_face_detector(),
        "sp": dlib.shape_predictor(str(m.require("dlib_shape_predictor_5", models_dir))),
        "rec": dlib.face_recognition_model_v1(str(m.require("dlib_resnet_v1", models_dir))),
    }


def dlib5(models: dict[str, Any], image: np.ndarray) -> tuple[Any, np.ndarray]:
    rect = max(models["hog"](image, 1), key=lambda r: r.area())  # HOG may add a small false positive
    shape = models["sp"](image, rect)
    return shape, np.array([[p.x, p.y] for p in shape.parts()], float)


def descriptor_distance(models: dict[str, Any], a: np.ndarray, b: np.ndarray) -> float:
    d = np.array(models["rec"].compute_face_descriptor([a, b]))
    return float(np.linalg.norm(d[0] - d[1]))


@pytest.fixture(params=["grace_hopper", "astronaut"])
def photo(request: pytest.FixtureRequest) -> np.ndarray:
    return request.getfixturevalue(request.param)


def test_landmark_eyes_sit_on_the_detector_eyes(models: dict[str, Any], photo: np.ndarray) -> None:
    det = models["detector"].detect(photo)[0]
    lm = models["mesh"].landmarks(photo, det)
    assert lm.points.shape == (468, 3) and lm.points.dtype == np.float32
    assert lm.presence > 0.9
    eyes = lm.eye_centres()
    tol = 0.15 * det.eye_distance
    assert np.hypot(*(eyes[0] - det.keypoints[RIGHT_EYE])) < tol
    assert np.hypot(*(eyes[1] - det.keypoints[LEFT_EYE])) < tol
    assert abs(lm.interocular - det.eye_distance) < tol
    # Every point inside the face box grown by a quarter.
    x0, y0, x1, y1 = det.box
    g = 0.25 * det.width
    assert ((lm.points[:, 0] > x0 - g) & (lm.points[:, 0] < x1 + g) & (lm.points[:, 1] > y0 - g) & (lm.points[:, 1] < y1 + g)).all()
    # Open eyes: an eye aspect ratio in the usual open range; the points exist for liveness.
    for ear in lm.eye_aspect_ratios():
        assert 0.15 < ear < 0.45
    assert len(RIGHT_EYE_EAR) == len(LEFT_EYE_EAR) == 6


def test_facemesh_dlib5_points_near_dlib_shape_predictor(models: dict[str, Any], photo: np.ndarray) -> None:
    _, ref = dlib5(models, photo)
    det = models["detector"].detect(photo)[0]
    pts = models["mesh"].landmarks(photo, det).dlib5()
    eye_span = np.hypot(*(ref[0] - ref[2]))
    assert np.hypot(*(pts - ref).T).max() < 0.12 * eye_span


def test_align_with_dlib_points_is_dlibs_chip(models: dict[str, Any], photo: np.ndarray) -> None:
    shape, pts = dlib5(models, photo)
    ref = dlib.get_face_chip(photo, shape, 150, 0.25)
    ours = align_chip(photo, pts)
    assert ours.shape == (150, 150, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref).mean() < 0.05


def test_align_matches_dlib_on_a_large_face_through_its_pyramid(models: dict[str, Any], grace_hopper: np.ndarray) -> None:
    big = np.asarray(Image.fromarray(grace_hopper).resize((1024, 1200), Image.BILINEAR))
    shape, pts = dlib5(models, big)
    assert chip_geometry(pts).scale > 2  # dlib samples a pyramid level here
    ref = dlib.get_face_chip(big, shape, 150, 0.25)
    exact = align_chip(big, pts, exact=True)
    assert np.abs(exact.astype(int) - ref).mean() < 0.05
    fast = align_chip(big, pts, exact=False)
    assert 0.05 < np.abs(fast.astype(int) - ref).mean() < 4
    assert descriptor_distance(models, fast, ref) < 0.08


def test_chip_from_our_landmarks_embeds_like_dlibs_chip(models: dict[str, Any], photo: np.ndarray) -> None:
    shape, _ = dlib5(models, photo)
    ref = dlib.get_face_chip(photo, shape, 150, 0.25)
    det = models["detector"].detect(photo)[0]
    lm = models["mesh"].landmarks(photo, det)
    mesh_chip = align_chip(photo, lm.points[list(DLIB5), :2], FACEMESH5_TEMPLATE)
    kp_chip = align_chip(photo, det.keypoints[:4], DETECTOR4_TEMPLATE)
    # dlib's same-person distances run 0.3-0.5; its threshold is 0.6.
    assert descriptor_distance(models, mesh_chip, ref) < 0.2
    assert descriptor_distance(models, kp_chip, ref) < 0.3


def test_similarity_transform_recovers_a_known_one() -> None:
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, (5, 2))
    a = 1.7 * np.array([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]])
    dst = src @ a.T + [12.0, -4.0]
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], a) and np.allclose(m[:, 2], [12, -4])
    g = chip_geometry(chip_points_in_frame := dst[:5], DLIB5_TEMPLATE)
    assert np.allclose(g.to_chip(g.to_frame(np.array([[3.0, 7.0]]))), [[3.0, 7.0]])
    assert chip_points_in_frame.shape == (5, 2)


def test_bad_points_refused() -> None:
    with pytest.raises(ValueError, match="5 points"):
        chip_geometry(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        chip_geometry(np.full((5, 2), np.nan))


def test_pyramid_down_is_dlibs_filter() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (21, 17, 3), dtype=np.uint8)
    out = _pyramid_down(a)
    assert out.shape == ((21 - 3) // 2, (17 - 3) // 2, 3)
    k = np.array([1, 4, 6, 4, 1], np.int64)
    r, c = 3, 2  # output pixel (r, c) is the [1 4 6 4 1]^2 filter centred on input (2r+2, 2c+2), /256, truncated
    block = a[2 * r : 2 * r + 5, 2 * c : 2 * c + 5].astype(np.int64)
    expect = (np.einsum("i,j,ijc->c", k, k, block)) // 256
    assert (out[r, c] == expect).all()


def test_resampler_reduces_before_a_large_shrink(grace_hopper: np.ndarray) -> None:
    rs = Resampler(grace_hopper)
    data = (4.0, 0.0, 0.0, 0.0, 4.0, 0.0)  # 4x shrink of the whole photo
    aa = rs.sample(data, (128, 150), antialias=True)
    plain = rs.sample(data, (128, 150), antialias=False)
    assert aa.shape == plain.shape == (150, 128, 3)
    # The box-reduced version is smoother (less aliasing): lower high-frequency energy.
    hf = [float(np.abs(np.diff(x.astype(float), axis=1)).mean()) for x in (aa, plain)]
    assert hf[0] < hf[1]


def test_quality_of_a_sharp_frontal_portrait(models: dict[str, Any], photo: np.ndarray) -> None:
    det = models["detector"].detect(photo)[0]
    lm = models["mesh"].landmarks(photo, det)
    chip = align_chip(photo, lm.points[list(DLIB5), :2], FACEMESH5_TEMPLATE)
    q = measure_quality(det, lm, chip)
    assert abs(q.yaw) < 15 and abs(q.pitch) < 20 and abs(q.roll) < 12
    assert 60 < q.luminance < 200 and q.clipped < 0.1
    assert q.sharpness > 0.3
    assert q.failures(QualityThresholds(min_face_px=60)) == []
    assert q.failures(QualityThresholds(min_face_px=1000)) == ["face_too_small"]


def test_blur_lowers_sharpness_below_the_limit(models: dict[str, Any], grace_hopper: np.ndarray) -> None:
    from PIL import ImageFilter

    det = models["detector"].detect(grace_hopper)[0]
    lm = models["mesh"].landmarks(grace_hopper, det)
    pts = lm.points[list(DLIB5), :2]
    sharp = sharpness(align_chip(grace_hopper, pts, FACEMESH5_TEMPLATE))
    blurred_img = np.asarray(Image.fromarray(grace_hopper).filter(ImageFilter.GaussianBlur(4)))
    blurred = align_chip(blurred_img, pts, FACEMESH5_TEMPLATE)
    assert sharpness(blurred) < 0.5 * sharp
    q = measure_quality(det, lm, blurred)
    assert "too_blurred" in q.failures(QualityThresholds(min_face_px=60))


def test_exposure_limits(models: dict[str, Any], grace_hopper: np.ndarray) -> None:
    det = models["detector"].detect(grace_hopper)[0]
    lm = models["mesh"].landmarks(grace_hopper, det)
    pts = lm.points[list(DLIB5), :2]
    dark = align_chip((grace_hopper * 0.2).astype(np.uint8), pts, FACEMESH5_TEMPLATE)
    bright = align_chip(np.clip(grace_hopper.astype(int) * 3, 0, 255).astype(np.uint8), pts, FACEMESH5_TEMPLATE)
    limits = QualityThresholds(min_face_px=60)
    assert "too_dark" in measure_quality(det, lm, dark).failures(limits)
    qb = measure_quality(det, lm, bright)
    assert "too_bright" in qb.failures(limits) and "overexposed" in qb.failures(limits)


def test_pose_follows_roll_and_mirror(models: dict[str, Any], grace_hopper: np.ndarray) -> None:
    def pose(image: np.ndarray) -> tuple[float, float, float]:
        det = models["detector"].detect(image)[0]
        return head_pose(models["mesh"].landmarks(image, det).points)

    yaw0, _, roll0 = pose(grace_hopper)
    # PIL rotates counter-clockwise: the eye line then tilts anticlockwise in the image (negative roll).
    tilted = np.asarray(Image.fromarray(grace_hopper).rotate(20, resample=Image.BILINEAR, center=(265, 200)))
    _, _, roll = pose(tilted)
    assert roll - roll0 == pytest.approx(-20, abs=4)
    yaw_m, _, roll_m = pose(np.ascontiguousarray(grace_hopper[:, ::-1]))
    assert yaw_m == pytest.approx(-yaw0, abs=4) and roll_m == pytest.approx(-roll0, abs=3)
