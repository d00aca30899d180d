"""`kaoclock bench walkup`: time from a face in front of the reader to the door, as staff feel it.

Each clip is one walk-up.  Its first ``--timed-s`` seconds are the timed
part; the clip's person is enrolled from ``--enrol-frames`` frames *after*
it (never from a timed frame), and every clip's person goes into one
gallery, so a run over the nine dev clips is a site of nine people (the
threshold is then chosen exactly as the daemon chooses it, from the config:
``threshold_source = "gallery"`` estimates it from that gallery).

The timed part is replayed in real time through the daemon's own capture and
loop: a camera that releases each (pre-decoded, so decoding costs no CPU a
camera would not) frame at its timestamp, the :class:`LatestFrame`
newest-frame buffer (a frame the pipeline was too busy to take is dropped),
and :class:`Daemon` running the pipeline :func:`build_pipeline` builds from
the config (passive liveness by default).  ``--slowdown X`` makes every
processed frame cost X times its measured time (the difference is slept
before the frame's decisions are delivered), standing in for a slower board;
see firmware_py/gallery/README.md ("Time to door") for the factors.

Time to door = wall time the accept reached the sinks minus the wall time the
first frame with a usable face was released by the camera (the first frame
whose nearest face passes the gate's live quality limits, found by a separate
pass over the timed frames before timing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.capture.base import Camera, EndOfStream
from firmware_py.config import load, with_changes
from firmware_py.errors import UsageError

SIZE = (640, 480)


class PacedFrames(Camera):
    """Pre-decoded frames released at their timestamps in real time, then the end of the stream."""

    def __init__(self, frames: list[np.ndarray], ts: list[float], name: str) -> None:
        super().__init__()
        self.frames, self.ts, self.name = frames, ts, name
        self._i = 0
        self._open = False
        self.t0: float | None = None  # monotonic time the first frame was released

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def release_time(self, i: int) -> float:
        assert self.t0 is not None
        return self.t0 + (self.ts[i] - self.ts[0])

    def _read_image(self, timeout: float | None) -> tuple[np.ndarray, float] | None:
        if self._i >= len(self.frames):
            raise EndOfStream(self.name)
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        due = self.release_time(self._i)
        if due > now:
            wait = due - now
            if timeout is not None and wait > timeout:
                time.sleep(timeout)
                return None
            time.sleep(wait)
        i, self._i = self._i, self._i + 1
        return self.frames[i], self.ts[i]


class SlowedPipeline:
    """The pipeline as the daemon sees it, each ``process`` stretched to ``factor`` times its measured time."""

    def __init__(self, pipeline: Any, factor: float) -> None:
        self._pipeline = pipeline
        self.factor = factor
        self.processed: list[int] = []  # frame indices, in order
        self.busy_ms: list[float] = []  # measured (unstretched) frame times
        self.embedded = 0

    def process(self, frame: Any) -> Any:
        t = time.perf_counter()
        res = self._pipeline.process(frame)
        el = time.perf_counter() - t
        if self.factor > 1.0:
            time.sleep(el * (self.factor - 1.0))
        self.processed.append(int(frame.index))
        self.busy_ms.append(el * 1e3)
        self.embedded += int(res.embedded)
        return res

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)


@dataclass
class _Recorder:
    """A decision sink noting when each decision reached the sinks."""

    got: list[tuple[float, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_decision(self, decision: Any) -> None:
        with self.lock:
            self.got.append((time.monotonic(), decision))


@dataclass
class Clip:
    path: Path
    person: str
    frames: list[np.ndarray]  # timed part, RGBX 640x480
    ts: list[float]
    enrol: list[np.ndarray]  # frames after the timed part


#: Seconds after the timed part decoded for enrolment (a long clip is not held in memory whole).
ENROL_WINDOW_S = 3.0


def decode_until(path: Path, seconds: float) -> tuple[list[np.ndarray], list[float]]:
    """The clip's frames up to ``seconds`` after its first, as 640x480 RGBX (bench pipeline's decoding)."""
    import av
    from PIL import Image

    frames: list[np.ndarray] = []
    ts: list[float] = []
    try:
        with av.open(str(path)) as c:
            for f in c.decode(c.streams.video[0]):
                t = float(f.time) if f.time is not None else len(ts) / 25.0
                if ts and t - ts[0] > seconds:
                    break
                img = f.to_image().convert("RGB").resize(SIZE, Image.Resampling.BILINEAR).convert("RGBX")
                frames.append(np.ascontiguousarray(np.asarray(img)))
                ts.append(t)
    except (av.error.FFmpegError, OSError) as exc:
        raise UsageError(f"cannot decode {path}: {exc}") from None
    if not frames:
        raise UsageError(f"{path} has no decodable video frames")
    return frames, ts


def load_clip(path: Path, timed_s: float) -> Clip:
    frames, ts = decode_until(path, timed_s + ENROL_WINDOW_S)
    t0 = ts[0]
    cut = next((i for i, t in enumerate(ts) if t - t0 >= timed_s), len(ts))
    if cut >= len(ts):
        raise UsageError(
            f"{path}: only {ts[-1] - t0:.2f} s long; nothing is left after the {timed_s:g} s timed part to enrol from (fix: lower --timed-s)"
        )
    person = path.stem.replace(" ", "_")[:60] or "clip"
    return Clip(path, person, frames[:cut], ts[:cut], frames[cut:])


def enrol_descriptors(clip: Clip, analyzer: Any, embedder: Any, mirror: bool, n: int) -> list[np.ndarray]:
    """Descriptors of ``n`` frames spread over the part after the timed one (frames without a face skipped)."""
    from firmware_py.capture.frame import Frame
    from firmware_py.vision.embedding import describe_face

    out = []
    for i in np.linspace(0, len(clip.enrol) - 1, num=min(len(clip.enrol), 4 * n)).round().astype(int):
        analyzer.reset()
        obs = analyzer.process(Frame.from_rgbx(clip.enrol[i], 0.0, 0, "enrol")).primary
        if obs is not None and obs.chips is not None and obs.quality is not None and not obs.quality.failures(analyzer.quality_limits):
            out.append(describe_face(embedder, obs.chips, mirror))
        if len(out) >= n:
            break
    analyzer.reset()
    if not out:
        raise UsageError(f"{clip.path}: no frame after the timed part passes enrolment's quality checks (fix: lower --timed-s)")
    return out


def first_usable(clip: Clip, analyzer: Any, limits: Any) -> int | None:
    """Index of the first timed frame whose nearest face passes the gate's live quality limits (tracker running, as live)."""
    from firmware_py.capture.frame import Frame
    from firmware_py.pipeline.loop import quality_verdict

    analyzer.reset()
    try:
        for i, (img, t) in enumerate(zip(clip.frames, clip.ts, strict=True)):
            obs = analyzer.process(Frame.from_rgbx(img, t, i, "probe")).primary
            if obs is not None and obs.chip is not None and quality_verdict(obs.quality, limits)[0]:
                return i
        return None
    finally:
        analyzer.reset()


