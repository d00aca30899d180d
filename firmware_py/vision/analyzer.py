"""FaceAnalyzer: frame in, tracked faces out, the nearest one landmarked, aligned and measured.

One call per frame::

    analyzer = FaceAnalyzer.from_config(cfg)
    for frame in latest.frames():
        for obs in analyzer.analyze(frame):
            if obs.chip is not None:          # the primary (nearest) face
                descriptor = embedder.embed(obs.chip)
        for track in analyzer.last.ended:     # walk-ups that are over
            ...

Stages: ``detect`` (BlazeFace, letterbox to NMS) -> ``track`` (IoU) ->
``landmarks`` (FaceMesh on the nearest face) -> ``align`` (the 150x150 chip)
-> ``quality``.  Other faces are tracked but not landmarked or aligned:
the nearest face is the one at the reader.  ``align`` and ``quality`` run
when the primary observation's ``chip`` / ``quality`` is first read (a
walk-up that is already decided needs neither); ``lazy=False`` runs them
on every frame.

Every call records its timings in :attr:`FaceAnalyzer.last` (an
:class:`Analysis`): ``stages_ms`` per stage (``align`` and ``quality`` are
added when they run, so read ``stages_ms`` after using the chip),
``invoke_ms`` per model (the part of ``detect`` and ``landmarks`` spent
inside LiteRT) and ``total_ms`` (the eager part).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_py.capture.frame import Frame
from firmware_py.config.model import Config
from firmware_py.vision.align import DETECTOR4_TEMPLATE, FACEMESH5_TEMPLATE, Resampler, chip_geometry, warp_chip
from firmware_py.vision.detector import FaceDetection, FaceDetector
from firmware_py.vision.landmarks import DLIB5, FaceLandmarks, FaceMesh
from firmware_py.vision.quality import FaceQuality, QualityThresholds, measure_quality
from firmware_py.vision.tracker import IouTracker, Track

STAGES = ("detect", "track", "landmarks", "align", "quality")


class _Aligned:
    """The primary face's chip and quality, computed on first use.

    A track the decision stage has already decided needs neither, so a
    frame that nobody asks for them spends nothing on them.  The time spent
    when they are computed is added to the frame's ``stages_ms`` (``align``,
    ``quality``).  Until then the frame's pixels stay referenced.
    """

    __slots__ = (
        "_chip",
        "_chips",
        "_det",
        "_exact",
        "_extra",
        "_landmarks",
        "_lazy_ms",
        "_points",
        "_quality",
        "_rs",
        "_scale",
        "_stages",
        "_template",
    )

    def __init__(
        self,
        rs: Resampler,
        points: np.ndarray | None,
        template: np.ndarray,
        det: FaceDetection,
        landmarks: FaceLandmarks | None,
        exact: bool,
        stages: dict[str, float],
        lazy_ms: list[float],
        extra: tuple[tuple[np.ndarray, np.ndarray], ...] = (),
    ) -> None:
        self._rs: Resampler | None = rs
        self._extra = extra  # (points, template) of further chips for the embedder
        self._points, self._template = points, template  # points None: landmarks' DLIB5 points, picked on use
        self._det, self._landmarks, self._exact, self._stages = det, landmarks, exact, stages
        self._lazy_ms = lazy_ms
        self._chip: np.ndarray | None = None
        self._chips: np.ndarray | None = None
        self._quality: FaceQuality | None = None
        self._scale = 1.0

    def chip(self) -> np.ndarray:
        if self._chip is None:
            t = time.perf_counter()
            assert self._rs is not None
            points = self._points if self._points is not None else self._landmarks.points[list(DLIB5), :2]  # type: ignore[union-attr]
            geom = chip_geometry(points, self._template)
            self._scale = geom.scale
            self._chip = warp_chip(self._rs, geom, exact=self._exact)
            if not self._extra:
                self._rs = None  # the frame is no longer needed
            self._add("align", (time.perf_counter() - t) * 1000)
        return self._chip

    def chips(self) -> np.ndarray:
        if self._chips is None:
            chip = self.chip()
            t = time.perf_counter()
            more = [warp_chip(self._rs, chip_geometry(p, tpl), exact=self._exact) for p, tpl in self._extra]  # type: ignore[arg-type]
            self._chips = np.stack([chip, *more])
            self._rs = None
            self._add("align", (time.perf_counter() - t) * 1000)
        return self._chips

    def quality(self) -> FaceQuality:
        if self._quality is None:
            chip = self.chip()
            t = time.perf_counter()
            self._quality = measure_quality(self._det, self._landmarks, chip, self._scale)
            self._add("quality", (time.perf_counter() - t) * 1000)
        return self._quality

    def _add(self, stage: str, ms: float) -> None:
        self._stages[stage] = self._stages.get(stage, 0.0) + ms
        self._lazy_ms[0] += ms


@dataclass(frozen=True)
class FaceObservation:
    """One tracked face in one frame.

    ``landmarks``, ``chip`` and ``quality`` are given for the primary
    (nearest) face only (``None`` for the others); ``landmarks`` is also
    ``None`` when FaceMesh is disabled or not confident.  ``chip`` is the
    ``(150, 150, 3)`` uint8 input of the embedder; ``align_source`` says
    which points align it (``"facemesh"`` or ``"detector"``).  ``chip`` and
    ``quality`` are computed on first access (then kept), so a frame whose
    chip nobody needs costs no alignment.  ``chips`` is what the embedder
    describes: ``(n, 150, 150, 3)``, ``chip`` first, then the chips of the
    other alignments ``[vision.align] source = "both"`` asks for (their
    descriptors are averaged; ``align_source`` is then
    ``"facemesh+detector"``).
    """

    track_id: int
    detection: FaceDetection
    landmarks: FaceLandmarks | None
    frame_ts: float
    track: Track
    primary: bool = False
    align_source: str | None = None
    _aligned: _Aligned | None = field(default=None, repr=False, compare=False)

    @property
    def chip(self) -> np.ndarray | None:
        return self._aligned.chip() if self._aligned is not None else None

    @property
    def chips(self) -> np.ndarray | None:
        return self._aligned.chips() if self._aligned is not None else None

    @property
    def quality(self) -> FaceQuality | None:
        return self._aligned.quality() if self._aligned is not None else None


@dataclass
class Analysis:
    """Everything one :meth:`FaceAnalyzer.process` call produced."""

    observations: list[FaceObservation] = field(default_factory=list)
    ended: list[Track] = field(default_factory=list)
    coasting: list[Track] = field(default_factory=list)
    stages_ms: dict[str, float] = field(default_factory=dict)
    invoke_ms: dict[str, float] = field(default_factory=dict)
    eager_ms: float = 0.0
    lazy_ms: list[float] = field(default_factory=lambda: [0.0])

    @property
    def total_ms(self) -> float:
        """Time of :meth:`FaceAnalyzer.process` plus the alignment and quality run since for this frame."""
        return self.eager_ms + self.lazy_ms[0]

    @property
    def model_invoke_ms(self) -> float:
        """Time inside the models (sum over this frame's invokes)."""
        return sum(self.invoke_ms.values())

    @property
    def primary(self) -> FaceObservation | None:
        return next((o for o in self.observations if o.primary), None)


class FaceAnalyzer:
    """Detect, track, landmark, align and measure faces frame by frame.

    :param detector: the face detector.
    :param tracker: the IoU tracker.
    :param mesh: FaceMesh, or ``None`` to align from detector keypoints only.
    :param align_source: ``"facemesh"``, ``"detector"`` or ``"both"`` (FaceMesh's
        chip plus the detector's for the embedder; see ``[vision.align]``).
    :param min_presence: FaceMesh presence below which its points are not used.
    :param quality_limits: thresholds carried for callers (enrolment, feedback).
    :param exact_resample: reproduce dlib's pyramid for large faces bit for
        bit (see :func:`~firmware_py.vision.align.warp_chip`).
    :param lazy: compute the primary face's chip and quality when first
        asked for (default) rather than on every frame.
    """

    def __init__(
        self,
        detector: FaceDetector,
        tracker: IouTracker,
        mesh: FaceMesh | None = None,
        *,
        align_source: str = "facemesh",
        min_presence: float = 0.5,
        quality_limits: QualityThresholds | None = None,
        exact_resample: bool = False,
        lazy: bool = True,
    ) -> None:
        if align_source not in ("facemesh", "detector", "both"):
            raise ValueError(f"align_source must be 'facemesh', 'detector' or 'both', got {align_source!r}")
        if align_source != "detector" and mesh is None:
            raise ValueError(f"align_source {align_source!r} needs a FaceMesh")
        self.detector = detector
        self.tracker = tracker
        self.mesh = mesh
        self.align_source = align_source
        self.min_presence = float(min_presence)
        self.quality_limits = quality_limits or QualityThresholds()
        self.exact_resample = exact_resample
        self.lazy = lazy
        self.last = Analysis()

    @classmethod
    def from_config(cls, cfg: Config, *, models_dir: Path | None = None) -> FaceAnalyzer:
        """Load the models named in the manifest (sha256-checked) with the ``[vision]`` settings."""
        from firmware_py.models.manifest import load_manifest

        manifest = load_manifest()
        mdir = models_dir or cfg.models.dir
        verify = cfg.models.verify_on_start
        v = cfg.vision
        detector = FaceDetector(
            manifest.require("blazeface_short_range", mdir, verify=verify),
            min_face_px=v.detector.min_face_px,
            score_threshold=v.detector.score_threshold,
            nms_iou=v.detector.nms_iou,
            max_faces=v.detector.max_faces,
            threads=cfg.models.threads,
        )
        mesh = None
        if v.landmarks.enabled:
            mesh = FaceMesh(manifest.require("facemesh", mdir, verify=verify), threads=cfg.models.threads, roi_scale=v.landmarks.roi_scale)
        tracker = IouTracker(v.tracker.iou_threshold, v.tracker.max_missed, v.tracker.max_missed_s)
        q = v.quality
        limits = QualityThresholds(
            min_face_px=q.min_face_px,
            min_interocular_px=q.min_interocular_px,
            max_yaw_deg=q.max_yaw_deg,
            max_pitch_deg=q.max_pitch_deg,
            max_roll_deg=q.max_roll_deg,
            min_luminance=q.min_luminance,
            max_luminance=q.max_luminance,
            max_clipped=q.max_clipped,
            min_sharpness=q.min_sharpness,
        )
        return cls(
            detector,
            tracker,
            mesh,
            align_source=v.align.source,
            min_presence=v.landmarks.min_presence,
            quality_limits=limits,
            exact_resample=v.align.resample == "dlib",
        )

    def analyze(self, frame: Frame) -> list[FaceObservation]:
        """Observations of the faces matched in this frame, nearest first (see :meth:`process`)."""
        return self.process(frame).observations

    def reset(self) -> list[Track]:
        """Forget all tracks (e.g. after the camera was lost); returns them as ended."""
        return self.tracker.reset()

    def process(self, frame: Frame) -> Analysis:
        """Run every stage on one frame; the result is also kept in :attr:`last`."""
        t0 = time.perf_counter()
        image = frame.pixels  # RGBX from cameras: both models' inputs are sampled without converting the frame
        stages: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        invoke: dict[str, float] = {"detector": 0.0, "facemesh": 0.0}

        detections = self.detector.detect(image)
        invoke["detector"] = self.detector.last_invoke_ms
        t1 = time.perf_counter()
        stages["detect"] = (t1 - t0) * 1000

        tracks = self.tracker.update(detections, frame.ts)
        matched = [t for t in tracks if t.matched]
        t2 = time.perf_counter()
        stages["track"] = (t2 - t1) * 1000

        observations: list[FaceObservation] = []
        lazy_ms = [0.0]
        if matched:
            # Tracks come back in detection order: the first is the nearest face.
            head = matched[0]
            det = head.detection
            assert det is not None
            landmarks = None
            # The FaceMesh crop reads the frame's pixels in place (OpenCV); the chips, cut only when asked
            # for, from the frame mapped into Pillow (an RGBX frame without a copy) when first needed.
            rs = Resampler(frame.pil if frame.rgbx is not None else image)
            if self.mesh is not None:
                lm = self.mesh.landmarks(image, det)
                invoke["facemesh"] = self.mesh.last_invoke_ms
                if lm.presence >= self.min_presence:
                    landmarks = lm
            stages["landmarks"] = (time.perf_counter() - t2) * 1000
            extra: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
            points: np.ndarray | None
            if landmarks is not None and self.align_source != "detector":
                # FaceMesh's 5 dlib-like points (None: picked from the landmarks when the chip is cut).
                points, template, source = None, FACEMESH5_TEMPLATE, "facemesh"
                if self.align_source == "both":
                    extra, source = ((det.keypoints[:4], DETECTOR4_TEMPLATE),), "facemesh+detector"
            else:
                points, template, source = det.keypoints[:4], DETECTOR4_TEMPLATE, "detector"
            aligned = _Aligned(rs, points, template, det, landmarks, self.exact_resample, stages, lazy_ms, extra)
            observations.append(FaceObservation(head.track_id, det, landmarks, frame.ts, head, True, source, aligned))
            if not self.lazy:
                aligned.quality()
            for t in matched[1:]:
                assert t.detection is not None
                observations.append(FaceObservation(t.track_id, t.detection, None, frame.ts, t))

        result = Analysis(
            observations=observations,
            ended=[t for t in tracks if t.ended],
            coasting=[t for t in tracks if not t.matched and not t.ended],
            stages_ms=stages,
            invoke_ms=invoke,
            eager_ms=(time.perf_counter() - t0) * 1000 - lazy_ms[0],
            lazy_ms=lazy_ms,
        )
        self.last = result
        return result
