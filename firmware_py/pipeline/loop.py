"""One frame through the recognition core: analyze -> embed -> match -> decide.

:class:`RecognitionPipeline` knows nothing of cameras, MQTT, GPIO or serial:
it takes a frame, returns the decisions it reached and per-stage timings.
The daemon (:mod:`firmware_py.pipeline.daemon`) feeds it the newest frame and
hands decisions to the sinks.

Only the nearest face of a frame is embedded (a gate serves one person at a
time, and the tracker keeps one walk-up one transaction); every observed
face is shown to the liveness stage.  Tracks that stop appearing for
``lost_after_s`` are ended, which decides them if they had not decided yet.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware_py.decision.liveness import LivenessOff, LivenessStage
from firmware_py.decision.machine import DecisionMachine, DecisionParams
from firmware_py.decision.outcome import Decision
from firmware_py.events import EventBus
from firmware_py.gallery.matcher import Matcher, MatchResult
from firmware_py.gallery.store import GalleryMatrix
from firmware_py.vision.embedding import ChipEmbedder, describe_face

log = logging.getLogger(__name__)


@dataclass
class FrameResult:
    """What one frame produced."""

    index: int
    ts: float
    faces: int
    track_id: int | None = None
    match: MatchResult | None = None
    decisions: list[Decision] = field(default_factory=list)
    stages_ms: dict[str, float] = field(default_factory=dict)  # analyzer stages + embed, match, decide
    invoke_ms: float = 0.0  # time inside model invokes (detector, landmarks, embedder, liveness nets)
    invoke_by_model_ms: dict[str, float] = field(default_factory=dict)  # the same, per model
    embedded: bool = False  # whether the embedder ran (not on settled tracks or unusable frames)
    frame_ms: float = 0.0


def quality_verdict(quality: Any, limits: Any) -> tuple[bool, str]:
    """(usable, reason codes) from the vision package's FaceQuality and the [vision.quality] limits."""
    if quality is None:
        return False, "no_measure"
    failures = quality.failures(limits) if limits is not None else []
    return not failures, ", ".join(failures)


