"""`kaoclock update`: install a signed release A/B, check it, commit or roll back."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from firmware_py.config import Config, ConfigError, load

log = logging.getLogger("kaoclock.update")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "update",
        help="install a signed release bundle (A/B, health-checked, rolled back on failure)",
        description="Install a signed release into the inactive slot, switch to it, restart, check its health, "
        "then commit it or roll back automatically. Run as root on a reader.",
    )
    p.add_argument("bundle", nargs="?", type=Path, help="release bundle file (from `kaoclock release build`)")
    p.add_argument(
        "--config",
        type=Path,
        help="config file (default $KAOCLOCK_CONFIG; on a reader /etc/kaoclock/kaoclock.toml)",
    )
    act = p.add_mutually_exclusive_group()
    act.add_argument("--status", action="store_true", help="show the slots, what runs, and any update in progress")
    act.add_argument("--rollback", action="store_true", help="go back to the release in the other slot")
    act.add_argument("--boot-check", action="store_true", help="resolve an interrupted update before the service starts (the unit's ExecStartPre)")
    act.add_argument("--recover", action="store_true", help="resolve an interrupted update now and restart the service")
    act.add_argument("--staged", action="store_true", help="install the bundle the daemon staged (kaoclock-update.service)")
    act.add_argument("--init", type=Path, metavar="SOURCE", help="install the first release from a bundle or a checkout (install.sh)")
    p.add_argument("--venv", type=Path, help="with --init: use this existing venv for the release's dependencies")
    p.add_argument("--allow-downgrade", action="store_true", help="accept a bundle older than the running release")
    p.add_argument("--force", action="store_true", help="with --rollback: switch even to a slot not known to be good")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_update)


def _config(args: argparse.Namespace) -> Config:
    try:
        return load(args.config)
    except ConfigError as exc:
        if args.boot_check:
            # The boot check must work even when the config is one only a newer release accepts.
            log.warning("config refused by this release, using defaults for the boot check: %s", exc)
            return Config()
        raise


def _say_stderr(msg: str) -> None:
    print(f"kaoclock update: {msg}", file=sys.stderr, flush=True)


def build_updater(args: argparse.Namespace, cfg: Config) -> Any:
    from firmware_py.update.control import from_settings
    from firmware_py.update.updater import Settings, Updater

    settings = Settings.from_config(cfg, args.config)
    quiet = args.boot_check or args.staged
    if quiet:
        from firmware_py.service.logs import configure_logging

        configure_logging(cfg.logging.level, cfg.logging.format, identifier="kaoclock-update")
    return Updater(settings, from_settings(cfg.update.service, cfg.update.restart_command), say=log.info if quiet else _say_stderr)


def cmd_update(args: argparse.Namespace) -> int:
    from firmware_py.errors import UsageError

    actions = [args.status, args.rollback, args.boot_check, args.recover, args.staged, args.init is not None]
    if args.bundle is not None and any(actions):
        raise UsageError("give either a BUNDLE or one of --status/--rollback/--boot-check/--recover/--staged/--init, not both")
    if args.bundle is None and not any(actions):
        raise UsageError("nothing to do: give a BUNDLE to install, or --status, --rollback, --recover (see kaoclock update --help)")
    cfg = _config(args)
    try:
        return _run(args, cfg)
    except PermissionError as exc:
        from firmware_py.update.errors import UpdateError

        where = exc.filename or exc
        raise UpdateError(f"{where}: permission denied; updates change /opt/kaoclock and restart the service: run as root (sudo)") from None


def _run(args: argparse.Namespace, cfg: Config) -> int:
    updater = build_updater(args, cfg)
    if args.status:
        return _print_status(updater.status(), args.json)
    if args.rollback:
        outcome = updater.rollback(force=args.force)
    elif args.boot_check:
        outcome = updater.recover(restart=False)
    elif args.recover:
        outcome = updater.recover(restart=True)
    elif args.staged:
        outcome = updater.apply_staged(cfg.device.data_dir / "update" / "incoming")
    elif args.init is not None:
        outcome = updater.init(args.init, args.venv)
    else:
        outcome = updater.apply(args.bundle, allow_downgrade=args.allow_downgrade)
    if args.json:
        print(json.dumps(outcome.as_json(), indent=2))
    else:
        where = f" slot {outcome.slot}" if outcome.slot else ""
        version = f" ({outcome.version})" if outcome.version else ""
        print(f"{outcome.action}:{where}{version}" + (f": {outcome.detail}" if outcome.detail else ""))
        if outcome.health is not None and not outcome.health.ok:
            for c in outcome.health.checks:
                if c.get("status") == "fail":
                    print(f"  fail  {c.get('name')}: {c.get('detail')}")
    if args.boot_check:
        # Whatever it decided, the slot to start is settled: let the service start.
        return 0
    return outcome.exit_code


def _print_status(doc: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"release slots under {doc['slots_root']}")
    if doc["current"] is None:
        print("  no release installed (run device/install.sh)")
    for name, s in doc["slots"].items():
        tags = [t for t, on in (("running", s["current"]), ("committed", s["committed"])) if on]
        status = s.get("status", "unknown" if s["installed"] else "empty")
        reason = f": {s['reason']}" if s.get("reason") else ""
        version = s.get("version", "-")
        print(f"  {name}  {version:<12} {status}{reason}" + (f"  [{', '.join(tags)}]" if tags else ""))
    p = doc["pending"]
    if p:
        who = f"updater pid {p['updater'].get('pid')} running" if p["updater_alive"] else "interrupted; resolved at next start or by --recover"
        print(f"pending: {p['version']} in slot {p['slot']}, phase {p['phase']}, starts {p['boots']} ({who})")
    else:
        print("pending: none")
    if doc["history"]:
        print("recent:")
        for h in doc["history"][-5:]:
            extra = ", ".join(f"{k}={v}" for k, v in h.items() if k not in ("time", "event"))
            print(f"  {h['time']}  {h['event']}  {extra}")
    return 0
