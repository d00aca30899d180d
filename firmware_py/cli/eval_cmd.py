"""`kaoclock eval ...`: accuracy evaluations on real data that print JSON.

Each evaluation lives in its own package's module exposing
``register(eval_subparsers)``; list it in :data:`EVAL_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib

EVAL_MODULES: list[str] = [
    "firmware_py.eval.vision",
    "firmware_py.eval.lfw",
    "firmware_py.eval.identify",
    "firmware_py.eval.tune",
    "firmware_py.eval.calibration",
    "firmware_py.eval.liveness",
    "firmware_py.eval.variants",
    "firmware_py.eval.site_threshold",
    "firmware_py.eval.small_site",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy evaluations on real data (JSON on stdout)")
    esub = p.add_subparsers(dest="eval_command", metavar="EVAL")
    esub.required = True
    for name in EVAL_MODULES:
        importlib.import_module(name).register(esub)
    for leaf in esub.choices.values():  # the report is always JSON; --json is accepted and silences the progress bar
        if "--json" not in leaf._option_string_actions:
            leaf.add_argument("--json", action="store_true", help="the report is JSON either way; no progress bar")
