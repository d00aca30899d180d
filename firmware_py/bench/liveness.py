"""``kaoclock bench liveness``: what the liveness stage adds per frame, next to the front-end's own cost.

Runs the daemon's front-end and the liveness stage on the same photo, frame
after frame (a fresh track every ``window`` frames so verdicts are made as at
the gate), and prints per-frame milliseconds of each (median, 95th
percentile, mean) in one run, so their ratio is meaningful on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("liveness", help="per-frame cost of the liveness stage vs the face front-end (JSON)")
    p.add_argument("--image", type=Path, required=True, help="a photo with a face (any size)")
    p.add_argument("--frames", type=int, default=200, help="frames to time (default 200)")
    p.add_argument("--policy", choices=("passive", "strict"), default="passive")
    p.add_argument("--config", type=Path, help="kaoclock config (default: built-in)")
    p.set_defaults(func=_run)


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": round(float(np.median(a)), 3), "p95": round(float(np.percentile(a, 95)), 3), "mean": round(float(a.mean()), 3)}


def _run(args: argparse.Namespace) -> int:
    from firmware_py.config import load, with_changes
    from firmware_py.errors import KaoclockError
    from firmware_py.liveness.frontend import FrontEnd, largest
    from firmware_py.liveness.presentations import load_rgb
    from firmware_py.liveness.stage import LivenessDetector

    if args.frames < 1:
        raise KaoclockError(f"--frames {args.frames}: give at least 1")
    cfg = with_changes(load(args.config), {"liveness.policy": args.policy})
    image = load_rgb(args.image)
    front = FrontEnd(cfg)
    stage = LivenessDetector.from_config(cfg)
    window = 25
    front_ms: list[float] = []
    live_ms: list[float] = []
    verdicts = 0
    for i in range(args.frames):
        if i % window == 0:
            front.reset()
        t0 = time.perf_counter()
        frame, obs = front.analyze(image, (i % window) / 25.0, i, str(args.image))
        t1 = time.perf_counter()
        o = largest(obs)
        if o is None:
            raise KaoclockError(f"no face found in {args.image}: give a photo with a face")
        stage.observe(o, frame)
        v = stage.verdict(o.track_id)
        if (i + 1) % window == 0 and v is None:
            v = stage.conclude(o.track_id)
        if v is not None:
            verdicts += 1
            stage.forget(o.track_id)
        t2 = time.perf_counter()
        front_ms.append((t1 - t0) * 1000)
        live_ms.append((t2 - t1) * 1000)
    out = {
        "image": str(args.image),
        "shape": list(image.shape),
        "policy": args.policy,
        "frames": args.frames,
        "verdicts": verdicts,
        "ms_per_frame": _stats(live_ms),
        "frontend_ms_per_frame": _stats(front_ms),
        "ratio_mean": round(float(np.mean(live_ms) / np.mean(front_ms)), 3),
    }
    print(json.dumps(out, indent=1))
    return 0