def pct(v: list[float], q: float) -> float | None:
    return round(float(np.percentile(v, q)), 3) if v else None


def summary(times: list[float]) -> dict[str, Any]:
    return {"p50": pct(times, 50), "p95": pct(times, 95), "max": round(max(times), 3) if times else None}


def run_once(clip: Clip, cfg: Any, store: Any, analyzer: Any, embedder: Any, slowdown: float, usable: int | None) -> dict[str, Any]:
    from firmware_py.capture.latest import LatestFrame
    from firmware_py.pipeline.build import build_pipeline
    from firmware_py.pipeline.daemon import Daemon

    analyzer.reset()
    pipe, choice = build_pipeline(cfg, store=store, analyzer=analyzer, embedder=embedder)
    slowed = SlowedPipeline(pipe, slowdown)
    camera = PacedFrames(clip.frames, clip.ts, str(clip.path))
    source = LatestFrame(camera, None, stall_timeout_s=5.0)  # the daemon's buffer: newest frame, drops when busy
    rec = _Recorder()
    daemon = Daemon(source, slowed, sinks=[rec], decision_events=False)  # type: ignore[arg-type]
    daemon.run()
    stats = source.stats()
    accepted = [(t, d) for t, d in rec.got if d.accepted]
    start = camera.release_time(usable) if usable is not None and camera.t0 is not None else None
    to_door = round(accepted[0][0] - start, 3) if accepted and start is not None else None
    return {
        "clip": clip.path.name,
        "person": clip.person,
        "time_to_door_s": to_door,
        "accepted_person": accepted[0][1].person_id if accepted else None,
        "first_usable_frame": usable,
        "frames": len(clip.frames),
        "captured": stats.captured,
        "processed": len(slowed.processed),
        "dropped": stats.dropped,
        "embedded": slowed.embedded,
        "frame_ms_p50": pct(slowed.busy_ms, 50),
        "accepted_distance": accepted[0][1].distance if accepted else None,
        "rejects": [{"reason": d.reason, "person": d.person_id, "distance": d.distance, "detail": d.detail} for _, d in rec.got if not d.accepted],
        "liveness": next((d.liveness.policy for _, d in rec.got if d.liveness is not None), cfg.liveness.policy),
        "threshold": {"value": round(choice.value, 4), "source": choice.source},
    }


