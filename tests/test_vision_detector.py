"""BlazeFace detection on real photos: boxes, keypoint order, nearest first, minimum size, NMS."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from firmware_py.vision.detector import (
    LEFT_EYE,
    MOUTH,
    NOSE_TIP,
    RIGHT_EYE,
    FaceDetector,
    iou_matrix,
    ssd_anchors,
    weighted_nms,
)


def paste(canvas: Image.Image, photo: np.ndarray, width: int, at: tuple[int, int]) -> None:
    im = Image.fromarray(photo)
    canvas.paste(im.resize((width, round(im.height * width / im.width)), Image.BILINEAR), at)


def mosaic(grace: np.ndarray, astronaut: np.ndarray) -> np.ndarray:
    """A 640x480 scene: Grace Hopper near (face ~165 px), the astronaut further away (face ~100 px)."""
    canvas = Image.new("RGB", (640, 480), (96, 110, 120))
    paste(canvas, astronaut, 540, (300, 120))
    paste(canvas, grace, 420, (0, 0))
    return np.asarray(canvas)


def test_anchor_layout_matches_mediapipe_short_range() -> None:
    a = ssd_anchors()
    assert a.shape == (896, 2)
    # 16x16 cells x 2 anchors, then 8x8 cells x 6 anchors, centres at cell middles.
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[1], a[0])
    assert np.allclose(a[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(a[512], [0.5 / 8, 0.5 / 8]) and np.allclose(a[517], a[512])
    assert np.allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_one_face_in_each_portrait_with_plausible_keypoints(detector: FaceDetector, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    for image, (lo, hi) in ((grace_hopper, (150, 260)), (astronaut, (70, 130))):
        faces = detector.detect(image)
        assert len(faces) == 1
        f = faces[0]
        x0, y0, x1, y1 = f.box
        assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
        assert lo <= f.width <= hi, f.box
        assert f.score > 0.8
        kp = f.keypoints
        assert kp.shape == (6, 2)
        # MediaPipe's order: the subject's right eye is on the image's left.
        assert kp[RIGHT_EYE, 0] < kp[NOSE_TIP, 0] < kp[LEFT_EYE, 0]
        assert max(kp[RIGHT_EYE, 1], kp[LEFT_EYE, 1]) < kp[NOSE_TIP, 1] < kp[MOUTH, 1]
        assert all(x0 - 0.1 * f.width <= x <= x1 + 0.1 * f.width and y0 <= y <= y1 for x, y in kp)
        assert detector.last_invoke_ms > 0 and detector.last_ms >= detector.last_invoke_ms


def test_grace_hopper_eyes_where_they_are(detector: FaceDetector, grace_hopper: np.ndarray) -> None:
    # Eye centres of matplotlib's grace_hopper.jpg, read off the photo (x, y) +- 10 px.
    kp = detector.detect(grace_hopper)[0].keypoints
    assert np.hypot(*(kp[RIGHT_EYE] - (222, 193))) < 10
    assert np.hypot(*(kp[LEFT_EYE] - (309, 188))) < 10


def test_several_faces_nearest_first_and_small_face_rejected(detector: FaceDetector, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    scene = mosaic(grace_hopper, astronaut)
    faces = detector.detect(scene)
    assert len(faces) == 2
    assert faces[0].width > 1.3 * faces[1].width
    assert faces[0].centre[0] < 300 < faces[1].centre[0]  # Grace (left, near) first, the astronaut second
    # A face narrower than min_face_px (frame pixels) is dropped; the nearer one stays.
    strict = FaceDetector(detector.path, min_face_px=(faces[0].width + faces[1].width) / 2)
    kept = strict.detect(scene)
    assert len(kept) == 1 and kept[0].centre[0] < 300
    # max_faces keeps the nearest.
    assert [f.box for f in FaceDetector(detector.path, max_faces=1).detect(scene)] == [faces[0].box]


def test_detection_limit_in_a_640x480_frame(detector: FaceDetector, grace_hopper: np.ndarray) -> None:
    # Short-range BlazeFace sees faces from about 1/8 of the frame width up; a 30 px face is not found.
    for face_px, found in ((30, False), (120, True)):
        canvas = Image.new("RGB", (640, 480), (96, 110, 120))
        paste(canvas, grace_hopper, round(face_px * 512 / 200), (200, 100))
        faces = FaceDetector(detector.path, min_face_px=1).detect(np.asarray(canvas))
        assert bool(faces) is found, face_px


def test_letterbox_maps_back_to_frame_pixels(detector: FaceDetector, grace_hopper: np.ndarray) -> None:
    # The same face on a wider canvas, shifted: the box moves with it.
    canvas = np.full((600, 1100, 3), 90, np.uint8)
    canvas[:, 300:812] = grace_hopper
    a = detector.detect(grace_hopper)[0]
    b = detector.detect(canvas)[0]
    tol = 0.1 * a.width  # the face is smaller in the model input: boxes differ a little
    assert np.allclose(np.array(b.box) - [300, 0, 300, 0], a.box, atol=tol)
    assert np.allclose(b.keypoints[:4] - [300, 0], a.keypoints[:4], atol=tol)


def test_no_face_in_a_blank_or_noise_frame(detector: FaceDetector) -> None:
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    rng = np.random.default_rng(1)
    assert detector.detect(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) == []


def test_bad_image_refused(detector: FaceDetector) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((480, 640), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((480, 640, 3), np.float32))
    with pytest.raises(ValueError, match="RGBX pixels"):
        detector.detect(np.zeros((480, 640, 5), np.uint8))


def test_weighted_nms_merges_duplicates_and_keeps_separate_faces() -> None:
    boxes = np.array([[10, 10, 50, 50], [12, 10, 52, 50], [11, 12, 51, 52], [200, 200, 260, 260]], np.float32)
    scores = np.array([0.9, 0.6, 0.3, 0.8], np.float32)
    kps = np.stack([np.full((6, 2), v, np.float32) for v in (1.0, 2.0, 3.0, 9.0)])
    b, s, k = weighted_nms(boxes, scores, kps, 0.3)
    assert len(b) == 2
    assert s.tolist() == pytest.approx([0.9, 0.8])  # the best score survives
    w = np.array([0.9, 0.6, 0.3]) / 1.8
    assert b[0] == pytest.approx((boxes[:3] * w[:, None]).sum(0))  # score-weighted mean box
    assert k[0, 0, 0] == pytest.approx((w * [1, 2, 3]).sum())
    assert b[1] == pytest.approx(boxes[3])
    # Low overlap (IoU 0.1) is not merged.
    far = np.array([[0, 0, 10, 10], [8, 0, 18, 10]], np.float32)
    assert iou_matrix(far, far)[0, 1] == pytest.approx(2 / 18)
    assert len(weighted_nms(far, np.array([0.9, 0.8]), np.zeros((2, 6, 2)), 0.3)[0]) == 2


def test_model_duplicates_are_merged_on_a_real_face(detector: FaceDetector, grace_hopper: np.ndarray) -> None:
    # Several anchors fire on one face; without merging they would be several faces.
    raw = FaceDetector(detector.path, nms_iou=0.999)
    assert len(raw.detect(grace_hopper)) > 1
    assert len(detector.detect(grace_hopper)) == 1