class RecognitionPipeline:
    """The recognition core for one camera."""

    def __init__(
        self,
        analyzer: Any,
        embedder: ChipEmbedder,
        gallery: GalleryMatrix,
        threshold: float,
        min_margin: float,
        params: DecisionParams,
        liveness: LivenessStage | None = None,
        bus: EventBus | None = None,
        mirror: bool = False,
        model_versions: dict[str, str] | None = None,
        lost_after_s: float = 1.5,
        quality_limits: Any | None = None,
        fusion: str = "vote",
    ) -> None:
        self.analyzer = analyzer
        # Live frames are gated more leniently than enrolment photos (see [recognition] live_*).
        self.quality_limits = quality_limits if quality_limits is not None else getattr(analyzer, "quality_limits", None)
        self.embedder = embedder
        self.mirror = mirror
        self.bus = bus or EventBus()
        self.liveness = liveness or LivenessOff()
        self.lost_after_s = lost_after_s
        if fusion not in ("vote", "mean"):
            raise ValueError(f"fusion must be 'vote' or 'mean', got {fusion!r}")
        # "mean": each frame is matched on the mean descriptor of its track's last n usable frames.
        self.fusion = fusion
        self._descs: dict[int, deque[np.ndarray]] = {}
        versions = {"embedder": embedder.version, **(model_versions or {})}
        self.machine = DecisionMachine(params, self.liveness, versions)
        self._last_seen: dict[int, float] = {}
        self.threshold, self.min_margin = threshold, min_margin
        self.set_gallery(gallery)

    def close(self) -> None:
        """The reader stops: let the liveness stage stop its threads (the parallel MiniFASNet nets' worker)."""
        close = getattr(self.liveness, "close", None)
        if callable(close):
            close()

    def set_gallery(self, gallery: GalleryMatrix) -> None:
        """Swap in a new gallery (after enrolment or sync); in-flight tracks keep deciding on the new one."""
        self.gallery = gallery
        self.matcher = Matcher(gallery, self.threshold, self.min_margin)
        self.machine.mismatch_detail = ""
        if gallery.mismatched:
            detail = (
                f"{gallery.mismatched} in-scope template(s) were made by another embedder than {gallery.embedder_version}; "
                "they are not matched: re-enrol those people or re-sync the gallery"
            )
            if len(gallery) == 0:
                self.machine.mismatch_detail = detail
            self.bus.emit_new("gallery.model_mismatch", "warning", detail=detail, mismatched=gallery.mismatched, embedder=gallery.embedder_version)

    def process(self, frame: Any) -> FrameResult:
        """Run one frame; returns its decisions (usually none) and timings."""
        t0 = time.perf_counter()
        analysis = self.analyzer.process(frame)
        stages = dict(analysis.stages_ms)
        invoke_ms = float(analysis.model_invoke_ms)
        ts = float(frame.ts)
        res = FrameResult(int(getattr(frame, "index", 0)), ts, len(analysis.observations))
        for obs in analysis.observations:
            self._last_seen[obs.track_id] = ts
            self.liveness.observe(obs, frame)
        take = getattr(self.liveness, "take_invoke_ms", None)
        t_liveness = float(take()) if callable(take) else 0.0  # the learned liveness nets: model invokes too
        invoke_ms += t_liveness
        t_embed = t_match = 0.0
        obs = analysis.primary  # the nearest face wins
        if obs is not None and not self.machine.needs_embedding(obs.track_id):
            # Identity settled (decided, or K frames agreed and liveness is still watching): no
            # embedding until the person leaves; the liveness stage above still sees every frame.
            res.track_id = obs.track_id
        elif obs is not None:
            res.track_id = obs.track_id
            ok, why = quality_verdict(obs.quality, self.quality_limits)
            if ok and obs.chip is not None:
                a = time.perf_counter()
                desc = describe_face(self.embedder, obs.chips, self.mirror)
                if self.fusion == "mean":
                    recent = self._descs.setdefault(obs.track_id, deque(maxlen=self.machine.params.n))
                    recent.append(desc)
                    desc = np.asarray(np.mean(recent, axis=0, dtype=np.float64), np.float32)
                b = time.perf_counter()
                res.match = self.matcher.match(desc)
                c = time.perf_counter()
                t_embed, t_match = (b - a) * 1e3, (c - b) * 1e3
                res.embedded = True
                invoke_ms += t_embed
                d = self.machine.observe(obs.track_id, ts, res.match)
            else:
                d = self.machine.observe(obs.track_id, ts, None, False, why or "no aligned face")
            if d:
                res.decisions.append(d)
        t2 = time.perf_counter()
        res.decisions += self.machine.tick(ts)
        ended = {t.track_id for t in analysis.ended}
        # Tracks the tracker ended, and (belt and braces) any not seen for lost_after_s.
        ended |= {tid for tid, seen in self._last_seen.items() if ts - seen > self.lost_after_s}
        for tid in ended:
            self._last_seen.pop(tid, None)
            self._descs.pop(tid, None)
            d = self.machine.end_track(tid, ts)
            if d:
                res.decisions.append(d)
        t3 = time.perf_counter()
        # The analyzer computes chip and quality lazily (on first read above): take its stage
        # times again now so align / quality are counted on the frames that used them.
        stages.update(analysis.stages_ms)
        stages["embed"] = t_embed
        stages["match"] = t_match
        stages["decide"] = (t3 - t2) * 1e3
        res.stages_ms = stages
        res.invoke_ms = invoke_ms
        res.invoke_by_model_ms = {**getattr(analysis, "invoke_ms", {}), "embedder": t_embed, "liveness": t_liveness}
        res.frame_ms = (t3 - t0) * 1e3
        return res

    def reset(self, ts: float) -> list[Decision]:
        """A new scene (the camera was lost or stalled and reopened): end every track at ``ts``.

        The tracker forgets its boxes, so a face in the reopened camera's first
        frames starts a new walk-up instead of inheriting the track (and maybe
        the decision) of whoever stood there before the outage; every open
        track is ended as if its person had left.  Returns those decisions.
        """
        reset = getattr(self.analyzer, "reset", None)
        ended = {t.track_id for t in reset()} if reset is not None else set()
        ended |= set(self._last_seen)
        self._last_seen.clear()
        self._descs.clear()
        out = []
        for tid in sorted(ended):
            d = self.machine.end_track(tid, ts)
            if d:
                out.append(d)
        return out

    def finish(self, ts: float) -> list[Decision]:
        """The source ended: end every open track."""
        out = []
        self._descs.clear()
        for tid in list(self._last_seen):
            del self._last_seen[tid]
            d = self.machine.end_track(tid, ts)
            if d:
                out.append(d)
        return out


DecisionCallback = Callable[[Decision], None]


def stage_percentiles(results: list[FrameResult]) -> dict[str, dict[str, float]]:
    """p50 / p95 per stage over frames."""
    names = sorted({k for r in results for k in r.stages_ms})
    out = {}
    for n in names:
        v = [r.stages_ms.get(n, 0.0) for r in results]
        out[n] = {"p50": round(float(np.percentile(v, 50)), 3), "p95": round(float(np.percentile(v, 95)), 3)}
    return out
