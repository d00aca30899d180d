"""The boards' budget: how much slower than this machine a Pi runs the reader's models.

The one place the factors live: ``kaoclock bench walkup --board pi4|pi5`` takes
its ``--slowdown`` from here, and ``kaoclock bench boards`` multiplies the
per-model invoke times measured here by them (the table in device/README.md).

No Pi was available and emulation says nothing about speed (QEMU's TCG is
10-100 x slower than the board it stands for), so the factors are estimates
chained from published single-thread figures; the derivation, with sources,
is in firmware_py/gallery/README.md ("Which factor is a Pi") and device/README.md.
A run on a real board replaces them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.errors import UsageError


@dataclass(frozen=True)
class Board:
    name: str
    cpu: str
    slowdown: float  # the factor the benches use: one single-threaded invoke on the board / the same on this machine
    low: float  # the range the published figures allow
    high: float
    basis: str


BOARDS: dict[str, Board] = {
    "pi4": Board(
        name="Raspberry Pi 4",
        cpu="Cortex-A72, 1.5 GHz (1.8 GHz on later boards), no int8 dot-product instructions",
        slowdown=15.0,
        low=13.0,
        high=25.0,
        basis="ncnn benchncnn one-thread chain (Ryzen 5950X PR #3543 -> Kirin 970 A73 -> A72 at 1.5 GHz) gives 13; "
        "XNNPACK issue #814 (FP32 MobileNet V1 312 ms on one Pi 4 core) and the missing int8 dot product point higher; "
        "15 is the factor used since issue 18, 25 the pessimistic bound",
    ),
    "pi5": Board(
        name="Raspberry Pi 5",
        cpu="Cortex-A76, 2.4 GHz, int8 dot product (ARMv8.2 sdot)",
        slowdown=5.0,
        low=3.5,
        high=7.5,
        basis="ncnn benchncnn one-thread: Snapdragon 855+ A76 at 2.96 GHz is 1.4-3.4 x a 5950X core, scaled to 2.4 GHz "
        "and this core 1.5-3.5 x; Raspberry Pi's launch figure of 2-3 x a Pi 4 gives (13..15) / (2..3) = 4.3-7.5; "
        "5 is the factor used since issue 18",
    ),
}


def board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise UsageError(f"unknown board {name!r}; known: {', '.join(sorted(BOARDS))}") from None


def _invoke_ms(path: Path, repeats: int) -> dict[str, float]:
    """Single-threaded invoke time of one model on a fixed random input (CPU time of this thread, p50)."""
    from firmware_py.models.litert import load_interpreter

    interp = load_interpreter(path, threads=1)
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        shape, dtype = tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            x = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        else:
            x = rng.random(shape, dtype=np.float32).astype(dtype)
        interp.set_tensor(d["index"], x)
    interp.invoke()  # the first invoke allocates and packs weights
    cpu, wall = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        interp.invoke()
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    return {"cpu_ms_p50": round(float(np.median(cpu)), 3), "wall_ms_p50": round(float(np.median(wall)), 3)}


# How often each model runs for a face at the gate (the shipped config: facemesh alignment, mirror average,
# passive liveness with both MiniFASNet nets, K = 3 embedded frames per decision).
PER_FRAME = {"blazeface_short_range": 1, "facemesh": 1, "dlib_resnet_v1_int8": 2, "minifasnet_v2": 1, "minifasnet_v1se": 1}


def measure(models_dir: Path, repeats: int) -> dict[str, Any]:
    from firmware_py.models.manifest import load_manifest

    manifest = load_manifest()
    per_model: dict[str, Any] = {}
    for name, per in PER_FRAME.items():
        m = _invoke_ms(manifest.require(name, models_dir), repeats)
        per_model[name] = {**m, "invokes_per_frame": per}
    here = sum(v["cpu_ms_p50"] * v["invokes_per_frame"] for v in per_model.values())
    boards = {}
    for key, b in BOARDS.items():
        boards[key] = {
            **asdict(b),
            "invoke_ms": {n: round(v["cpu_ms_p50"] * b.slowdown, 1) for n, v in per_model.items()},
            "models_ms_per_frame": round(here * b.slowdown, 1),
            "models_ms_per_frame_range": [round(here * b.low, 1), round(here * b.high, 1)],
        }
    return {"repeats": repeats, "threads": 1, "here": {"models": per_model, "models_ms_per_frame": round(here, 2)}, "boards": boards}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("boards", help="per-model invoke times here and the estimates for a Pi 4 / Pi 5 (the factors of --board)")
    p.add_argument("--repeats", type=int, default=50, help="invokes per model (default 50)")
    p.add_argument("--config", help="config file (its [models] dir)")
    p.set_defaults(func=cmd_boards)


def cmd_boards(args: argparse.Namespace) -> int:
    from firmware_py.config import load

    if args.repeats < 1:
        raise UsageError("--repeats must be >= 1")
    print(json.dumps(measure(load(args.config).models.dir, args.repeats), indent=2))
    return 0
