"""``kaoclock bench liveness``: what the liveness stage adds per frame, next to the front-end's own cost.

Runs the daemon's front-end and the liveness stage on the same photo, frame
after frame (a fresh track every ``window`` frames so verdicts are made as at
the gate), and prints per-frame milliseconds of each (median, 95th
percentile, mean) in one run, so their ratio is meaningful on a busy machine.

``--parts``: where one frame's liveness time goes, each part timed in
interleaved rounds on the same face (the nets' crops, each net's invoke,
both nets as the stage runs them (``both_nets``: overlapped on two threads
with ``[liveness] parallel_nets``), the bad-input check, the texture cues); with ``--float32-from DATA`` also the
same nets rebuilt with float32 weights (TensorFlow needed, the ``models``
extra), to see whether the float16 weights cost anything at run time.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("liveness", help="per-frame cost of the liveness stage vs the face front-end (JSON)")
    p.add_argument("--image", type=Path, required=True, help="a photo with a face (any size)")
    p.add_argument("--frames", type=int, default=200, help="frames to time (default 200)")
    p.add_argument("--policy", choices=("passive", "strict"), default="passive")
    p.add_argument("--config", type=Path, help="kaoclock config (default: built-in)")
    p.add_argument("--parts", action="store_true", help="also time each part of a frame's liveness work (interleaved rounds)")
    p.add_argument("--float32-from", type=Path, metavar="DATA", help="with --parts: also float32-weight nets built from DATA/models-src")
    p.add_argument("--rounds", type=int, default=30, help="with --parts: rounds of 10 calls per part (default 30)")
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
    if args.parts:
        o = largest(front.analyze(image, 0.0, 0, str(args.image))[1])
        assert o is not None  # found above
        assert stage.learned is not None
        out["parallel_nets"] = stage.learned.parallel
        out["parts_ms"] = parts(stage.learned, image, tuple(float(v) for v in o.detection.box), args.rounds, args.float32_from)  # type: ignore[arg-type]
    print(json.dumps(out, indent=1))
    return 0


def _invoke(interp: Any, crop: np.ndarray) -> None:
    interp.set_tensor(interp.get_input_details()[0]["index"], crop[None].astype(np.float32))
    interp.invoke()


def parts(learned: Any, image: np.ndarray, box: tuple[float, float, float, float], rounds: int, f32_data: Path | None) -> dict[str, Any]:
    """Median ms per call of each part of one frame's liveness work, timed round-robin (the load hits all alike)."""
    from firmware_py.liveness import learned as lm
    from firmware_py.liveness.texture import frame_features

    xywh = lm.BOX_MAP.apply(box)
    calls: dict[str, Callable[[], object]] = {"input_problem": lambda: lm.input_problem(image, box)}
    for name, scale, interp, _, _ in learned._nets:
        calls[f"crop.{name}"] = partial(lm.crop, image, xywh, scale)
        calls[f"invoke.{name}"] = partial(_invoke, interp, lm.crop(image, xywh, scale)[0])
    if f32_data is not None:
        from firmware_py.convert import minifasnet_convert as mc
        from firmware_py.convert.minifasnet import load_network
        from firmware_py.convert.minifasnet_build import check_sources
        from firmware_py.models.litert import load_interpreter_from_bytes

        sources = check_sources(f32_data)
        for name, scale in lm.SCALES.items():
            it = load_interpreter_from_bytes(mc.convert(mc.fold(load_network(sources[name])), float16=False), 1)
            calls[f"invoke_float32.{name}"] = partial(_invoke, it, lm.crop(image, xywh, scale)[0])
    # Both nets as the stage calls them: crops and invokes, overlapped on two threads with [liveness] parallel_nets.
    calls["both_nets"] = partial(learned.probabilities, image, xywh)
    calls["texture_cues"] = lambda: frame_features(image, box)
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(max(1, rounds)):
        for k, f in calls.items():
            t = time.perf_counter()
            for _ in range(10):
                f()
            times[k].append((time.perf_counter() - t) * 100)  # ms per call
    return {k: round(float(np.median(v)), 3) for k, v in times.items()}
