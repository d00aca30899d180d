"""Face quality: is this face good enough to enrol, or to tell the person to come closer?

:func:`measure_quality` measures one face from its detection, its FaceMesh
landmarks and its aligned chip; :meth:`FaceQuality.failures` compares the
measurement with :class:`QualityThresholds` (the ``[vision.quality]`` config
section) and names every problem with a stable reason code, in the order a
person should fix them:

``face_too_small``   box narrower than ``min_face_px`` or eyes closer than ``min_interocular_px``
``pose_yaw`` / ``pose_pitch`` / ``pose_roll``   head turned, nodded or tilted past the limit
``too_dark`` / ``too_bright``   mean luminance of the face outside the limits
``overexposed``      too many clipped (near-black or near-white) face pixels
``too_blurred``      sharpness below ``min_sharpness``

Measures (all on the face itself, so they do not depend on the frame size):

- ``face_px``: detection box width; ``interocular_px``: eye-centre distance.
- ``sharpness``: standard deviation of the Laplacian of the chip's grey face
  region divided by that region's own contrast (standard deviation).  The
  chip has a fixed geometry, so this is normalised for face size, and the
  division makes it independent of exposure and contrast.  A sharp face in
  focus measures about 0.5-1.2; a face blurred by motion or focus, or a small
  face enlarged into the chip, falls below 0.3.
- ``yaw``/``pitch``/``roll`` in degrees from the 3-D FaceMesh points: the
  face's left-right axis (cheek to cheek) and up-down axis (forehead to
  chin) give a rotation; 0/0/0 faces the camera upright.  ``yaw`` > 0: the
  face turns towards the image's left; ``pitch`` > 0: chin down;
  ``roll`` > 0: the eye line tilts clockwise in the image.  Pitch is offset
  so that lfw-dev's median face reads 0 (the forehead-chin line of the mesh
  is not vertical on a level face).
- ``luminance``: mean grey level (0-255) of the face region;
  ``clipped``: the share of its pixels at <= 5 or >= 250.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from firmware_py.vision.align import CHIP_PADDING, CHIP_SIZE
from firmware_py.vision.detector import FaceDetection
from firmware_py.vision.landmarks import CHIN, FOREHEAD, LEFT_CHEEK, RIGHT_CHEEK, FaceLandmarks

# Median pitch of lfw-dev faces with the raw mesh axes (kaoclock eval, 1,000 faces): read as level.
PITCH_OFFSET_DEG = 5.0


@dataclass(frozen=True)
class QualityThresholds:
    """Limits a face must meet (the ``[vision.quality]`` config section holds the reader's)."""

    min_face_px: float = 80.0
    min_interocular_px: float = 28.0
    max_yaw_deg: float = 25.0
    max_pitch_deg: float = 25.0
    max_roll_deg: float = 20.0
    min_luminance: float = 50.0
    max_luminance: float = 210.0
    max_clipped: float = 0.15
    min_sharpness: float = 0.30


@dataclass(frozen=True)
class FaceQuality:
    """Quality measures of one face (see the module docstring for units)."""

    face_px: float
    interocular_px: float
    sharpness: float
    yaw: float
    pitch: float
    roll: float
    luminance: float
    clipped: float

    def failures(self, limits: QualityThresholds) -> list[str]:
        """Reason codes of every limit this face misses; empty when it passes."""
        out: list[str] = []
        if self.face_px < limits.min_face_px or self.interocular_px < limits.min_interocular_px:
            out.append("face_too_small")
        if abs(self.yaw) > limits.max_yaw_deg:
            out.append("pose_yaw")
        if abs(self.pitch) > limits.max_pitch_deg:
            out.append("pose_pitch")
        if abs(self.roll) > limits.max_roll_deg:
            out.append("pose_roll")
        if self.luminance < limits.min_luminance:
            out.append("too_dark")
        elif self.luminance > limits.max_luminance:
            out.append("too_bright")
        if self.clipped > limits.max_clipped:
            out.append("overexposed")
        if self.sharpness < limits.min_sharpness:
            out.append("too_blurred")
        return out

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in self.__dict__.items()}


def head_pose(points: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from FaceMesh points ``(468, 3)`` (x, y, z in one pixel scale)."""
    p = np.asarray(points, np.float64)
    x = p[LEFT_CHEEK] - p[RIGHT_CHEEK]  # subject's right -> left: image left -> right on a frontal face
    y = p[CHIN] - p[FOREHEAD]
    nx = np.linalg.norm(x)
    if nx == 0:
        return 0.0, 0.0, 0.0
    x /= nx
    y -= (y @ x) * x
    ny = np.linalg.norm(y)
    if ny == 0:
        return 0.0, 0.0, 0.0
    y /= ny
    z = np.cross(x, y)  # away from the camera on a frontal face
    yaw = math.degrees(math.atan2(z[0], z[2]))
    pitch = math.degrees(math.atan2(-z[1], math.hypot(z[0], z[2]))) - PITCH_OFFSET_DEG
    roll = math.degrees(math.atan2(x[1], x[0]))
    return yaw, pitch, roll


_GREY = np.array([0.299, 0.587, 0.114], np.float32)
_PAD = round(CHIP_SIZE * CHIP_PADDING / (1 + 2 * CHIP_PADDING))


def _face_region(chip: np.ndarray) -> np.ndarray:
    """Grey levels of the chip's face region (the padding stripped), float32."""
    c = chip[_PAD:-_PAD, _PAD:-_PAD] if chip.shape[0] == CHIP_SIZE else chip
    return c.astype(np.float32) @ _GREY


def _sharpness(g: np.ndarray) -> float:
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    contrast = float(g.std())
    return float(lap.std()) / contrast if contrast > 1.0 else 0.0


def _exposure(g: np.ndarray) -> tuple[float, float]:
    return float(g.mean()), np.count_nonzero((g <= 5) | (g >= 250)) / g.size


def sharpness(chip: np.ndarray) -> float:
    """Contrast-normalised Laplacian energy of the chip's face region (see the module docstring)."""
    return _sharpness(_face_region(chip))


def exposure(chip: np.ndarray) -> tuple[float, float]:
    """(mean luminance 0-255, clipped share) of the chip's face region."""
    return _exposure(_face_region(chip))


def measure_quality(detection: FaceDetection, landmarks: FaceLandmarks | None, chip: np.ndarray) -> FaceQuality:
    """Measure one face; without landmarks, pose comes from the detector keypoints (roll only)."""
    if landmarks is not None:
        yaw, pitch, roll = head_pose(landmarks.points)
        interocular = landmarks.interocular
    else:
        (x0, y0), (x1, y1) = detection.keypoints[0], detection.keypoints[1]
        yaw, pitch, roll = 0.0, 0.0, math.degrees(math.atan2(y1 - y0, x1 - x0))
        interocular = detection.eye_distance
    grey = _face_region(chip)
    lum, clipped = _exposure(grey)
    return FaceQuality(
        face_px=float(detection.width),
        interocular_px=float(interocular),
        sharpness=_sharpness(grey),
        yaw=yaw,
        pitch=pitch,
        roll=roll,
        luminance=lum,
        clipped=clipped,
    )
