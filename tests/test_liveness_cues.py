"""Per-frame texture cues and landmark motion cues, on real photos and exact geometry."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from firmware_py.liveness.motion import blink_score, eye_aspect_ratio, homography_residual, nonplanar_motion, planar_motion, similarity_residual
from firmware_py.liveness.texture import (
    FRAME_FEATURE_NAMES,
    cue_group,
    face_crop,
    frame_features,
    lbp_histogram,
    spectrum_features,
    u59_histogram,
)


def dlib_box(image: np.ndarray) -> tuple[float, float, float, float]:
    """The face box from dlib's HOG detector (a test-side reference, not the product's detector)."""
    import dlib

    rects = dlib.get_frontal_face_detector()(image, 1)
    assert rects, "dlib found no face in the fixture photo"
    r = max(rects, key=lambda r: r.width() * r.height())
    return (float(r.left()), float(r.top()), float(r.right()), float(r.bottom()))


def screen_moire(image: np.ndarray, period: float = 3.0) -> np.ndarray:
    """A synthetic phone-screen re-capture: RGB sub-pixel stripes, a lifted black level and a little blur."""
    w = image.shape[1]
    xx = np.arange(w)
    mask = np.stack([0.55 + 0.45 * np.cos(2 * np.pi * (xx / period - ch / 3)) for ch in range(3)], axis=-1)[None, :, :]
    out = np.clip(image.astype(float) * mask * 1.15 + 20, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(0.7)))


def test_face_colour_enters_relative_to_its_context_so_a_room_colour_cast_cancels(astronaut: np.ndarray) -> None:
    """A colour cast / brightness offset shifts face and background alike: the face-minus-context cues barely move."""
    box = dlib_box(astronaut)
    img = astronaut.astype(np.int16)
    cast = np.clip(img + np.array([25, 10, -8]), 0, 255).astype(np.uint8)  # warmer, brighter light
    a, b = frame_features(astronaut, box), frame_features(cast, box)
    # Luma and chroma are linear in RGB: the offset cancels up to rounding and clipping; saturation (a ratio) in part.
    for name, left in (("rel_cb_mean", 0.1), ("rel_cr_mean", 0.1), ("rel_luma_mean", 0.1), ("rel_sat_mean", 0.5)):
        i = FRAME_FEATURE_NAMES.index(name)
        j = FRAME_FEATURE_NAMES.index("ctx_" + name[4:])  # the context's own, absolute value moves
        assert abs(b[i] - a[i]) < left * abs(b[j] - a[j]), name


def test_face_crop_is_square_sized_and_replicates_edges(astronaut: np.ndarray) -> None:
    crop = face_crop(astronaut, (175, 76, 265, 166), 64, 1.0)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    # The centre of the crop is the centre of the box.
    big = face_crop(astronaut, (175, 76, 265, 166), 90, 1.0)
    assert np.abs(big[45, 45].astype(int) - astronaut[121, 220].astype(int)).max() <= 40
    # A box hanging over the frame's corner still gives a full crop; a box outside gives black.
    assert face_crop(astronaut, (-50, -50, 40, 40), 64).shape == (64, 64, 3)
    assert face_crop(astronaut, (900, 900, 1000, 1000), 64).max() == 0


def test_frame_features_are_finite_and_named(grace_hopper: np.ndarray) -> None:
    f = frame_features(grace_hopper, dlib_box(grace_hopper))
    assert f.shape == (len(FRAME_FEATURE_NAMES),)
    assert np.isfinite(f).all()
    assert {cue_group(n) for n in FRAME_FEATURE_NAMES} == {
        "colour",
        "specular",
        "frequency",
        "micro_texture",
        "colour_texture",
        "context",
    }


def test_lbp_histograms_sum_to_one_and_see_texture() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((32, 32), 100.0)
    noise = rng.normal(100, 30, (32, 32))
    for h in (lbp_histogram(flat), u59_histogram(flat), lbp_histogram(noise), u59_histogram(noise)):
        assert h.sum() == pytest.approx(1.0)
    # A flat plane is all one code (every neighbour >= centre); noise spreads over many bins.
    assert lbp_histogram(flat).max() == pytest.approx(1.0)
    assert (u59_histogram(noise) > 0).sum() > 30


def test_spectral_peak_rises_under_a_periodic_pattern() -> None:
    rng = np.random.default_rng(1)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(2)), float)
    xx = np.arange(64)
    striped = smooth + 25 * np.cos(2 * np.pi * xx / 2.8)[None, :]
    assert spectrum_features(striped)[2] > spectrum_features(smooth)[2] + 1.0


def test_screen_moire_raises_the_face_spectral_peak_on_a_real_photo(astronaut: np.ndarray) -> None:
    """What the synthetic attack shows: the moire cue reacts to a screen-like stripe pattern on a real face.

    What it does not show: that a real phone screen seen by a real camera
    makes the same pattern (that needs real re-captures: the data tests).
    """
    box = dlib_box(astronaut)
    peak = FRAME_FEATURE_NAMES.index("hf_peak")
    live = frame_features(astronaut, box)[peak]
    attack = frame_features(screen_moire(astronaut), box)[peak]
    assert live < 4.8  # inside the range of live faces in the dev data
    assert attack > live + 2.0


def _face_points(yaw_deg: float = 0.0, mouth_open: float = 0.0, eye_open: float = 1.0) -> np.ndarray:
    """468 points of a 3-D face-like surface (an ellipsoid cap), posed and projected, in pixels.

    The eye landmarks (FaceMesh indices) sit on lids whose gap scales with ``eye_open``.
    """
    from firmware_py.liveness.motion import LEFT_EYE, RIGHT_EYE

    rng = np.random.default_rng(7)
    u = rng.uniform(-1, 1, (468, 2))
    pts = np.c_[u[:, 0] * 60, u[:, 1] * 80, 40 * np.sqrt(np.clip(1 - (u**2).sum(axis=1) / 2, 0, 1))]
    # Mouth region moves with mouth_open (non-rigid).
    mouth = pts[:, 1] > 40
    pts[mouth, 1] += mouth_open * (pts[mouth, 1] - 40)
    for (o, i, u1, l1, u2, l2), cx in ((RIGHT_EYE, -25.0), (LEFT_EYE, 25.0)):
        gap = 9.0 * eye_open
        pts[o] = [cx - 15, -20, 35]
        pts[i] = [cx + 15, -20, 35]
        pts[u1], pts[l1] = [cx - 5, -20 - gap / 2, 36], [cx - 5, -20 + gap / 2, 36]
        pts[u2], pts[l2] = [cx + 5, -20 - gap / 2, 36], [cx + 5, -20 + gap / 2, 36]
    t = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    p = pts @ rot.T
    f = 500.0
    z = p[:, 2] + 400
    return np.c_[320 + f * p[:, 0] / z, 240 + f * p[:, 1] / z, p[:, 2]]


def test_homography_residual_is_zero_for_a_plane_and_not_for_a_turning_head() -> None:
    a = _face_points()
    # Any homography of the projected points (a held photo moved, tilted, bent a little in perspective).
    h = np.array([[1.05, 0.08, 12.0], [-0.06, 0.97, -7.0], [2e-4, -1e-4, 1.0]])
    ph = np.c_[a[:, :2], np.ones(len(a))] @ h.T
    planar = np.c_[ph[:, :2] / ph[:, 2:3], a[:, 2]]
    assert homography_residual(a, planar) < 1e-6
    turned = _face_points(yaw_deg=15)
    talking = _face_points(mouth_open=0.3)
    assert nonplanar_motion([a, planar]) < 1e-6
    assert nonplanar_motion([a, turned]) > 0.02
    assert nonplanar_motion([a, talking]) > 0.02
    assert nonplanar_motion([a]) == 0.0


def tilted(points: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The projected points of a flat picture of ``points``, moved by the homography ``h``."""
    ph = np.c_[points[:, :2], np.ones(len(points))] @ h.T
    return np.c_[ph[:, :2] / ph[:, 2:3], points[:, 2]]


