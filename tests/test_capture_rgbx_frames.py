"""Frames as 4-byte RGBX pixels: every consumer sees the same pixels as from a plain RGB array.

Cameras and replays deliver R, G, B, X (picamera2's XBGR8888, PyAV's rgba);
the vision code reads those pixels in place (Pillow maps them without a
copy).  Each fast path is checked against the plain RGB path on real photos:
the detector's letterbox, the FaceMesh crop, the whole analyzer (boxes,
keypoints, 468 points, chips), liveness's per-frame features.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from firmware_py.capture.frame import ZERO_COPY, Frame, pil_region, rgbx_of, rgbx_pil, to_rgbx
from firmware_py.config import load
from firmware_py.liveness.texture import frame_features
from firmware_py.pipeline.build import build_analyzer
from firmware_py.vision.detector import FaceDetector
from firmware_py.vision.landmarks import FaceMesh


def test_rgbx_pil_shares_the_pixels_and_reads_them_as_rgb(grace_hopper: np.ndarray) -> None:
    px = to_rgbx(grace_hopper).copy()  # writable (Pillow's array export is read-only)
    assert px.shape == (*grace_hopper.shape[:2], 4) and (px[:, :, 3] == 255).all()
    im = rgbx_pil(px)
    assert im.mode == "RGB" and im.size == (grace_hopper.shape[1], grace_hopper.shape[0])
    assert np.array_equal(np.asarray(im), grace_hopper)
    assert ZERO_COPY  # this Pillow maps the buffer: a change to the array shows in the image
    px[5, 7, :3] = (1, 2, 3)
    assert im.getpixel((7, 5)) == (1, 2, 3)


def test_frame_from_rgbx_is_an_rgb_view_and_refuses_other_layouts(astronaut: np.ndarray) -> None:
    px = to_rgbx(astronaut)
    f = Frame.from_rgbx(px, 1.5, 3, "cam")
    assert f.image.shape == astronaut.shape and np.shares_memory(f.image, px) and np.array_equal(f.image, astronaut)
    assert f.pixels is f.rgbx and (f.width, f.height) == (astronaut.shape[1], astronaut.shape[0])
    assert np.array_equal(np.asarray(f.pil()), astronaut)
    plain = Frame(astronaut, 0.0, 0, "photo")
    assert plain.rgbx is None and plain.pixels is astronaut and np.array_equal(np.asarray(plain.pil()), astronaut)
    with pytest.raises(ValueError, match="RGBX"):
        Frame.from_rgbx(astronaut, 0.0, 0, "x")  # 3 channels
    with pytest.raises(ValueError, match="RGBX"):
        rgbx_pil(px[:, ::2])  # not C-contiguous
    with pytest.raises(ValueError, match="RGB uint8"):
        to_rgbx(px)


def test_letterbox_of_rgbx_equals_rgb(detector: FaceDetector, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    g = np.asarray(Image.fromarray(grace_hopper).resize((640, 480)))
    hd = np.asarray(Image.fromarray(astronaut).resize((1280, 720)))
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    white = np.full((480, 640, 3), 255, np.uint8)  # the largest block sums
    for img in (g, grace_hopper, np.ascontiguousarray(astronaut[:333, :517]), g, astronaut, hd, noise, white):
        rgb = detector._letterbox(img)[0].copy()
        assert np.array_equal(detector._letterbox(to_rgbx(img))[0], rgb), img.shape
    # Camera modes take the affine warp (evenly spaced blocks); odd photo sizes the remap tables.
    assert detector._plan(480, 640, 4).affine is not None and detector._plan(720, 1280, 4).affine is not None
    assert detector._plan(333, 517, 4).affine is None and detector._plan(333, 517, 4).maps is not None


def test_mesh_crop_of_rgbx_equals_rgb(mesh: FaceMesh, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    for img in (grace_hopper, astronaut):
        h, w = img.shape[:2]
        px = to_rgbx(img)
        rois = [(w / 2, h / 2, 300.0, 0.1), (20.0, 30.0, 400.0, -0.4), (w + 500.0, h / 2, 200.0, 0.0), (w / 2, h / 2, 100.0, 0.7)]
        rois += [(rng.uniform(-80, w + 80), rng.uniform(-80, h + 80), rng.uniform(50, 900), rng.uniform(-math.pi, math.pi)) for _ in range(30)]
        for roi in rois:
            assert np.array_equal(mesh.crop(px, roi), mesh.crop(img, roi)), roi


def test_analyzer_gives_the_same_faces_from_rgbx_frames(grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    cfg = load(None)
    a_rgb, a_rgbx = build_analyzer(cfg), build_analyzer(cfg)
    g = np.asarray(Image.fromarray(grace_hopper).resize((640, 480)))
    faces = 0
    for i, img in enumerate((g, grace_hopper, astronaut, g)):
        r1 = a_rgb.process(Frame(img, i * 0.1, i, "rgb"))
        r2 = a_rgbx.process(Frame.from_rgbx(to_rgbx(img), i * 0.1, i, "rgbx"))
        assert len(r1.observations) == len(r2.observations) >= 1
        for o1, o2 in zip(r1.observations, r2.observations, strict=True):
            assert o1.detection.box == o2.detection.box and np.array_equal(o1.detection.keypoints, o2.detection.keypoints)
            assert (o1.landmarks is None) == (o2.landmarks is None)
            if o1.landmarks is not None:
                assert np.array_equal(o1.landmarks.points, o2.landmarks.points)
            if o1.primary:
                assert np.array_equal(o1.chips, o2.chips) and o1.quality == o2.quality
                faces += 1
    assert faces == 4


def test_liveness_features_of_an_rgbx_frame_equal_rgb(astronaut: np.ndarray) -> None:
    f = Frame.from_rgbx(to_rgbx(astronaut), 0.0, 0, "cam")
    h, w = astronaut.shape[:2]
    # Inside the frame, across each edge and corner, and wholly outside.
    boxes = [(150.0, 40.0, 330.0, 250.0), (-60.0, -30.0, 120.0, 160.0), (w - 90.0, h - 80.0, w + 70.0, h + 60.0), (w + 50.0, 10.0, w + 200.0, 90.0)]
    for box in boxes:
        assert np.array_equal(frame_features(f.image, box), frame_features(astronaut, box)), box


def test_rgbx_is_found_behind_a_frames_rgb_view(grace_hopper: np.ndarray) -> None:
    px = to_rgbx(grace_hopper)
    flat = np.frombuffer(bytearray(px.tobytes()), np.uint8)  # owned by a flat buffer, as PyAV's arrays are
    view = flat.reshape(px.shape)[:, :, :3]
    found = rgbx_of(view)
    assert found is not None and found.shape == px.shape and np.shares_memory(found, flat) and np.array_equal(found, px)
    assert rgbx_of(px) is px and rgbx_of(grace_hopper) is None  # 4-byte pixels themselves; a plain RGB array has none
    assert rgbx_of(view[1:]) is not None and rgbx_of(view[:, 1:]) is None and rgbx_of(view[:, ::2]) is None  # whole rows only
    img, origin = pil_region(view, (10, 20, 50, 60))
    assert origin == (0, 0) and img.size == (px.shape[1], px.shape[0])  # the whole frame, mapped
    img, origin = pil_region(grace_hopper, (10, 20, 50, 60))
    assert origin == (10, 20) and np.array_equal(np.asarray(img), grace_hopper[20:60, 10:50])  # a region copy
