"""`kaoclock status`: the reader's health, read locally (the same telemetry the daemon publishes)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="gallery, outbox, models, clock, disk, memory, daemon and update slots of this reader")
    p.add_argument("--config", help="config file (default: $KAOCLOCK_CONFIG, else the embedded default)")
    p.add_argument("--json", action="store_true", help="the telemetry snapshot as JSON (plus daemon and update)")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from firmware_py.config import load
    from firmware_py.provision.status import local_status, render

    # A missing section is already explained in the output; the collector's warning would say it twice.
    logging.getLogger("firmware_py.telemetry.collector").setLevel(logging.ERROR)
    path = args.config
    cfg = load(path)
    snap = local_status(cfg, Path(path) if path else None)
    print(json.dumps(snap, indent=2, default=str) if args.json else render(snap))
    return 0