TILT = np.array([[1.05, 0.08, 12.0], [-0.06, 0.97, -7.0], [6e-4, -3e-4, 1.0]])  # a held photo tilted towards the camera


def test_planar_motion_tells_a_tilted_picture_from_a_turning_head_and_ignores_a_walk_up() -> None:
    a = _face_points()
    zoom = np.c_[a[:, :2] * 1.3 + [15.0, -9.0], a[:, 2]]  # walking straight up: a similarity
    assert similarity_residual(a, zoom) < 1e-6
    assert planar_motion([a, zoom])[0] < 1e-6  # no distortion: no evidence, never a veto
    d_tilt, ratio_tilt = planar_motion([a, tilted(a, TILT)])
    assert d_tilt >= 0.06 and ratio_tilt >= 2.2  # a flat picture tilting: the shipped veto fires
    d_turn, ratio_turn = planar_motion([a, _face_points(yaw_deg=30)])
    assert d_turn >= 0.06 and ratio_turn < 2.2  # a head turning as far: no veto
    assert planar_motion([a]) == (0.0, 0.0)


def test_eye_aspect_ratio_and_blink() -> None:
    open_ = eye_aspect_ratio(_face_points(eye_open=1.0))
    closed = eye_aspect_ratio(_face_points(eye_open=0.1))
    assert open_ == pytest.approx(0.3, abs=0.01)
    assert closed < 0.05
    ears = [open_] * 8 + [closed] + [open_] * 3
    assert blink_score(ears) > 0.8
    assert blink_score([open_] * 12) == pytest.approx(0.0, abs=1e-4)
    assert blink_score([open_, closed]) == 0.0  # too few frames to tell
