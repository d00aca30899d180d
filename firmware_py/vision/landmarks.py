"""Face landmarks: MediaPipe's FaceMesh (468 points) on the face crop of a detection.

:class:`FaceMesh` crops a rotated square around a :class:`FaceDetection`
the way MediaPipe's ``face_detection_front_detection_to_roi`` graph does
(centre of the box, side = 1.5 x the box's longer side, rotated so the eye
keypoints lie level), resamples it to 192x192 with OpenCV's affine warp,
runs the model and maps the 468 points back into frame pixels.

The result is a :class:`FaceLandmarks`: ``points`` ``(468, 3)`` where x, y are
frame pixels and z is depth in the same pixel scale (smaller = nearer the
camera, relative to the face's centre), and ``presence`` in [0, 1], the
model's confidence that a face fills the crop.

Named points for other packages (indices into ``points``; MediaPipe's canonical
mesh; "right"/"left" are the *subject's*):

- :data:`RIGHT_EYE_EAR` / :data:`LEFT_EYE_EAR`: the six eye-contour points
  p1..p6 of Soukupova & Cech's eye aspect ratio,
  ``EAR = (|p2-p6| + |p3-p5|) / (2 |p1-p4|)``; see :func:`eye_aspect_ratio`.
- :data:`RIGHT_EYE_CONTOUR` / :data:`LEFT_EYE_CONTOUR`: the full 16-point
  eyelid contours.
- :data:`DLIB5`: the FaceMesh points nearest dlib's 5-point shape
  (subject's left eye outer and inner corner, right eye outer and inner
  corner, base of the nose), in dlib's order; :meth:`FaceLandmarks.dlib5`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from firmware_py.models.litert import load_interpreter
from firmware_py.vision.align import Resampler
from firmware_py.vision.detector import LEFT_EYE, RIGHT_EYE, FaceDetection
from firmware_py.vision.opencv import cv2, warp_source

INPUT_SIZE = 192
NUM_POINTS = 468

# Eye-aspect-ratio points p1..p6 (outer corner, upper lid x2, inner corner, lower lid x2).
RIGHT_EYE_EAR = (33, 160, 158, 133, 153, 144)
LEFT_EYE_EAR = (263, 387, 385, 362, 380, 373)
# Eyelid contours (MediaPipe's FACEMESH_RIGHT_EYE / LEFT_EYE rings).
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
# dlib's 5-point order: left eye outer, left eye inner, right eye outer, right eye inner, nose base.
DLIB5 = (263, 362, 33, 133, 2)
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10
RIGHT_CHEEK = 234
LEFT_CHEEK = 454


def eye_aspect_ratio(points: np.ndarray, eye: tuple[int, ...]) -> float:
    """Soukupova & Cech's eye aspect ratio from six eye points (x, y used).

    About 0.25-0.35 for an open eye, falling towards 0.05-0.1 when closed.
    """
    p = points[list(eye), :2]
    vertical = np.hypot(*(p[1] - p[5])) + np.hypot(*(p[2] - p[4]))
    horizontal = np.hypot(*(p[0] - p[3]))
    return float(vertical / (2 * horizontal)) if horizontal > 0 else 0.0


@dataclass(frozen=True)
class FaceLandmarks:
    """468 FaceMesh points in frame pixels and the model's face-presence confidence.

    ``points`` is ``(468, 3)`` float32: x, y in pixels of the frame, z depth
    in the same scale.  ``roi`` is the crop the model saw: (centre x, centre
    y, side, rotation in radians).
    """

    points: np.ndarray
    presence: float
    roi: tuple[float, float, float, float]

    def dlib5(self) -> np.ndarray:
        """``(5, 2)`` points in dlib's 5-point order (see :data:`DLIB5`)."""
        return self.points[list(DLIB5), :2]

    def eye_centres(self) -> np.ndarray:
        """``(2, 2)``: the subject's right then left eye centre (mean of each eyelid contour)."""
        return np.stack([self.points[list(RIGHT_EYE_CONTOUR), :2].mean(0), self.points[list(LEFT_EYE_CONTOUR), :2].mean(0)])

    def eye_aspect_ratios(self) -> tuple[float, float]:
        """Eye aspect ratio of the subject's right and left eye."""
        return eye_aspect_ratio(self.points, RIGHT_EYE_EAR), eye_aspect_ratio(self.points, LEFT_EYE_EAR)

    @property
    def interocular(self) -> float:
        """Distance between the eye centres, in pixels."""
        c = self.eye_centres()
        return float(np.hypot(*(c[1] - c[0])))


