"""`kaoclock console [--device DEV]` and `kaoclock console set-passphrase`."""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
import threading

from firmware_py.config import load, with_changes
from firmware_py.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "console",
        help="run the technician serial console standalone, or set its passphrase",
        description="Without an action: serve the technician console on a serial port until Ctrl-C (the daemon runs its own when "
        "[console] device is set; stop the daemon first to use this).",
    )
    p.add_argument("--device", help="serial device or pyserial URL (default: console.device from the config)")
    p.add_argument("--baud", type=int, help="line speed (default: console.baudrate, 115200)")
    p.add_argument("--config", help="config file; `config set` saves into it (default: the embedded default)")
    p.set_defaults(func=cmd_console)
    csub = p.add_subparsers(dest="console_command", metavar="ACTION")
    s = csub.add_parser("set-passphrase", help="set the technician passphrase (stored hashed in the data directory)")
    s.add_argument("--config", default=argparse.SUPPRESS, help="config file (its device.data_dir holds the passphrase)")
    s.add_argument("--stdin", action="store_true", help="read the passphrase from the first line of stdin (provisioning scripts)")
    s.set_defaults(func=cmd_set_passphrase)


def cmd_set_passphrase(args: argparse.Namespace) -> int:
    from firmware_py.serial.passphrase import PassphraseStore

    cfg = load(args.config)
    if args.stdin:
        text = sys.stdin.readline().rstrip("\r\n")
    else:
        text = getpass.getpass("new technician passphrase: ")
        if getpass.getpass("again: ") != text:
            raise UsageError("the two passphrases differ; nothing was changed")
    store = PassphraseStore(cfg.device.data_dir)
    store.set(text)
    print(f"technician passphrase set ({store.path}, scrypt hash; the passphrase itself is not stored)")
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from firmware_py.events import EventBus
    from firmware_py.serial.console import SerialConsole
    from firmware_py.serial.ring_log import install
    from firmware_py.serial.standalone import StandaloneContext

    ring = install()
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    bus = EventBus()
    bus.subscribe(lambda e: logging.getLogger("kaoclock.events").info("%s %s", e.type, e.data))
    sc = StandaloneContext(args.config, bus, ring)
    cfg = sc.cfg
    changes: dict[str, object] = {}
    if args.device:
        changes["console.device"] = args.device
    if args.baud:
        changes["console.baudrate"] = args.baud
    if changes:
        cfg = with_changes(cfg, changes)
    if not cfg.console.device:
        raise UsageError("no serial device: pass --device /dev/ttyUSB0 (or set console.device in the config)")
    console = SerialConsole.from_config(cfg, bus, sc.context())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    console.start()
    print(f"kaoclock console on {cfg.console.device} at {cfg.console.baudrate} {cfg.console.framing}; Ctrl-C stops it", file=sys.stderr)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        console.stop()
    return 0
