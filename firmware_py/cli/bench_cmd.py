"""`kaoclock bench ...`: speed and memory measurements that print JSON.

Each measurement lives in its own room's module exposing
``register(bench_subparsers)``; list it in :data:`BENCH_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib

BENCH_MODULES: list[str] = [
    "firmware_py.outbox.bench",
    "firmware_py.gate.bench",
    "firmware_py.vision.bench",
    "firmware_py.bench.match",
    "firmware_py.bench.pipeline",
    "firmware_py.bench.walkup",
    "firmware_py.liveness.bench",
    "firmware_py.mqtt.bench_transfer",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed and memory benchmarks (JSON on stdout)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH")
    bsub.required = True
    for name in BENCH_MODULES:
        importlib.import_module(name).register(bsub)
