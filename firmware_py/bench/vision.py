"""`kaoclock bench vision`: per-stage latency of the vision pipeline on a video's frames.

The frames are decoded and scaled to the camera mode (default 640x480)
before timing, then each goes through :class:`FaceAnalyzer` once, with every
stage (alignment and quality included) run on every frame.  Wall
times (``perf_counter``) and this thread's CPU times (``thread_time``, which
a busy shared machine disturbs less) are both reported; ``overhead_ms`` is
everything outside the two models' ``invoke``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_py.config import load
from firmware_py.config.loader import with_changes
from firmware_py.errors import UsageError

if TYPE_CHECKING:
    from firmware_py.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vision", help="per-stage ms of detect/track/landmarks/align/quality on a video (JSON)")
    p.add_argument("--source", required=True, help="a video file (or image folder) to replay")
    p.add_argument("--embed", action="store_true", help="also time describing the face: the configured chips vs the first chip alone")
    p.add_argument("--size", default="640x480", help="scale frames to this camera mode before timing (default 640x480)")
    p.add_argument("--frames", type=int, default=300, help="at most this many frames (default 300)")
    p.add_argument("--resample", choices=("fast", "dlib"), help="override [vision.align] resample")
    p.add_argument("--config", help="config file; default: built-in")
    p.add_argument("--json", action="store_true", help="JSON on stdout")
    p.set_defaults(func=cmd_bench)


def _pct(v: list[float]) -> dict[str, float]:
    a = np.asarray(v, np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3)}


def _embed_cost(cfg: Config, analyzer: Any, frames: list[Any]) -> dict[str, Any]:
    """What describing a face costs on frames that get embedded: the config's chips vs the first chip alone, same frames.

    (The extra alignments' warps run when ``obs.chips`` is first read, before
    timing; they cost about 0.3 ms, see ``stages_ms.align``.)

    The decision needs ``decision.k`` agreeing embedded frames, so the added
    cost per decision is about k times the per-frame difference.
    """
    from firmware_py.vision.embedding import describe_face, load_embedder

    emb = load_embedder(cfg)
    mirror = cfg.recognition.mirror_average
    full, first = [], []
    n_chips = 0
    for i, f in enumerate(frames):
        obs = analyzer.process(f).primary
        if obs is None:
            continue
        chips = obs.chips
        runs = {"full": chips, "first": chips[:1]}
        ms = {}
        for name in ("full", "first") if i % 2 == 0 else ("first", "full"):  # alternate which runs with warm caches
            t0 = time.perf_counter()
            describe_face(emb, runs[name], mirror)
            ms[name] = (time.perf_counter() - t0) * 1000
        full.append(ms["full"])
        first.append(ms["first"])
        n_chips = len(chips)
    p_full, p_first = float(np.median(full)), float(np.median(first))
    k = cfg.decision.k
    return {
        "frames": len(full),
        "align_source": cfg.vision.align.source,
        "mirror_average": mirror,
        "invokes_per_frame": n_chips * (2 if mirror else 1),
        "ms_p50": round(p_full, 2),
        "ms_p50_first_chip_only": round(p_first, 2),
        "added_ms_per_embedded_frame": round(p_full - p_first, 2),
        "decision_k": k,
        "added_ms_per_decision": round(k * (p_full - p_first), 1),
    }


def cmd_bench(args: argparse.Namespace) -> int:
    from firmware_py.capture.base import frames_of
    from firmware_py.capture.replay import replay
    from firmware_py.vision.analyzer import STAGES, FaceAnalyzer

    cfg = load(args.config)
    if args.resample:
        cfg = with_changes(cfg, {"vision.align.resample": args.resample})
    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {args.size!r} is not WIDTHxHEIGHT (fix: e.g. --size 640x480)") from None
    cam = replay(Path(args.source), size=(w, h))
    with cam:
        frames = list(frames_of(cam, args.frames))
    if not frames:
        raise UsageError(f"{args.source} gave no frames")
    analyzer = FaceAnalyzer.from_config(cfg)
    analyzer.lazy = False  # every stage on every frame: this bench is about their cost
    analyzer.process(frames[0])  # warm-up (first invoke allocates)
    analyzer.tracker.reset()
    total, cpu, invoke, overhead = [], [], [], []
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    models: dict[str, list[float]] = {}
    with_face = 0
    for f in frames:
        c0 = time.thread_time()
        r = analyzer.process(f)
        cpu.append((time.thread_time() - c0) * 1000)
        total.append(r.total_ms)
        invoke.append(r.model_invoke_ms)
        overhead.append(r.total_ms - r.model_invoke_ms)
        with_face += bool(r.observations)
        for k, v in r.stages_ms.items():
            stages[k].append(v)
        for k, v in r.invoke_ms.items():
            models.setdefault(k, []).append(v)
    p50_total, p50_invoke = float(np.median(total)), float(np.median(invoke))
    out: dict[str, Any] = {
        "source": str(args.source),
        "frames": len(frames),
        "size": [w, h],
        "frames_with_face": with_face,
        "resample": cfg.vision.align.resample,
        "align_source": cfg.vision.align.source,
        "frame_ms": _pct(total),
        "frame_cpu_ms": _pct(cpu),
        "stages_ms": {k: _pct(v) for k, v in stages.items()},
        "invoke_ms": {k: _pct(v) for k, v in models.items()},
        "model_invoke_ms_p50": round(p50_invoke, 3),
        "overhead_ms": _pct(overhead),
        "overhead_ratio": round(p50_total / p50_invoke, 3) if p50_invoke else None,
        "fps": round(1000 / p50_total, 1),
        "rss_mb_peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": cfg.models.threads,
    }
    if args.embed:
        out["embed"] = _embed_cost(cfg, analyzer, frames)
    print(json.dumps(out, indent=2))
    return 0
