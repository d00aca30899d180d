"""`kaoclock bench ...`: speed and memory measurements that print JSON.

Each measurement lives in its own package's module exposing
``register(bench_subparsers)``; list it in :data:`BENCH_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib

BENCH_MODULES: list[str] = [
    "firmware_py.bench.outbox",
    "firmware_py.bench.gate",
    "firmware_py.bench.vision",
    "firmware_py.bench.match",
    "firmware_py.bench.pipeline",
    "firmware_py.bench.liveness",
    "firmware_py.bench.transfer",
    "firmware_py.bench.backend",
    "firmware_py.bench.walkup",
    "firmware_py.bench.book",
    "firmware_py.bench.boards",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed and memory benchmarks (JSON on stdout)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH")
    bsub.required = True
    for name in BENCH_MODULES:
        importlib.import_module(name).register(bsub)
    for leaf in bsub.choices.values():  # the report is always JSON; --json is accepted and silences the progress bar
        if "--json" not in leaf._option_string_actions:
            leaf.add_argument("--json", action="store_true", help="the report is JSON either way; no progress bar")
