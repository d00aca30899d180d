"""`kaoclock models fetch|verify`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from firmware_py.config import load
from firmware_py.models.fetch import fetch
from firmware_py.models.manifest import load_manifest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="fetch, verify and build the model files")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    f = msub.add_parser("fetch", help="download the pinned model artefacts, check their sha256, extract the models")
    f.add_argument("--config", help="config file whose [models] dir receives the files")
    f.add_argument("--dir", type=Path, help="models directory (overrides the config)")
    f.add_argument("--role", action="append", choices=["runtime", "build", "reference"], help="only models of this role (repeatable; default all)")
    f.set_defaults(func=cmd_fetch)

    v = msub.add_parser("verify", help="check every model file's sha256 (and the embedder's parity)")
    v.add_argument("--config", help="config file")
    v.add_argument("--dir", type=Path, help="models directory (overrides the config)")
    v.add_argument("--role", action="append", choices=["runtime", "build", "reference"], help="only models of this role")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.set_defaults(func=cmd_verify)


def models_dir(args: argparse.Namespace) -> Path:
    return args.dir if args.dir else load(args.config).models.dir


def cmd_fetch(args: argparse.Namespace) -> int:
    report = fetch(load_manifest(), models_dir(args), args.role)
    for r in report:
        print(f"{r['action']:>8}  {r['name']}  {r['path']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    manifest = load_manifest()
    mdir = models_dir(args)
    results = [manifest.check_file(m.name, mdir) for m in manifest.select(args.role)]
    out = {"models": [{"name": r.name, "sha256": r.found, "ok": r.ok, **({"problem": r.problem} if r.problem else {})} for r in results]}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in results:
            print(f"{'ok' if r.ok else 'FAIL':>4}  {r.name}" + (f"  {r.problem}" if r.problem else ""))
    return 0 if all(r.ok for r in results) else 3
