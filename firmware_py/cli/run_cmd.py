"""`kaoclock run`: the reader's main job."""

from __future__ import annotations

import argparse

from firmware_py.config import load
from firmware_py.models.manifest import ModelError, load_manifest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the reader (without --config: the embedded demo)")
    p.add_argument("--config", help="TOML config file (default: the embedded demo configuration)")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    manifest = load_manifest()
    bad = [r for r in (manifest.check_file(m.name, cfg.models.dir) for m in manifest.select(["runtime"])) if not r.ok]
    if bad:
        raise ModelError("refusing to start:\n" + "\n".join(f"  - {r.problem}" for r in bad))
    print(f"kaoclock: config ok, {len(manifest.select(['runtime']))} runtime model(s) verified in {cfg.models.dir}")
    print("kaoclock: the recognition pipeline is not built yet; nothing more to run")
    return 0
