"""`kaoclock config check|example|schema|get`."""

from __future__ import annotations

import argparse
import json

from firmware_py.config import Config, ConfigError, get_value, load
from firmware_py.config.loader import is_secret
from firmware_py.config.schema import example_toml, json_schema
from firmware_py.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check, document and read configuration files")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True

    c = csub.add_parser("check", help="validate a config file; list every problem with its fix")
    c.add_argument("file", nargs="?", help="TOML config file (default: --config, else $KAOCLOCK_CONFIG)")
    c.add_argument("--config", help=argparse.SUPPRESS)
    c.add_argument("--json", action="store_true", help='print {"file", "ok", "problems": [{"key", "message", "fix"}]}')
    c.set_defaults(func=cmd_check)

    e = csub.add_parser("example", help="print a documented config with every key at its default")
    e.set_defaults(func=cmd_example)

    s = csub.add_parser("schema", help="print the config's JSON Schema")
    s.set_defaults(func=cmd_schema)

    g = csub.add_parser("get", help="print the value of a dotted key (e.g. camera.width)")
    g.add_argument("key")
    g.add_argument("--config", help="config file (default: the embedded default)")
    g.add_argument("--json", action="store_true", help='print {"key", "value"}')
    g.set_defaults(func=cmd_get)


def cmd_check(args: argparse.Namespace) -> int:
    path = args.file or args.config
    if path is None:
        raise UsageError("which file? give it: kaoclock config check FILE (or set $KAOCLOCK_CONFIG)")
    try:
        load(path)
    except ConfigError as exc:
        if not args.json:
            raise  # every problem, on stderr, exit status 2
        problems = [{"key": p.key, "message": p.message, "fix": p.fix} for p in exc.problems]
        print(json.dumps({"file": str(path), "ok": False, "problems": problems}, indent=2))
        return exc.exit_code
    print(json.dumps({"file": str(path), "ok": True, "problems": []}, indent=2) if args.json else f"config {path}: ok")
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    print("# kaoclock configuration. Every key is optional; shown here at its default.\n")
    print(example_toml(Config))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(Config, "kaoclock configuration"), indent=2))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    value = get_value(cfg, args.key)
    secret = is_secret(args.key)
    if args.json:
        print(json.dumps({"key": args.key, "value": "<secret>" if secret else value}))
    else:
        print("<secret>" if secret else json.dumps(value))
    return 0
