"""Entry point of the `kaoclock` command.

Each command group lives in its own module exposing ``register(subparsers)``;
a command's handler takes the parsed arguments and returns an exit status.
Errors derived from :class:`KaoclockError` end the command with their message
on stderr and their own exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from firmware_py import __version__, progress
from firmware_py.errors import ExitCode, KaoclockError, UsageError, exit_code_table

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


# Accepted spellings of a command (British and American): alias -> the command's name.
ALIASES = {"enrol": "enroll"}

# Options every command takes, before or after its name (`kaoclock -v status` = `kaoclock status -v`).
GLOBAL_HELP = {
    "verbose": "more log output (-vv for debug)",
    "config": "config file (default: $KAOCLOCK_CONFIG, else the embedded default)",
    "json": "print the report as JSON on stdout (and no progress display)",
}


class Parser(argparse.ArgumentParser):
    """argparse with errors that suggest the nearest command (\"did you mean\") and exit status 2."""

    def error(self, message: str) -> NoReturn:
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2)) or [c.strip() for c in m.group(2).split(",")]
            close = difflib.get_close_matches(m.group(1), choices + list(ALIASES), n=1)
            if close:
                message += f"; did you mean '{ALIASES.get(close[0], close[0])}'?"
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}\n")


def _add_global_options(p: argparse.ArgumentParser, top: bool) -> None:
    """-v, --config and --json on ``p`` unless it already has them.

    The top-level parser stores them under ``global_*`` so a subcommand's own
    defaults never overwrite what was given before its name; :func:`merge_globals` joins them.
    """
    have = p._option_string_actions
    if "-v" not in have:
        # Below the top, no default: a group's -v (`config -v check`) is not reset by its action's parser.
        default = 0 if top else argparse.SUPPRESS
        dest = "global_verbose" if top else "sub_verbose"
        p.add_argument("-v", "--verbose", dest=dest, action="count", default=default, help=GLOBAL_HELP["verbose"])
    if top:
        p.add_argument("--config", dest="global_config", metavar="FILE", help=GLOBAL_HELP["config"])
        p.add_argument("--json", dest="global_json", action="store_true", help=GLOBAL_HELP["json"])


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser under ``parser`` (command groups and their actions), each once."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in dict.fromkeys(action.choices.values()):
                found.append(sp)
                found += _leaves(sp)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kaoclock",
        description="Face-recognition time clock and door reader.",
        epilog="exit status:\n" + exit_code_table() + "\n\n-v, --config and --json may also follow the command: kaoclock status -v --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kaoclock {__version__}")
    _add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for cmd, alias in ((c, a) for a, c in ALIASES.items()):
        sub._name_parser_map[alias] = sub._name_parser_map[cmd]  # accepted, not listed twice in --help
    for sp in _leaves(parser):
        _add_global_options(sp, top=False)
    return parser


def merge_globals(args: argparse.Namespace) -> None:
    """Join the options given before the command with the same ones given after it.

    ``--config`` / ``--json`` before the command reach a command that takes
    them; to one that does not they are a usage error, never silently ignored.
    """
    args.verbose = args.global_verbose + getattr(args, "sub_verbose", 0)
    if args.global_config is not None:
        if "config" not in vars(args):
            raise UsageError(f"`kaoclock {_command_name(args)}` takes no --config")
        if args.config is None:
            args.config = Path(args.global_config)
    if args.global_json:
        if "json" not in vars(args):
            raise UsageError(f"`kaoclock {_command_name(args)}` has no JSON output")
        args.json = True


def _command_name(args: argparse.Namespace) -> str:
    parts = [args.command] + [v for k, v in vars(args).items() if k.endswith("_command") and isinstance(v, str)]
    return " ".join(parts)


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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else int(ExitCode.USAGE)
    try:
        merge_globals(args)
    except UsageError as exc:
        print(f"kaoclock: {exc}", file=sys.stderr)
        return exc.exit_code
    config_from_env(args)
    progress.set_quiet(bool(getattr(args, "json", False)))
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KaoclockError as exc:
        print(f"kaoclock: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return 0
