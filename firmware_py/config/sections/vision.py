"""[vision]: face detection, tracking, landmarks, alignment and quality limits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Problem, Section, setting


@dataclass(frozen=True)
class DetectorConfig(Section):
    """BlazeFace short-range face detector."""

    min_face_px: float = setting(
        60.0, ge=8, le=2000, doc="Ignore faces whose box is narrower than this many pixels of the frame (too far away to recognise)."
    )
    score_threshold: float = setting(0.5, gt=0, lt=1, doc="Minimum detection confidence (MediaPipe's default 0.5).")
    nms_iou: float = setting(0.3, gt=0, lt=1, doc="Overlapping boxes above this IoU are merged into one face (weighted NMS).")
    max_faces: int = setting(4, ge=0, le=32, doc="Keep at most this many faces per frame, nearest first (0 = all).")


@dataclass(frozen=True)
class TrackerConfig(Section):
    """IoU tracker: one walk-up is one track."""

    iou_threshold: float = setting(0.3, gt=0, le=1, doc="Minimum box overlap (IoU) to continue a track from one frame to the next.")
    max_missed: int = setting(5, ge=0, le=1000, doc="A track ends after this many consecutive frames without its face.")
    max_missed_s: float = setting(1.0, gt=0, le=60, doc="A track ends after this many seconds without its face.")


@dataclass(frozen=True)
class LandmarksConfig(Section):
    """FaceMesh landmarks on the nearest face."""

    enabled: bool = setting(True, doc="Run FaceMesh on the nearest face (needed by liveness and the best alignment).")
    min_presence: float = setting(0.5, ge=0, le=1, doc="FaceMesh face-presence confidence below which its landmarks are not used.")
    roi_scale: float = setting(1.5, ge=1.0, le=3.0, doc="Crop side around the detection box, as a multiple of its longer side (MediaPipe: 1.5).")


@dataclass(frozen=True)
class AlignConfig(Section):
    """Alignment into the embedder's 150x150 chip (dlib's geometry)."""

    source: Literal["facemesh", "detector", "both"] = setting(
        "facemesh",
        doc="Points that drive the alignment: FaceMesh's 5 dlib-like points, the detector's 4 keypoints (eyes, nose, mouth), or both: "
        "the face is described by the mean of both chips' descriptors (twice the embedder runs). facemesh: the cheapest path with "
        "LFW >= 99.0% (`kaoclock eval align-variants`, vision/README.md).",
    )
    resample: Literal["fast", "dlib"] = setting(
        "fast",
        doc="Faces over twice the chip's size: 'dlib' rebuilds dlib's image pyramid bit for bit (~2 ms more), 'fast' box-reduces with Pillow.",
    )


@dataclass(frozen=True)
class QualityConfig(Section):
    """Face quality limits, used by enrolment gates and live feedback."""

    min_face_px: float = setting(80.0, ge=8, le=2000, doc="Smallest face box width (pixels) good enough to enrol.")
    min_interocular_px: float = setting(28.0, ge=4, le=1000, doc="Smallest distance between the eye centres (pixels) good enough to enrol.")
    max_yaw_deg: float = setting(25.0, gt=0, le=90, doc="Largest head turn (degrees).")
    max_pitch_deg: float = setting(25.0, gt=0, le=90, doc="Largest head nod (degrees).")
    max_roll_deg: float = setting(20.0, gt=0, le=90, doc="Largest head tilt (degrees).")
    min_luminance: float = setting(50.0, ge=0, le=255, doc="Darkest acceptable mean face luminance (0-255).")
    max_luminance: float = setting(210.0, ge=0, le=255, doc="Brightest acceptable mean face luminance (0-255).")
    max_clipped: float = setting(0.15, ge=0, le=1, doc="Largest share of near-black or near-white face pixels.")
    min_sharpness: float = setting(
        0.18, ge=0, le=10, doc="Least sharpness (contrast-normalised Laplacian of the face at its own resolution; sharp 0.2-1.0, blurred ~0.1)."
    )

    def check(self) -> Iterator[Problem]:
        if self.min_luminance >= self.max_luminance:
            yield Problem(
                "min_luminance", f"{self.min_luminance} is not below max_luminance {self.max_luminance}", "set min_luminance < max_luminance"
            )


@dataclass(frozen=True)
class VisionConfig(Section):
    """Face detection, tracking, landmarks, alignment and quality limits."""

    detector: DetectorConfig = setting(default_factory=DetectorConfig, doc="BlazeFace short-range face detector.")
    tracker: TrackerConfig = setting(default_factory=TrackerConfig, doc="IoU tracker: one walk-up is one track.")
    landmarks: LandmarksConfig = setting(default_factory=LandmarksConfig, doc="FaceMesh landmarks on the nearest face.")
    align: AlignConfig = setting(default_factory=AlignConfig, doc="Alignment into the embedder's 150x150 chip.")
    quality: QualityConfig = setting(default_factory=QualityConfig, doc="Face quality limits (enrolment gates, live feedback).")

    def check(self) -> Iterator[Problem]:
        if self.align.source != "detector" and not self.landmarks.enabled:
            yield Problem(
                "align.source",
                f"is {self.align.source!r} but landmarks.enabled is false",
                'enable [vision.landmarks] or set align.source = "detector"',
            )