def run(sources: list[Path], cfg: Any, slowdown: float = 1.0, timed_s: float = 2.5, enrol_frames: int = 3, repeats: int = 1) -> dict[str, Any]:
    from firmware_py.capture.frame import Frame
    from firmware_py.gallery.blas import limit_blas_threads
    from firmware_py.gallery.store import Person, Template, open_from_config
    from firmware_py.pipeline.build import build_analyzer, build_pipeline, live_quality_limits
    from firmware_py.vision.embedding import load_embedder

    if slowdown < 1.0:
        raise UsageError(f"--slowdown {slowdown:g}: must be >= 1 (1 = this machine's own speed)")
    limit_blas_threads(1)
    clips = []
    for i, p in enumerate(sources, 1):
        print(f"  decoding {p.name} ({i}/{len(sources)})", file=sys.stderr, flush=True)
        clips.append(load_clip(p, timed_s))
    if len({c.person for c in clips}) != len(clips):
        raise UsageError("two --source clips have the same file name; each clip is one person")
    embedder = load_embedder(cfg)
    analyzer = build_analyzer(cfg)
    scratch = tempfile.TemporaryDirectory(prefix="kaoclock-walkup-")
    bcfg = with_changes(cfg, {"device.data_dir": scratch.name})
    site = cfg.device.site
    out_clips: list[dict[str, Any]] = []
    try:
        with open_from_config(bcfg) as store:
            for c in clips:
                descs = enrol_descriptors(c, analyzer, embedder, cfg.recognition.mirror_average, enrol_frames)
                store.upsert_person(Person(c.person, c.person, (site,), tuple(Template(d, embedder.version, "walkup-enrol") for d in descs)))
            limits = live_quality_limits(bcfg, analyzer)
            usable = {c.person: first_usable(c, analyzer, limits) for c in clips}
            # Warm-up (interpreter allocation, caches) on a few frames, outside any timing.
            warm, _ = build_pipeline(bcfg, store=store, analyzer=analyzer, embedder=embedder)
            for k, img in enumerate(clips[0].frames[:5]):
                warm.process(Frame.from_rgbx(img, -10.0 + 0.04 * k, k, "warmup"))
            for r in range(repeats):
                for c in clips:
                    print(f"  walk-up {c.path.name} (run {r + 1}/{repeats})", file=sys.stderr, flush=True)
                    res = run_once(c, bcfg, store, analyzer, embedder, slowdown, usable[c.person])
                    res["run"] = r
                    out_clips.append(res)
    finally:
        scratch.cleanup()
    times = [c["time_to_door_s"] for c in out_clips if c["time_to_door_s"] is not None]
    wrong = [c for c in out_clips if c["accepted_person"] not in (None, c["person"])]
    reasons: dict[str, int] = {}
    for oc in out_clips:
        for rj in oc["rejects"]:
            reasons[rj["reason"]] = reasons.get(rj["reason"], 0) + 1
    per_clip = {}
    for c in clips:
        ts = [x["time_to_door_s"] for x in out_clips if x["person"] == c.person and x["time_to_door_s"] is not None]
        per_clip[c.path.name] = summary(ts) | {"runs": repeats, "accepted": len(ts)}
    return {
        "slowdown": slowdown,
        "timed_s": timed_s,
        "enrol_frames": enrol_frames,
        "repeats": repeats,
        "gallery_persons": len(clips),
        "liveness": cfg.liveness.policy,
        "align_source": cfg.vision.align.source,
        "mirror_average": cfg.recognition.mirror_average,
        "decision_k_n": [cfg.decision.k, cfg.decision.n],
        "walkups": len(out_clips),
        "accepted": len(times),
        "wrong_person_accepted": len(wrong),
        "not_accepted": len(out_clips) - len(times),
        "time_to_door_s": summary(times),
        "per_clip": per_clip,
        "frames": {k: sum(c[k] for c in out_clips) for k in ("captured", "processed", "dropped", "embedded")},
        "rejects": reasons,
        "runs": out_clips,
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("walkup", help="time from a usable face to the door, clips replayed in real time through the daemon's capture and loop")
    p.add_argument("--source", type=Path, nargs="+", required=True, metavar="CLIP", help="video clips, one walk-up (one person) each")
    p.add_argument("--slowdown", type=float, default=1.0, help="every processed frame costs X times its measured time (default 1)")
    p.add_argument("--board", choices=("pi4", "pi5"), help="set --slowdown to this board's factor (firmware_py/bench/boards.py)")
    p.add_argument("--timed-s", type=float, default=2.5, help="seconds replayed as the walk-up; enrolment uses frames after them (default 2.5)")
    p.add_argument("--enrol-frames", type=int, default=3, help="templates per person, from frames after the timed part (default 3)")
    p.add_argument("--repeats", type=int, default=1, help="replay every clip this many times (default 1)")
    p.add_argument("--config", help="TOML config file (default: the shipped defaults, passive liveness on)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_walkup)


def cmd_walkup(args: argparse.Namespace) -> int:
    if args.enrol_frames < 1 or args.repeats < 1 or args.timed_s <= 0:
        raise UsageError("--enrol-frames and --repeats must be >= 1 and --timed-s > 0")
    missing = [str(p) for p in args.source if not p.is_file()]
    if missing:
        raise UsageError(f"no video at {', '.join(missing)}")
    if args.board:
        from firmware_py.bench.boards import board

        args.slowdown = board(args.board).slowdown
    out = run(args.source, load(args.config), args.slowdown, args.timed_s, args.enrol_frames, args.repeats)
    print(json.dumps(out, indent=2))
    return 0
