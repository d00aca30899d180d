"""`kaoclock health`: the check a new release must pass before it is committed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("health", help="check config, models, data dir and camera frames (exit 0 = healthy)")
    p.add_argument("--config", type=Path, help="config file (default $KAOCLOCK_CONFIG, else the built-in defaults)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--frames", type=int, default=3, help="frames to read from the camera (default 3)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds allowed for reading them (default 10)")
    p.set_defaults(func=cmd_health)


def cmd_health(args: argparse.Namespace) -> int:
    from firmware_py.service.health import run_health

    report = run_health(args.config, frames=max(1, args.frames), frame_timeout=args.timeout)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"kaoclock {report['version']} at {report['tree']}: {'healthy' if report['ok'] else 'NOT HEALTHY'}")
        for c in report["checks"]:
            print(f"  {c['status']:>4}  {c['name']:<17} {c['detail']}")
    return 0 if report["ok"] else 1
