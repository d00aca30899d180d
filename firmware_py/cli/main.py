"""Entry point of the `kaoclock` command.

Each command group lives in its own module exposing ``register(subparsers)``;
a command's handler takes the parsed arguments and returns an exit status.
Errors derived from :class:`KaoclockError` end the command with their message
on stderr and their own exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from firmware_py import __version__
from firmware_py.errors import KaoclockError

# Command-group modules, in the order `kaoclock --help` lists them.
COMMAND_MODULES = [
    "firmware_py.cli.run_cmd",
    "firmware_py.cli.config_cmd",
    "firmware_py.cli.models_cmd",
    "firmware_py.cli.eval_cmd",
    "firmware_py.cli.bench_cmd",
    "firmware_py.cli.keys_cmd",
    "firmware_py.cli.backend_cmd",
    "firmware_py.cli.hw_cmd",
    "firmware_py.cli.console_cmd",
    "firmware_py.cli.card_cmd",
    "firmware_py.cli.enroll_cmd",
    "firmware_py.cli.gallery_cmd",
    "firmware_py.cli.health_cmd",
    "firmware_py.cli.update_cmd",
    "firmware_py.cli.release_cmd",
    "firmware_py.cli.provision_cmd",
    "firmware_py.cli.status_cmd",
    "firmware_py.cli.snapshot_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaoclock", description="Face-recognition time clock and door reader.")
    parser.add_argument("--version", action="version", version=f"kaoclock {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def config_from_env(args: argparse.Namespace) -> None:
    """``$KAOCLOCK_CONFIG`` is the default of every command's ``--config`` (the one place that says so).

    The reader's unit and its ``/usr/local/bin/kaoclock`` set it, so
    ``kaoclock status`` on a reader reads the reader's config like the daemon.
    """
    env = os.environ.get("KAOCLOCK_CONFIG")
    if env and "config" in vars(args) and args.config is None:
        args.config = Path(env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config_from_env(args)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KaoclockError as exc:
        print(f"kaoclock: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