def detection_roi(det: FaceDetection, scale: float = 1.5) -> tuple[float, float, float, float]:
    """MediaPipe's face ROI for the landmark model: (cx, cy, side, rotation).

    ``DetectionsToRectsCalculator`` (rotation from the right-eye -> left-eye
    keypoints, target angle 0) then ``RectTransformationCalculator``
    (``scale 1.5``, ``square_long``), in pixels.
    """
    (x0, y0), (x1, y1) = det.keypoints[RIGHT_EYE : LEFT_EYE + 1].tolist()  # rows 0 and 1: a slice, no gather
    rotation = -math.atan2(-(y1 - y0), x1 - x0)
    bx0, by0, bx1, by1 = det.box
    side = max(bx1 - bx0, by1 - by0) * scale
    return (bx0 + bx1) / 2, (by0 + by1) / 2, side, rotation


def _roi_affine(roi: tuple[float, float, float, float], size: int) -> tuple[float, float, float, float, float, float]:
    # (a, b, c, d, e, f): frame x = a u + b v + c, y = d u + e v + f; Python floats (no per-frame arrays).
    cx, cy, side, rot = roi
    k = side / size
    c, s = math.cos(rot) * k, math.sin(rot) * k
    h = size / 2
    return (c, -s, cx - (c - s) * h, s, c, cy - (s + c) * h)


