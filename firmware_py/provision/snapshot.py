"""`kaoclock snapshot --annotate`: what the reader sees, drawn for the technician mounting it.

One frame (from the configured camera, or an image/video/folder given as the
source) goes through the reader's own front-end and matcher (the ones
:func:`~firmware_py.pipeline.build.build_pipeline` builds for ``kaoclock run``),
and Pillow draws on it: each face's box and landmarks, the name (or
"unknown") with the match distance against the threshold, the liveness score
when a liveness stage is on, the quality problems that would stop the gate
from using the face, and the minimum-face-size guides at the frame centre
(a face must look at least that big for the gate, and for enrolment).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from firmware_py.capture.frame import Frame
from firmware_py.capture.replay import IMAGE_SUFFIXES
from firmware_py.errors import UsageError

if TYPE_CHECKING:
    from firmware_py.config import Config

GREEN, RED, AMBER, CYAN, WHITE = (40, 220, 90), (235, 60, 50), (250, 180, 30), (40, 200, 240), (255, 255, 255)


@dataclass
class FaceReport:
    box: tuple[float, float, float, float]
    score: float
    face_px: float | None = None
    verdict: str | None = None  # match verdict, None when the face was not usable for matching
    person_id: str | None = None
    name: str | None = None
    distance: float | None = None
    threshold: float | None = None
    liveness: float | None = None
    liveness_policy: str = "off"
    liveness_threshold: float | None = None
    problems: list[str] = field(default_factory=list)
    landmarks: int = 0


@dataclass
class SnapshotReport:
    source: str
    width: int
    height: int
    faces: list[FaceReport]
    min_face_px_gate: float
    min_face_px_enrol: float
    gallery_people: int
    out: str = ""

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def grab_frame(cfg: Config, source: str | Path | None = None, warmup: int = 3, timeout: float = 5.0) -> Frame:
    """One frame: an image file read directly, else the first frames of the camera/replay (skipping ``warmup`` for exposure)."""
    from firmware_py.capture.factory import camera_from_config

    if source is not None and Path(source).suffix.lower() in IMAGE_SUFFIXES and Path(source).is_file():
        try:
            with Image.open(source) as im:
                rgb = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        except OSError as exc:
            raise UsageError(f"--source {source}: not a readable image ({exc})") from None
        return Frame(rgb, time.time(), 0, str(source))
    if source is not None and not Path(source).exists():
        raise UsageError(f"--source {source}: no such file or folder")
    cam_cfg = cfg.camera
    if source is not None and cam_cfg.backend != "replay":
        import dataclasses

        cam_cfg = dataclasses.replace(cam_cfg, backend="replay")
    cam = camera_from_config(cam_cfg, source)
    frame = None
    with cam:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            try:
                got = cam.read(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # EndOfStream from a short replay: keep the last frame
                if frame is not None:
                    break
                raise UsageError(f"no frame from {source or cam_cfg.backend}: {exc}") from None
            if got is None:
                continue
            frame, seen = got, seen + 1
            if seen > warmup or (source is not None and seen >= 1):
                break
    if frame is None:
        raise UsageError(f"no frame from the camera within {timeout:.0f} s (check `kaoclock health` and [camera])")
    return frame


def analyse(frame: Frame, pipeline: Any) -> tuple[list[FaceReport], list[Any]]:
    """The pipeline's front-end, matcher and liveness stage on one frame (no decision, no punch).

    Returns a report per face and the observations themselves (their landmarks are drawn).
    """
    from firmware_py.vision.embedding import describe_face

    analysis = pipeline.analyzer.process(frame)
    faces = []
    for obs in analysis.observations:
        pipeline.liveness.observe(obs, frame)
        det = obs.detection
        rep = FaceReport(tuple(float(v) for v in det.box), float(det.score))  # type: ignore[arg-type]
        if obs.quality is not None:
            rep.face_px = float(obs.quality.face_px)
            rep.problems = list(obs.quality.failures(pipeline.quality_limits)) if pipeline.quality_limits is not None else []
        if obs.landmarks is not None:
            rep.landmarks = len(obs.landmarks.points)
        if obs.chip is not None:
            m = pipeline.matcher.match(describe_face(pipeline.embedder, obs.chips, pipeline.mirror))
            rep.verdict, rep.person_id, rep.name = str(m.verdict), m.person_id, m.name
            rep.distance, rep.threshold = m.distance, m.threshold
        # One frame is all there is: ask for a verdict on it now (conclude) rather than after a window.
        conclude = getattr(pipeline.liveness, "conclude", None)
        lv = conclude(obs.track_id) if conclude is not None else pipeline.liveness.verdict(obs.track_id)
        rep.liveness_policy = str(getattr(pipeline.liveness, "policy", "off"))
        if lv is not None:
            rep.liveness_policy, rep.liveness, rep.liveness_threshold = lv.policy, lv.score, lv.threshold
        faces.append(rep)
    return faces, list(analysis.observations)


def _label(rep: FaceReport) -> tuple[str, tuple[int, int, int]]:
    if rep.verdict is None:
        why = ", ".join(rep.problems) or "not aligned"
        return f"not usable: {why}", AMBER
    dist = f"d={rep.distance:.3f}" if rep.distance is not None else "d=-"
    thr = f"thr {rep.threshold:.3f}" if rep.threshold is not None else ""
    if rep.verdict == "match":
        head, colour = f"{rep.name} ({rep.person_id})", GREEN
    else:
        who = f", nearest {rep.person_id}" if rep.person_id else ""
        head, colour = f"unknown [{rep.verdict}{who}]", RED
    text = f"{head}  {dist} / {thr}"
    if rep.liveness_policy != "off":
        thr_l = f"/{rep.liveness_threshold:.2f}" if rep.liveness_threshold is not None else ""
        text += f"  live {rep.liveness:.2f}{thr_l}" if rep.liveness is not None else "  live -"
    if rep.problems:
        text += "  (" + ", ".join(rep.problems) + ")"
    return text, colour


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: tuple[int, int, int]) -> None:
    x, y = xy
    box = draw.textbbox((x, y), text)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((x, y), text, fill=colour)


def annotate(frame: Frame, report: SnapshotReport, observations: list[Any] | None = None) -> Image.Image:
    """The frame with faces, landmarks, labels and the minimum-face guides drawn on it."""
    img = frame.pil().copy()  # drawn on, so a copy; of an RGBX frame, Pillow's own 4-byte copy (fromarray of the RGB view is slow)
    draw = ImageDraw.Draw(img)
    w, h = img.size
    cx, cy = w / 2, h / 2
    for side, colour, what in ((report.min_face_px_gate, CYAN, "gate"), (report.min_face_px_enrol, WHITE, "enrol")):
        half = side / 2
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), outline=colour, width=1)
        # Labels in the frame's bottom-left corner, so they never cover a face.
        _text(
            draw,
            (4, h - (30 if what == "gate" else 16)),
            f"{'cyan' if what == 'gate' else 'white'} centre box: min face for {what} {side:.0f}px",
            colour,
        )
    for i, rep in enumerate(report.faces):
        text, colour = _label(rep)
        x0, y0, x1, y1 = rep.box
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=3)
        obs = observations[i] if observations and i < len(observations) else None
        if obs is not None:
            if obs.landmarks is not None:
                for x, y in obs.landmarks.points[:, :2]:
                    draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=CYAN)
                for x, y in obs.landmarks.dlib5():
                    draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=AMBER)
            else:
                for x, y in np.asarray(obs.detection.keypoints):
                    draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=AMBER)
        size = f"face {rep.face_px:.0f}px" if rep.face_px is not None else ""
        _text(draw, (x0, max(0.0, y0 - 14)), text, colour)
        _text(draw, (x0, y1 + 3), f"{size}  det {rep.score:.2f}", colour)
    summary = f"{Path(report.source).name}  {w}x{h}  faces {len(report.faces)}  gallery {report.gallery_people} people"
    _text(draw, (4, 4), summary, WHITE)
    return img


def take_snapshot(cfg: Config, out: Path, source: str | Path | None = None, pipeline: Any = None) -> SnapshotReport:
    """Grab, analyse, draw and save one annotated frame; returns what was found."""
    from firmware_py.pipeline.build import build_pipeline

    if out.suffix.lower() not in {".png", ".jpg", ".jpeg"}:
        raise UsageError(f"--annotate {out}: give a .png or .jpg file name")
    if pipeline is None:
        pipeline, _ = build_pipeline(cfg)
    frame = grab_frame(cfg, source)
    faces, observations = analyse(frame, pipeline)
    report = SnapshotReport(
        source=frame.source,
        width=frame.width,
        height=frame.height,
        faces=faces,
        min_face_px_gate=float(pipeline.quality_limits.min_face_px),
        min_face_px_enrol=float(cfg.vision.quality.min_face_px),
        gallery_people=int(pipeline.gallery.persons),
        out=str(out),
    )
    img = annotate(frame, report, observations)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    img.save(tmp, format="PNG" if out.suffix.lower() == ".png" else "JPEG")
    tmp.replace(out)
    return report
