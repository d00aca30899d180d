"""`kaoclock backend ...`: the reference backend (keys, device registry, consumer, attendance, commands)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from firmware_py.backend.attendance import HEADER, as_records, book, to_csv, to_table
from firmware_py.backend.commands import command_claims, send_command, sign_command, verify_result
from firmware_py.backend.consumer import Outcome, PunchConsumer
from firmware_py.backend.home import BackendHome, default_home
from firmware_py.backend.registry import DeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.errors import UsageError
from firmware_py.keys.jwk import KeyFileError, public_jwk
from firmware_py.keys.store import init_private_key, load_private_key
from firmware_py.mqtt.commands.registry import NAME_PATTERN
from firmware_py.mqtt.link import BrokerUrl, BrokerUrlError, TlsFiles
from firmware_py.progress import Progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backend", help="reference backend: verify and store punches, attendance book, signed commands")
    bsub = p.add_subparsers(dest="backend_command", metavar="ACTION")
    bsub.required = True

    home = argparse.ArgumentParser(add_help=False)
    home.add_argument(
        "--home", type=Path, default=None, help="backend state directory (default $KAOCLOCK_BACKEND_HOME or ~/.local/share/kaoclock-backend)"
    )

    js = argparse.ArgumentParser(add_help=False)
    js.add_argument("--json", action="store_true", help="print the report as JSON")

    mqtt = argparse.ArgumentParser(add_help=False)
    mqtt.add_argument(
        "--broker", action="append", default=[], metavar="URL", help="broker URL (repeat for failover): mqtt://host:1883, mqtts://host:8883"
    )
    mqtt.add_argument("--ca", help="CA file for mqtts://")
    mqtt.add_argument("--cert", help="client certificate for mutual TLS")
    mqtt.add_argument("--key", help="client key for mutual TLS")
    mqtt.add_argument("--username", help="MQTT user name (password from $KAOCLOCK_MQTT_PASSWORD)")
    mqtt.add_argument("--prefix", default="kaoclock/v1", help="topic prefix (default kaoclock/v1)")

    i = bsub.add_parser("init", parents=[home, js], help="create the backend's command-signing key (never replaces one)")
    i.set_defaults(func=cmd_init)

    k = bsub.add_parser("key", parents=[home, js], help="print the backend's public key (install it on readers: `kaoclock keys trust-backend`)")
    k.add_argument("--jwk", action="store_true", default=True, help="as a JWK (the default)")
    k.set_defaults(func=cmd_key)

    d = bsub.add_parser("devices", help="the registry of device public keys")
    dsub = d.add_subparsers(dest="devices_command", metavar="ACTION")
    dsub.required = True
    da = dsub.add_parser("add", parents=[home, js], help="register a device's public key (from `kaoclock keys export --jwk`)")
    da.add_argument("site")
    da.add_argument("device")
    da.add_argument("jwk_file", help="JWK file ('-' for stdin)")
    da.add_argument("--replace", action="store_true", help="replace the device's registered key (key rotation)")
    da.set_defaults(func=cmd_devices_add)
    dl = dsub.add_parser("list", parents=[home, js], help="list registered devices and key ids")
    dl.set_defaults(func=cmd_devices_list)

    c = bsub.add_parser("consume", parents=[home, mqtt], help="subscribe (MQTT 5 shared subscription), verify, de-duplicate and store punches")
    c.add_argument("--group", default="kaoclock-backend", help="shared-subscription group: consumers in one group split the punches")
    c.add_argument(
        "--client-id", default=None, help="MQTT client id (default kaoclock-backend-<group>-<host pid>); keep it stable for a persistent session"
    )
    c.add_argument("--site", default="+", help="consume one site only (default: all)")
    c.add_argument("--no-share", action="store_true", help="plain subscription instead of $share (every consumer gets every punch)")
    c.add_argument("--count", type=int, default=0, help="exit after this many new punches are stored (0 = run until interrupted)")
    c.add_argument("--quiet", action="store_true", help="do not print a JSON line per message")
    c.set_defaults(func=cmd_consume)

    a = bsub.add_parser("attendance", parents=[home, js], help="the attendance book of one day")
    a.add_argument("--date", required=True, help="the day, YYYY-MM-DD (local day of each punch's site time zone, see --tz)")
    a.add_argument("--csv", action="store_true", help="CSV instead of a table")
    a.add_argument("--tz", default=None, help="place every punch on this zone's calendar (default: each punch's own site zone)")
    a.set_defaults(func=cmd_attendance)

    r = bsub.add_parser("rejects", parents=[home, js], help="the latest rejected messages with their reasons")
    r.add_argument("--limit", type=int, default=20)
    r.set_defaults(func=cmd_rejects)

    m = bsub.add_parser("command", parents=[home, mqtt, js], help="sign a command for a device; with --broker also send it and wait for the result")
    m.add_argument("site")
    m.add_argument("device")
    m.add_argument("cmd", help="command name: door.open, config.reload, status.request, ping ...")
    m.add_argument("--args", default="{}", help='arguments as a JSON object, e.g. \'{"changes": {"camera.fps": 10}}\'')
    m.add_argument("--ttl", type=float, default=60.0, help="seconds the command stays valid (default 60)")
    m.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the result (with --broker)")
    m.set_defaults(func=cmd_command)

    x = bsub.add_parser(
        "send",
        parents=[home, mqtt, js],
        help="send a file to a device in signed chunks (firmware bundle, gallery snapshot); run again to resume",
    )
    x.add_argument("site")
    x.add_argument("device")
    x.add_argument("file", type=Path, help="a release bundle (--kind firmware) or a snapshot JSON, optionally gzipped (--kind gallery.snapshot)")
    x.add_argument("--kind", default="firmware", choices=["firmware", "gallery.snapshot"], help="what the file is (default firmware)")
    x.add_argument("--version", dest="release_version", help="with firmware: the bundle's version (the reader refuses an older one before any chunk)")
    x.add_argument("--transfer-id", help="transfer id (default: from the kind and the file's sha256, so a re-run resumes)")
    x.add_argument("--chunk-kib", type=int, default=128, help="chunk size in KiB (default 128; must fit the reader's command_max_bytes)")
    x.add_argument("--wait", type=float, default=30.0, help="seconds to wait for each answer")
    x.set_defaults(func=cmd_send)


def _home(args: argparse.Namespace) -> BackendHome:
    return BackendHome(args.home or default_home())


def _tls(args: argparse.Namespace) -> TlsFiles:
    return TlsFiles(args.ca, args.cert, args.key)


def _brokers(args: argparse.Namespace) -> list[str]:
    if not args.broker:
        raise UsageError("give the broker with --broker mqtt://host:1883 (or mqtts://host:8883)")
    for b in args.broker:
        try:
            BrokerUrl.parse(b)
        except BrokerUrlError as exc:
            raise UsageError(str(exc)) from None
    return list(args.broker)


def cmd_init(args: argparse.Namespace) -> int:
    h = _home(args)
    info = init_private_key(h.key_file)
    h.devices_dir.mkdir(parents=True, exist_ok=True)
    if args.json:
        print(json.dumps({"key_file": str(info.path), "kid": info.kid}, indent=2))
    else:
        print(f"backend key created: {info.path} (kid {info.kid}); give readers `kaoclock backend key --jwk`")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    print(json.dumps(public_jwk(load_private_key(_home(args).key_file)), indent=2))
    return 0


def cmd_devices_add(args: argparse.Namespace) -> int:
    h = _home(args)
    text = sys.stdin.read() if args.jwk_file == "-" else Path(args.jwk_file).read_text()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{args.jwk_file}: not JSON ({exc})") from None
    path = DeviceRegistry(h.devices_dir).add(args.site, args.device, obj, replace=args.replace)
    if args.json:
        print(json.dumps({"site": args.site, "device": args.device, "file": str(path)}, indent=2))
    else:
        print(f"registered {args.site}/{args.device}: {path}")
    return 0


def cmd_devices_list(args: argparse.Namespace) -> int:
    h = _home(args)
    reg = DeviceRegistry(h.devices_dir)
    devices = reg.devices()
    for p in reg.problems:
        print(f"problem: {p}", file=sys.stderr)
    if args.json:
        doc = {"devices": [{"site": d.site, "device": d.device, "kid": d.key.kid} for d in devices], "problems": [str(p) for p in reg.problems]}
        print(json.dumps(doc, indent=2))
        return 0
    for d in devices:
        print(f"{d.site}/{d.device}\t{d.key.kid}")
    if not devices:
        print(f"no devices registered in {h.devices_dir}; add one with `kaoclock backend devices add SITE DEVICE JWK_FILE`")
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    h = _home(args)
    brokers = _brokers(args)
    store = PunchStore(h.db_file)
    registry = DeviceRegistry(h.devices_dir)
    if not registry.devices():
        print(f"warning: no device keys registered in {h.devices_dir}; every punch will be rejected (unknown_key)", file=sys.stderr)
    stop = threading.Event()
    stored = [0]

    def on_outcome(o: Outcome) -> None:
        if not args.quiet:
            print(json.dumps({"status": o.status, "reason": o.reason, "id": o.id, "topic": o.topic, "detail": o.detail or None}), flush=True)
        if o.status == "stored":
            stored[0] += 1
            if args.count and stored[0] >= args.count:
                stop.set()

    consumer = PunchConsumer(store, registry, prefix=args.prefix, on_outcome=on_outcome)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    client_id = args.client_id or f"kaoclock-backend-{args.group}-{os.uname().nodename}"[:64]
    link = consumer.connect(
        brokers,
        group=args.group,
        client_id=client_id,
        shared=not args.no_share,
        tls=_tls(args),
        username=args.username,
        password=os.environ.get("KAOCLOCK_MQTT_PASSWORD"),
        site=args.site,
    )
    try:
        while link.wait_connected(0.5) is None:
            if stop.is_set():
                break
        else:
            print(f"consuming punches from {', '.join(brokers)} (group {args.group})", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        link.stop()
        store.close()
    print(json.dumps({"summary": dict(consumer.counts)}), file=sys.stderr)
    return 0


def cmd_attendance(args: argparse.Namespace) -> int:
    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        raise UsageError(f"--date {args.date!r} is not a date; write YYYY-MM-DD") from None
    if args.tz:
        try:
            ZoneInfo(args.tz)
        except Exception:
            raise UsageError(f"--tz {args.tz!r} is not an IANA time zone (e.g. Asia/Tokyo)") from None
    h = _home(args)
    if not h.db_file.exists():
        raise UsageError(f"no punch database at {h.db_file}; run `kaoclock backend consume` first (or give --home)")
    rows = book(PunchStore(h.db_file), day, args.tz)
    if args.json:
        print(json.dumps({"date": str(day), "rows": [dict(zip(HEADER, rec, strict=True)) for rec in as_records(rows)]}, indent=2))
        return 0
    sys.stdout.write(to_csv(rows) if args.csv else to_table(rows))
    return 0


def cmd_rejects(args: argparse.Namespace) -> int:
    h = _home(args)
    rows = PunchStore(h.db_file).rejects(args.limit)
    for r in rows:
        r["received"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["received"]))
    if args.json:  # one document; without --json one JSON line per reject, for tail-like use
        print(json.dumps({"rejects": rows}, indent=2))
    else:
        for r in rows:
            print(json.dumps(r))
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    if not NAME_PATTERN.fullmatch(args.cmd):
        raise UsageError(f"command name {args.cmd!r} must be dotted lowercase words, e.g. door.open")
    try:
        cmd_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args is not JSON: {exc}") from None
    if not isinstance(cmd_args, dict):
        raise UsageError("--args must be a JSON object")
    if not 1 <= args.ttl <= 86400:
        raise UsageError("--ttl must be between 1 and 86400 seconds (the device refuses longer than its command_max_ttl_s)")
    key = load_private_key(_home(args).key_file)
    claims = command_claims(args.site, args.device, args.cmd, cmd_args, ttl_s=args.ttl)
    token = sign_command(key, claims)
    if not args.broker:
        print(json.dumps({"id": claims["id"], "token": token}) if args.json else token)
        return 0
    result = send_command(
        _brokers(args),
        args.site,
        args.device,
        token,
        claims["id"],
        wait_s=args.wait,
        tls=_tls(args),
        username=args.username,
        password=os.environ.get("KAOCLOCK_MQTT_PASSWORD"),
        prefix=args.prefix,
    )
    if result is None:
        print(json.dumps({"id": claims["id"], "status": "no_result", "detail": f"no result within {args.wait} s (device offline?)"}))
        return 1
    try:
        result["signature"] = verify_result(result, DeviceRegistry(_home(args).devices_dir))
    except ValueError as exc:
        result["signature"] = f"NOT VERIFIED: {exc}"
    print(json.dumps({k: v for k, v in result.items() if k != "jws"}, indent=2))
    return 0 if result.get("status") == "done" else 1


def cmd_send(args: argparse.Namespace) -> int:
    from firmware_py.backend.commands import CommandSession
    from firmware_py.backend.transfer import send_file

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    if not 1 <= args.chunk_kib <= 4096:
        raise UsageError("--chunk-kib must be from 1 to 4096")
    meta = {"version": args.release_version} if args.release_version else None
    key = load_private_key(_home(args).key_file)
    session = CommandSession(
        _brokers(args),
        args.site,
        args.device,
        key,
        tls=_tls(args),
        username=args.username,
        password=os.environ.get("KAOCLOCK_MQTT_PASSWORD"),
        prefix=args.prefix,
    )

    with session, Progress(f"sending {args.file.name}") as bar:
        result = send_file(
            session,
            args.kind,
            data,
            transfer_id=args.transfer_id,
            chunk_size=args.chunk_kib << 10,
            meta=meta,
            progress=lambda received, chunks: bar.update(received, chunks),
            wait_s=args.wait,
        )
    print(json.dumps(result, indent=2))
    return 0