class FaceMesh:
    """MediaPipe FaceMesh landmark model.

    :param model_path: the ``facemesh`` TFLite file.
    :param threads: LiteRT interpreter threads.
    :param roi_scale: crop side as a multiple of the detection box's longer side.

    After each call :attr:`last_invoke_ms` holds the model's own time.
    """

    def __init__(self, model_path: Path | str, *, threads: int = 1, roi_scale: float = 1.5) -> None:
        self.path = Path(model_path)
        self.roi_scale = float(roi_scale)
        self._interp = load_interpreter(self.path, threads)
        (inp,) = self._interp.get_input_details()
        if tuple(inp["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"{self.path}: not a 192x192 FaceMesh model (input {inp['shape']})")
        outs = self._interp.get_output_details()
        by_size = {int(np.prod(d["shape"])): d["index"] for d in outs}
        if set(by_size) != {NUM_POINTS * 3, 1}:
            raise ValueError(f"{self.path}: expected outputs of 1404 landmarks and 1 presence value, got {[list(d['shape']) for d in outs]}")
        self._in_index = inp["index"]
        self._pts_index = by_size[NUM_POINTS * 3]
        self._flag_index = by_size[1]
        self.last_invoke_ms = 0.0
        # Work buffers, one frame's use each: the warp of RGBX pixels, and the crop the model is fed.
        self._rgbx_crop = np.empty((INPUT_SIZE, INPUT_SIZE, 4), np.uint8)
        self._crop = np.empty((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)

    def crop(self, image: np.ndarray | Image.Image | Resampler, roi: tuple[float, float, float, float], out: np.ndarray | None = None) -> np.ndarray:
        """The 192x192 uint8 RGB crop the model sees for ``roi`` (black outside the frame).

        Bilinear when the face is enlarged into the crop; nearest-pixel when
        it is shrunk (8x faster than bilinear in Pillow; it moved the 468
        points by 0.1-0.2% of the eye distance on the clips: MediaPipe's
        unfiltered bilinear is near point sampling there).  OpenCV's warp
        reads only the pixels the crop needs, from an RGB frame or the RGBX
        pixels of a camera frame (:attr:`Frame.pixels
        <firmware_py.capture.frame.Frame.pixels>`, or its RGB view) in place;
        it samples where Pillow's warp does (the crop pixel's centre, in
        fixed point: 1 pixel in about 1,500 takes its neighbour's value).
        ``out``: a C-contiguous (192, 192, 3) uint8 array to write the crop
        into (and return) instead of a new one.
        """
        if isinstance(image, Resampler):
            image = image.array
        elif isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        src = warp_source(image)
        a, b, c, d, e, f = _roi_affine(roi, INPUT_SIZE)
        # Pillow's affine maps crop pixel centres (u + 0.5) into a frame whose pixel i spans [i, i + 1);
        # OpenCV's maps crop indices u into a frame whose pixel i is centred on i.
        m = np.array(((a, b, (a + b) / 2 + c - 0.5), (d, e, (d + e) / 2 + f - 0.5)), np.float64)
        interp = cv2.INTER_NEAREST if roi[2] >= INPUT_SIZE else cv2.INTER_LINEAR
        size, flags = (INPUT_SIZE, INPUT_SIZE), interp | cv2.WARP_INVERSE_MAP
        if out is None:
            out = np.empty((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        if src.shape[2] == 3:
            return cv2.warpAffine(src, m, size, dst=out, flags=flags, borderMode=cv2.BORDER_CONSTANT)
        cv2.warpAffine(src, m, size, dst=self._rgbx_crop, flags=flags, borderMode=cv2.BORDER_CONSTANT)
        return cv2.cvtColor(self._rgbx_crop, cv2.COLOR_RGBA2RGB, dst=out)

    def run_crop(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        """Raw model output for one 192x192 crop: points ``(468, 3)`` in crop pixels and presence."""
        # Scaled straight into the interpreter's input tensor (no float copy of the crop to hand over);
        # the view is released before invoke, as LiteRT requires.
        inp = self._interp.tensor(self._in_index)()
        try:
            np.multiply(crop, np.float32(1 / 255), out=inp[0])
        finally:
            del inp  # even on a bad crop: a live view would block every later invoke
        t = time.perf_counter()
        self._interp.invoke()
        self.last_invoke_ms = (time.perf_counter() - t) * 1000
        pts = self._interp.get_tensor(self._pts_index).reshape(NUM_POINTS, 3)
        logit = float(self._interp.get_tensor(self._flag_index).reshape(-1)[0])
        presence = 1 / (1 + math.exp(-max(-100.0, min(100.0, logit))))
        return pts, presence

    def landmarks(self, image: np.ndarray | Image.Image | Resampler, detection: FaceDetection) -> FaceLandmarks:
        """468 landmarks of the face found by ``detection`` in ``image`` (RGB or RGBX uint8, or a PIL image of it)."""
        roi = detection_roi(detection, self.roi_scale)
        return self.landmarks_in_roi(image, roi)

    def landmarks_in_roi(self, image: np.ndarray | Image.Image | Resampler, roi: tuple[float, float, float, float]) -> FaceLandmarks:
        """468 landmarks for an explicit ROI (cx, cy, side, rotation)."""
        pts, presence = self.run_crop(self.crop(image, roi, self._crop))
        # Crop pixels -> frame pixels (x, y) and depth scaled alike: one 3x3 product and a shift.
        a, b, c, d, e, f = _roi_affine(roi, INPUT_SIZE)
        m = np.array((a, d, 0.0, b, e, 0.0, 0.0, 0.0, roi[2] / INPUT_SIZE, c, f, 0.0), np.float32).reshape(4, 3)
        out = pts @ m[:3]
        out += m[3]
        return FaceLandmarks(points=out, presence=presence, roi=roi)
