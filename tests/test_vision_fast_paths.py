"""The per-frame fast paths give exactly what the plain computations give, on real photos.

Each fast path (the letterbox by OpenCV's warp, the FaceMesh crop by OpenCV's
warp, the crop written straight into the interpreter's input tensor,
Python-IoU weighted NMS) is checked against a direct, slow computation of
the same thing, or against Pillow's warp where fixed point makes them differ.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.models.litert import load_interpreter
from firmware_py.models.manifest import load_manifest
from firmware_py.vision.detector import INPUT_SIZE, FaceDetector, iou_matrix, weighted_nms
from firmware_py.vision.landmarks import INPUT_SIZE as MESH_SIZE
from firmware_py.vision.landmarks import FaceMesh, _roi_affine, detection_roi


def reference_letterbox(image: np.ndarray) -> np.ndarray:
    """The detector input computed directly: per input pixel, the mean of the 2x2 frame block at its sample point."""
    h, w = image.shape[:2]
    scale = INPUT_SIZE / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.full((INPUT_SIZE, INPUT_SIZE, 3), -1.0, np.float32)
    px, py = (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2
    img = image.astype(np.float64)
    for j in range(nh):
        y = min(max(math.floor((j + 0.5) * h / nh - 1.0), 0), max(h - 2, 0))
        for i in range(nw):
            x = min(max(math.floor((i + 0.5) * w / nw - 1.0), 0), max(w - 2, 0))
            block = img[y : y + (2 if h > 1 else 1), x : x + (2 if w > 1 else 1)].reshape(-1, 3)
            block = np.concatenate([block] * (4 // len(block)))  # a 1-pixel side repeats its pixel
            out[py + j, px + i] = block.sum(0) * (2 / 255 / 4) - 1.0
    return out


def test_letterbox_matches_the_direct_2x2_mean_for_every_frame_shape(detector: FaceDetector, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    # 640x480 (evenly spaced blocks: an affine warp), odd shapes (remap tables), portrait, a sliver;
    # alternating shapes also checks that the black border is redrawn when the shape changes.
    g = np.asarray(Image.fromarray(grace_hopper).resize((640, 480)))
    shapes = [g, grace_hopper, astronaut[:333, :517], g[:, :300], astronaut[:1, :200], g]
    for img in shapes:
        img = np.ascontiguousarray(img)
        x = detector._letterbox(img)[0]
        ref = reference_letterbox(img)
        # The mean rounded to a byte (OpenCV's fixed point rounds a tie of .5 either way): within half a level.
        assert np.allclose(x[0], ref, atol=1 / 255 + 1e-6), img.shape
        byte = (x[0] + 1) * 127.5
        assert np.allclose(byte, np.rint(byte), atol=1e-3)  # on the byte grid
    # A strided view (not C-contiguous) gives the same input as its copy.
    view = g[::-1]
    assert np.array_equal(detector._letterbox(view)[0], detector._letterbox(np.ascontiguousarray(view))[0])


def test_mesh_crop_samples_where_pillows_warp_does(mesh: FaceMesh, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    # The geometry of MediaPipe's crop was fixed with Pillow's warp (pixel centres, rotation, black
    # outside); OpenCV's warp must sample the same points.  Its fixed-point coordinates pick a
    # neighbouring pixel for about 1 in 1,500 nearest samples, and its 1/32 bilinear weights move
    # values by a level or two; a wrong offset or axis would change most pixels by far more.
    rng = np.random.default_rng(3)
    for img in (grace_hopper, astronaut, np.ascontiguousarray(grace_hopper[:, ::-1])):
        h, w = img.shape[:2]
        pil = Image.fromarray(img)
        rois = [(w / 2, h / 2, 300.0, 0.1), (20.0, 30.0, 400.0, -0.4), (w + 500.0, h / 2, 200.0, 0.0), (w / 2, h / 2, 100.0, 0.7)]
        rois += [(rng.uniform(-80, w + 80), rng.uniform(-80, h + 80), rng.uniform(50, 900), rng.uniform(-math.pi, math.pi)) for _ in range(40)]
        for roi in rois:
            nearest = roi[2] >= MESH_SIZE
            method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
            ref = np.asarray(pil.transform((MESH_SIZE, MESH_SIZE), Image.Transform.AFFINE, _roi_affine(roi, MESH_SIZE), method)).astype(int)
            crop = mesh.crop(img, roi)
            assert crop.shape == (192, 192, 3) and crop.dtype == np.uint8
            off = np.abs(crop.astype(int) - ref).max(axis=2)
            if nearest:
                assert np.mean(off > 0) <= 0.005, roi
            else:
                assert np.mean(off > 2) <= 0.02 and off.mean() < 1.5, roi
    # A Pillow image and a frame's array give the same crop.
    roi = (256.0, 300.0, 350.0, 0.2)
    assert np.array_equal(mesh.crop(Image.fromarray(grace_hopper), roi), mesh.crop(grace_hopper, roi))


def test_mesh_input_in_the_tensor_gives_the_copied_inputs_points(
    models_dir: Path, mesh: FaceMesh, detector: FaceDetector, grace_hopper: np.ndarray
) -> None:
    crop = mesh.crop(grace_hopper, detection_roi(detector.detect(grace_hopper)[0]))
    pts, presence = mesh.run_crop(crop)
    # An independent interpreter fed the usual way (set_tensor on a float copy).
    interp = load_interpreter(load_manifest().require("facemesh", models_dir), 1)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], crop[None].astype(np.float32) / np.float32(255))
    interp.invoke()
    outs = {int(np.prod(d["shape"])): d["index"] for d in interp.get_output_details()}
    ref = interp.get_tensor(outs[468 * 3]).reshape(468, 3)
    assert presence > 0.9
    assert np.allclose(pts, ref, atol=1e-4)
    # Twice in a row (the tensor view is released before each invoke) gives the same points.
    again, _ = mesh.run_crop(crop)
    assert np.allclose(again, pts, atol=1e-5)


def reference_weighted_nms(boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray, thr: float):
    order = np.argsort(-scores, kind="stable")
    boxes, scores, kps = boxes[order], scores[order], kps[order]
    ious = iou_matrix(boxes.astype(np.float64), boxes.astype(np.float64))
    left = np.ones(len(boxes), bool)
    ob, os_, ok = [], [], []
    for i in range(len(boxes)):
        if not left[i]:
            continue
        m = left & (ious[i] > thr)
        m[i] = True
        w = scores[m].astype(np.float64)
        ob.append((boxes[m] * w[:, None]).sum(0) / w.sum())
        ok.append((kps[m] * w[:, None, None]).sum(0) / w.sum())
        os_.append(scores[i])
        left &= ~m
    return np.array(ob), np.array(os_), np.array(ok)


def test_weighted_nms_equals_the_matrix_reference_on_random_clusters() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        centres = rng.uniform(0, 128, (rng.integers(1, 4), 2))
        n = rng.integers(1, 15)
        c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 3, (n, 2))
        size = rng.uniform(10, 40, (n, 1))
        boxes = np.concatenate([c - size / 2, c + size / 2], axis=1).astype(np.float32)
        kps = (c[:, None, :] + rng.normal(0, 5, (n, 6, 2))).astype(np.float32)
        scores = rng.uniform(0.5, 1.0, n).astype(np.float32)
        b, s, k = weighted_nms(boxes, scores, kps, 0.3)
        rb, rs, rk = reference_weighted_nms(boxes, scores, kps, 0.3)
        assert len(b) == len(rb)
        assert np.allclose(b, rb, atol=1e-3) and np.allclose(s, rs) and np.allclose(k, rk, atol=1e-3)


def test_a_bad_crop_is_refused_and_the_model_keeps_working(mesh: FaceMesh, grace_hopper: np.ndarray, detector: FaceDetector) -> None:
    crop = mesh.crop(grace_hopper, detection_roi(detector.detect(grace_hopper)[0]))
    with pytest.raises(ValueError) as refused:
        mesh.run_crop(crop[:100])  # wrong shape: numpy refuses to broadcast it into the input
    # The kept traceback still holds run_crop's frame: no view of the input tensor may be left in
    # it, or LiteRT would refuse every later invoke.
    pts, presence = mesh.run_crop(crop)
    assert presence > 0.9 and pts.shape == (468, 3) and refused.traceback
