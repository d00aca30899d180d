"""`kaoclock backend ...`: the reference backend (keys, device registry, consumer, attendance, commands)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from firmware_py.backend import book as book_mod
from firmware_py.backend import users as users_mod
from firmware_py.backend.attendance import HEADER, as_records, book, to_csv, to_table
from firmware_py.backend.book import parse_month
from firmware_py.backend.commands import command_claims, send_command, sign_command, verify_result
from firmware_py.backend.consumer import Outcome, PunchConsumer
from firmware_py.backend.db import Database, StoreUnavailable, is_url, redact
from firmware_py.backend.fleet import FleetRecorder
from firmware_py.backend.fleet import fleet as fleet_view
from firmware_py.backend.fleet import prune as fleet_prune
from firmware_py.backend.home import BackendHome, default_home
from firmware_py.backend.hr import HrMaster
from firmware_py.backend.registry import DbDeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.errors import UsageError
from firmware_py.keys.jwk import KeyFileError, public_jwk
from firmware_py.keys.store import init_private_key, load_private_key
from firmware_py.mqtt.commands.registry import NAME_PATTERN
from firmware_py.mqtt.link import BrokerUrl, BrokerUrlError, TlsFiles
from firmware_py.progress import Progress

PRUNE_EVERY_S = 3600.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backend", help="reference backend: verify and store punches, attendance book, signed commands")
    bsub = p.add_subparsers(dest="backend_command", metavar="ACTION")
    bsub.required = True

    home = argparse.ArgumentParser(add_help=False)
    home.add_argument(
        "--home", type=Path, default=None, help="backend state directory (default $KAOCLOCK_BACKEND_HOME or ~/.local/share/kaoclock-backend)"
    )
    home.add_argument(
        "--db",
        default=None,
        metavar="URL|FILE",
        help="the database: postgresql://user@host/db (password from $PGPASSWORD or ~/.pgpass) or a SQLite file "
        "(default $KAOCLOCK_BACKEND_DB, else <home>/punches.sqlite)",
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

    c = bsub.add_parser(
        "consume",
        parents=[home, mqtt],
        help="subscribe (MQTT 5 shared subscription), verify, de-duplicate, store punches and publish signed receipts",
    )
    c.add_argument("--group", default="kaoclock-backend", help="shared-subscription group: consumers in one group split the punches")
    c.add_argument(
        "--client-id", default=None, help="MQTT client id (default kaoclock-backend-<group>-<host pid>); keep it stable for a persistent session"
    )
    c.add_argument("--site", default="+", help="consume one site only (default: all)")
    c.add_argument("--no-share", action="store_true", help="plain subscription instead of $share (every consumer gets every punch)")
    c.add_argument("--count", type=int, default=0, help="exit after this many new punches are stored (0 = run until interrupted)")
    c.add_argument("--quiet", action="store_true", help="do not print a JSON line per message")
    c.add_argument("--batch-max", type=int, default=200, help="most punches stored in one transaction when they queue up (default 200)")
    c.add_argument("--no-fleet", action="store_true", help="store only punches, not the readers' status, telemetry and events")
    c.add_argument("--keep-days", type=float, default=None, help="prune reader telemetry and events older than this many days, at start and hourly")
    c.set_defaults(func=cmd_consume)

    fl = bsub.add_parser(
        "fleet", parents=[home], help="every reader: online/offline since, versions, gallery, outbox, last punch, CPU temperature, alerts"
    )
    fl.add_argument("--site", default=None, help="only this site's readers")
    fl.add_argument("--offline-after", type=float, default=10.0, metavar="MIN", help="alert when a reader is offline this long (default 10)")
    fl.add_argument(
        "--window", type=float, default=24.0, metavar="HOURS", help="alarm events (door, spoof, rollback, tamper) of this window (default 24)"
    )
    fl.add_argument("--json", action="store_true")
    fl.set_defaults(func=cmd_fleet)

    a = bsub.add_parser("attendance", parents=[home, js], help="the attendance book of one day")
    a.add_argument("--date", required=True, help="the day, YYYY-MM-DD (local day of each punch's site time zone, see --tz)")
    a.add_argument("--csv", action="store_true", help="CSV instead of a table")
    a.add_argument("--tz", default=None, help="place every punch on this zone's calendar (default: each punch's own site zone)")
    a.set_defaults(func=cmd_attendance)

    bk = bsub.add_parser("book", parents=[home], help="the monthly attendance book: first IN, last OUT, worked, breaks, beyond schedule, anomalies")
    bk.add_argument("--month", required=True, help="YYYY-MM (days are local days of each punch's site time zone)")
    bk.add_argument("--person", default=None, help="only this person")
    bk.add_argument("--site", default=None, help="only this site's people (assigned to it or punched there): all their punches")
    fmt = bk.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="one CSV row per person and day (the default)")
    fmt.add_argument("--json", action="store_true", help="JSON with the days and the anomalies")
    bk.set_defaults(func=cmd_book)

    sc = bsub.add_parser("schedules", help="work schedules per person or per site group (time beyond them is reported in the book)")
    scsub = sc.add_subparsers(dest="schedules_command", metavar="ACTION")
    scsub.required = True
    si = scsub.add_parser(
        "import", parents=[home], help="replace the schedules by a CSV who,days,start,end,tz (who: person id or site:<site>); all or nothing"
    )
    si.add_argument("csv_file", type=Path)
    si.set_defaults(func=cmd_schedules_import)

    an = bsub.add_parser("anomalies", help="the book's anomalies for HR: list, acknowledge, correct with a reason")
    ansub = an.add_subparsers(dest="anomalies_command", metavar="ACTION")
    ansub.required = True
    al = ansub.add_parser("list", parents=[home], help="the month's anomalies (open ones unless --all)")
    al.add_argument("--month", required=True, help="YYYY-MM")
    al.add_argument("--person", default=None)
    al.add_argument("--site", default=None)
    al.add_argument("--all", action="store_true", help="also acknowledged and corrected ones")
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_anomalies_list)
    aa = ansub.add_parser("ack", parents=[home], help="acknowledge an anomaly (seen, nothing to correct)")
    aa.add_argument("anomaly", help="the anomaly id from `anomalies list` (<kind>:<punch id>)")
    aa.add_argument("--by", default=os.environ.get("USER", "hr"), help="who acknowledges (default $USER)")
    aa.add_argument("--note", default="")
    aa.set_defaults(func=cmd_anomalies_ack)
    ac = ansub.add_parser("correct", parents=[home], help="store a correction beside the punch (the signed punch is never changed)")
    ac.add_argument("anomaly", help="the anomaly id from `anomalies list` (<kind>:<punch id>)")
    ac.add_argument("--reason", default="", help="why (required)")
    ac.add_argument("--by", default=os.environ.get("USER", "hr"), help="who corrects (default $USER)")
    how = ac.add_mutually_exclusive_group(required=True)
    how.add_argument("--void", action="store_true", help="do not count the punch")
    how.add_argument("--direction", choices=("in", "out"), help="count the punch as this direction")
    how.add_argument("--time", metavar="HH:MM", help="count the punch at this local time of its day")
    how.add_argument("--add-in", metavar="HH:MM", help="add the missing IN at this local time of the punch's day")
    how.add_argument(
        "--add-out",
        metavar="HH:MM",
        help="add the missing OUT at this local time of the punch's day (earlier than the IN: the next morning, a night shift)",
    )
    ac.add_argument("--json", action="store_true")
    ac.set_defaults(func=cmd_anomalies_correct)

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

    st = bsub.add_parser("sites", help="the sites people can be assigned to (a registered reader adds its site too)")
    stsub = st.add_subparsers(dest="sites_command", metavar="ACTION")
    stsub.required = True
    sa = stsub.add_parser("add", parents=[home], help="add sites")
    sa.add_argument("site", nargs="+")
    sa.set_defaults(func=cmd_sites_add)
    sl = stsub.add_parser("list", parents=[home], help="list sites")
    sl.set_defaults(func=cmd_sites_list)

    pe = bsub.add_parser("people", help="the HR master of people and their sites")
    pesub = pe.add_subparsers(dest="people_command", metavar="ACTION")
    pesub.required = True
    pi = pesub.add_parser("import", parents=[home], help="add or update people from a CSV id,name,sites (sites separated by ';'); all or nothing")
    pi.add_argument("csv_file", type=Path)
    pi.add_argument(
        "--full", action="store_true", help="the file is the whole staff: remove everyone not in it (and, at the next sync, from every reader)"
    )
    pi.add_argument("--json", action="store_true")
    pi.set_defaults(func=cmd_people_import)
    pl = pesub.add_parser("list", parents=[home], help="people with their sites, photos and templates per embedder")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_people_list)
    pr = pesub.add_parser("remove", parents=[home], help="remove a person with their photos and templates (the next sync purges them from readers)")
    pr.add_argument("person")
    pr.set_defaults(func=cmd_people_remove)

    en = bsub.add_parser("enrol", parents=[home], help="enrol a person of the HR master from photos, with the reader's quality gates")
    en.add_argument("person", help="the person's id in the HR master")
    en.add_argument("photos", nargs="+", type=Path)
    en.add_argument("--replace", action="store_true", help="replace the person's photos and templates instead of adding to them")
    en.add_argument("--config", type=Path, default=None, help="reader config TOML for the models and quality limits (default: built-in)")
    en.add_argument("--json", action="store_true")
    en.set_defaults(func=cmd_enrol)

    sy = bsub.add_parser("sync", parents=[home, mqtt], help="send each site's readers the difference to the HR master (signed gallery.* commands)")
    sy.add_argument("--site", action="append", default=None, help="only this site's readers (repeat for several; default all)")
    sy.add_argument("--wait", type=float, default=10.0, help="seconds to wait for each answer before counting a reader offline")
    sy.add_argument("--parallel", type=int, default=8, help="readers synced at once (default 8)")
    sy.add_argument(
        "--snapshot-min",
        type=int,
        default=20,
        help="a reader that holds nobody and is owed at least this many people gets them as one chunked gallery snapshot (default 20; 0: never)",
    )
    sy.add_argument("--config", type=Path, default=None, help="reader config TOML for the embedder used to re-extract templates (default: built-in)")
    sy.add_argument(
        "--watch", action="store_true", help="keep running: sync readers when they come online, report a live enrolment, or the HR master changes"
    )
    sy.add_argument("--poll", type=float, default=1.0, help="with --watch: seconds between looks at the HR master for changes (default 1)")
    sy.add_argument("--json", action="store_true", help="one JSON object per reader")
    sy.set_defaults(func=cmd_sync)

    sv = bsub.add_parser(
        "serve", parents=[home], help="the web page: month's book, a person's month, anomalies, fleet, a reader's telemetry (read-only by default)"
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0: a free one, printed)")
    sv.add_argument("--corrections", action="store_true", help="let HR users (`backend users add`) log in to acknowledge and correct anomalies")
    sv.add_argument("--secure-cookie", action="store_true", help="send the session cookie over HTTPS only (behind a TLS proxy)")
    sv.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    sv.set_defaults(func=cmd_serve)

    us = bsub.add_parser("users", help="HR users of the web page (who may acknowledge and correct anomalies)")
    ussub = us.add_subparsers(dest="users_command", metavar="ACTION")
    ussub.required = True
    ua = ussub.add_parser("add", parents=[home], help="add a user; the password is read from standard input (or asked twice on a terminal)")
    ua.add_argument("name")
    ua.add_argument("--replace", action="store_true", help="set a new password for an existing user")
    ua.set_defaults(func=cmd_users_add)
    ul = ussub.add_parser("list", parents=[home, js], help="list users")
    ul.set_defaults(func=cmd_users_list)
    ur = ussub.add_parser("remove", parents=[home], help="remove a user (their open sessions end at their next request)")
    ur.add_argument("name")
    ur.set_defaults(func=cmd_users_remove)

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

    ro = bsub.add_parser(
        "rollout",
        parents=[home, mqtt],
        help="update readers a wave at a time (canary first), halting at the K-th failure; `rollout status ID` shows a rollout",
        description="kaoclock backend rollout BUNDLE (--site S | --all) --canary N --wave-size M --halt-on-failures K, "
        "or: kaoclock backend rollout status ID. Running the same rollout again resumes it (committed readers are skipped).",
    )
    ro.add_argument("bundle", metavar="BUNDLE|status", help="the signed release bundle, or the word status")
    ro.add_argument("rollout_id", nargs="?", metavar="ID", help="with status: the rollout's id")
    which = ro.add_mutually_exclusive_group()
    which.add_argument("--site", default=None, help="the readers of this site")
    which.add_argument("--all", action="store_true", help="every registered reader")
    ro.add_argument("--canary", type=int, default=1, help="readers in the first (canary) wave (default 1)")
    ro.add_argument("--wave-size", type=int, default=10, help="readers in each later wave (default 10)")
    ro.add_argument("--halt-on-failures", type=int, default=1, metavar="K", help="halt after the wave in which the K-th reader fails (default 1)")
    ro.add_argument(
        "--release-key", type=Path, default=None, help="the vendor's release public key, to check the bundle first (default <home>/release.pub)"
    )
    ro.add_argument("--wait", type=float, default=30.0, help="seconds to wait for each transfer step's answer (default 30)")
    ro.add_argument(
        "--commit-timeout", type=float, default=600.0, help="seconds a reader has, once the bundle is staged, to report its outcome (default 600)"
    )
    ro.add_argument("--parallel", type=int, default=8, help="transfers at once within a wave (default 8)")
    ro.add_argument("--chunk-kib", type=int, default=128, help="chunk size in KiB (default 128)")
    ro.add_argument("--takeover", action="store_true", help="run a rollout that the database says another process is running (it died)")
    ro.add_argument("--json", action="store_true", help="print the summary as JSON")
    ro.set_defaults(func=cmd_rollout)

    pr = bsub.add_parser("prune", parents=[home, js], help="delete reader telemetry and events older than --keep-days (punches are kept)")
    pr.add_argument("--keep-days", type=float, required=True, help="keep this many days (each reader's newest telemetry is always kept)")
    pr.set_defaults(func=cmd_prune)


def _home(args: argparse.Namespace) -> BackendHome:
    return BackendHome(args.home or default_home())


def _db_target(args: argparse.Namespace) -> str | Path:
    target = getattr(args, "db", None) or os.environ.get("KAOCLOCK_BACKEND_DB")
    if not target:
        return _home(args).db_file
    if "://" in target and not is_url(target):
        raise UsageError(f"--db {redact(target)!r}: give a postgresql:// URL or a SQLite file path")
    return target if is_url(target) else Path(target)


def _database(args: argparse.Namespace) -> Database:
    return Database.open(_db_target(args))


def _registry(db: Database, args: argparse.Namespace) -> DbDeviceRegistry:
    """The database's device registry; JWK files of an older file registry in <home>/devices are imported once."""
    reg = DbDeviceRegistry(db)
    devices_dir = _home(args).devices_dir
    if devices_dir.is_dir() and any(devices_dir.glob("*/*.jwk")):
        for name in reg.import_dir(devices_dir):
            print(f"imported {name} from {devices_dir} into the database registry", file=sys.stderr)
    return reg


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
    text = sys.stdin.read() if args.jwk_file == "-" else Path(args.jwk_file).read_text()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{args.jwk_file}: not JSON ({exc})") from None
    db = _database(args)
    kid = DbDeviceRegistry(db).add(args.site, args.device, obj, replace=args.replace)
    if args.json:
        print(json.dumps({"site": args.site, "device": args.device, "kid": kid}, indent=2))
    else:
        print(f"registered {args.site}/{args.device}: key {kid} in {db!r}")
    return 0


def cmd_devices_list(args: argparse.Namespace) -> int:
    db = _database(args)
    reg = _registry(db, args)
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
        print(f"no devices registered in {db!r}; add one with `kaoclock backend devices add SITE DEVICE JWK_FILE`")
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    brokers = _brokers(args)
    db = _database(args)
    store = PunchStore(db)
    registry = _registry(db, args)
    if not registry.devices():
        print(f"warning: no device keys registered in {db!r}; every punch will be rejected (unknown_key)", file=sys.stderr)
    stop = threading.Event()
    stored = [0]

    def on_outcome(o: Outcome) -> None:
        if not args.quiet:
            print(json.dumps({"status": o.status, "reason": o.reason, "id": o.id, "topic": o.topic, "detail": o.detail or None}), flush=True)
        if o.status == "stored":
            stored[0] += 1
            if args.count and stored[0] >= args.count:
                stop.set()

    if not 1 <= args.batch_max <= 5000:
        raise UsageError("--batch-max must be from 1 to 5000")
    h = _home(args)
    if not h.key_file.exists():
        raise UsageError(
            f"no backend key at {h.key_file}: it signs the receipts without which readers keep every punch. Create it with `kaoclock backend init`"
        )
    if args.keep_days is not None and not args.keep_days > 0:
        raise UsageError("--keep-days must be positive")
    receipt_key = load_private_key(h.key_file)
    fleet = None if args.no_fleet else FleetRecorder(db, args.prefix)
    consumer = PunchConsumer(
        store, registry, prefix=args.prefix, on_outcome=on_outcome, batch_max=args.batch_max, receipt_key=receipt_key, fleet=fleet
    )
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
        pruned_at = time.monotonic()
        _prune_now(db, args.keep_days)
        while not stop.wait(0.5):
            if time.monotonic() - pruned_at >= PRUNE_EVERY_S:
                pruned_at = time.monotonic()
                _prune_now(db, args.keep_days)
    finally:
        consumer.stop()
        store.close()
    sizes = consumer.batches
    batches = {"transactions": sum(sizes.values()), "largest": max(sizes, default=0)}
    print(json.dumps({"summary": dict(consumer.counts), "batches": batches}), file=sys.stderr)
    return 0


def _prune_now(db: Database, keep_days: float | None) -> None:
    """consume --keep-days: prune the fleet tables (a database that is down is tried again at the next hour)."""
    if keep_days:
        try:
            print(json.dumps({"pruned": fleet_prune(db, keep_days)}), file=sys.stderr, flush=True)
        except StoreUnavailable as exc:
            print(f"pruning skipped: {exc}", file=sys.stderr, flush=True)


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
    target = _db_target(args)
    if isinstance(target, Path) and not target.exists():
        raise UsageError(f"no punch database at {target}; run `kaoclock backend consume` first (or give --home / --db)")
    rows = book(PunchStore(Database.open(target)), day, args.tz)
    if args.json:
        print(json.dumps({"date": str(day), "rows": [dict(zip(HEADER, rec, strict=True)) for rec in as_records(rows)]}, indent=2))
        return 0
    sys.stdout.write(to_csv(rows) if args.csv else to_table(rows))
    return 0


def _month(args: argparse.Namespace) -> str:
    try:
        parse_month(args.month)
    except ValueError:
        raise UsageError(f"--month {args.month!r} is not a month; write YYYY-MM") from None
    return str(args.month)


def _book_db(args: argparse.Namespace) -> Database:
    target = _db_target(args)
    if isinstance(target, Path) and not target.exists():
        raise UsageError(f"no punch database at {target}; run `kaoclock backend consume` first (or give --home / --db)")
    return Database.open(target)


def cmd_book(args: argparse.Namespace) -> int:
    month = book_mod.compute(_book_db(args), _month(args), args.person, args.site)
    if not month.days:
        print(
            f"no punches in {args.month}" + (f" for {args.person}" if args.person else "") + (f" at {args.site}" if args.site else ""),
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(book_mod.to_json(month)))
    else:
        sys.stdout.write(book_mod.to_csv(month))
    return 0


def cmd_schedules_import(args: argparse.Namespace) -> int:
    try:
        data = args.csv_file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.csv_file}: {exc.strerror}") from None
    print(json.dumps(book_mod.import_schedules(_database(args), data, str(args.csv_file))))
    return 0


def cmd_anomalies_list(args: argparse.Namespace) -> int:
    month = book_mod.compute(_book_db(args), _month(args), args.person, args.site)
    shown = [a for a in month.anomalies if args.all or a.status == "open"]
    if args.json:
        print(json.dumps([a.as_dict() for a in shown]))
        return 0
    for a in shown:
        print(f"{a.id}\t{a.person}\t{a.date}\t{a.status}\t{a.reason}")
    if not month.days:
        print(f"no punches in {args.month}", file=sys.stderr)
    return 0


def cmd_anomalies_ack(args: argparse.Namespace) -> int:
    new = book_mod.acknowledge(_book_db(args), args.anomaly, args.by, args.note)
    print(f"{args.anomaly}: {'acknowledged' if new else 'was already acknowledged'}")
    return 0


def cmd_anomalies_correct(args: argparse.Namespace) -> int:
    if args.void:
        action, at = "void", None
    elif args.direction:
        action, at = "direction", None
    else:
        action, at = next((a, v) for a, v in (("time", args.time), ("add_in", args.add_in), ("add_out", args.add_out)) if v)
    done = book_mod.correct(_book_db(args), args.anomaly, action, reason=args.reason, by=args.by, direction=args.direction, at=at)  # type: ignore[arg-type]
    print(json.dumps(done) if args.json else f"{args.anomaly}: corrected ({action}); the signed punch is kept as it was")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    if args.offline_after <= 0 or args.window <= 0:
        raise UsageError("--offline-after and --window must be positive")
    readers = fleet_view(_book_db(args), offline_after_s=args.offline_after * 60, window_s=args.window * 3600, site=args.site)
    if args.json:
        print(json.dumps(readers))
        return 0
    for r in readers:
        alerts = "; ".join(f"{a['alert']}: {a['detail']}" for a in r["alerts"]) or "-"
        temp = "-" if r["cpu_temp_c"] is None else f"{r['cpu_temp_c']:.0f}C"
        depth = "-" if not r["outbox"] else r["outbox"]["depth"]
        print(f"{r['site']}/{r['device']}\t{r['state']} since {r['since'] or '-'}\t{r['firmware'] or '-'}\toutbox {depth}\t{temp}\t{alerts}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    if not args.keep_days > 0:
        raise UsageError("--keep-days must be positive")
    deleted = fleet_prune(_book_db(args), args.keep_days)
    if args.json:
        print(json.dumps({"keep_days": args.keep_days, "deleted": deleted}))
    else:
        print(f"deleted {deleted['telemetry']} telemetry and {deleted['events']} event row(s) older than {args.keep_days:g} day(s)")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from firmware_py.backend.rollout import Rollout, RolloutIncomplete, RolloutStore
    from firmware_py.backend.sync import Brokers
    from firmware_py.update.bundle import Limits, verify_bundle
    from firmware_py.update.signing import TrustedKeys

    if args.bundle == "status":
        if not args.rollout_id:
            raise UsageError("give the rollout's id: kaoclock backend rollout status ID")
        doc = RolloutStore(_book_db(args)).status(args.rollout_id)
        _print_rollout(doc, args.json)
        return 0 if doc["state"] == "done" else int(RolloutIncomplete.exit_code)
    if args.rollout_id:
        raise UsageError(f"unexpected argument {args.rollout_id!r}: kaoclock backend rollout BUNDLE (--site S | --all) ...")
    if not (args.site or args.all):
        raise UsageError("choose the readers: --site SITE, or --all for every registered reader")
    for name, value in (("--canary", args.canary), ("--wave-size", args.wave_size), ("--halt-on-failures", args.halt_on_failures)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1 (got {value})")
    if not 1 <= args.parallel <= 64:
        raise UsageError("--parallel must be from 1 to 64")
    if not 1 <= args.chunk_kib <= 4096:
        raise UsageError("--chunk-kib must be from 1 to 4096")
    if args.wait <= 0 or args.commit_timeout <= 0:
        raise UsageError("--wait and --commit-timeout must be positive")
    release_key = args.release_key or _home(args).root / "release.pub"
    if not release_key.exists():
        raise UsageError(
            f"no release public key at {release_key}: give --release-key (the vendor's release.pub) to check the bundle before any reader gets it"
        )
    if not args.bundle or not Path(args.bundle).is_file():
        raise UsageError(f"{args.bundle}: no such bundle file")
    bundle = Path(args.bundle)
    checked = verify_bundle(bundle, TrustedKeys.load(release_key), Limits())  # BundleError: refused before anything is sent
    brokers = Brokers(_brokers(args), _tls(args), args.username, os.environ.get("KAOCLOCK_MQTT_PASSWORD"), args.prefix)
    db = _database(args)
    _registry(db, args)
    rollout = Rollout(
        db,
        load_private_key(_home(args).key_file),
        brokers,
        bundle,
        bundle.read_bytes(),
        checked.manifest.version,
        None if args.all else args.site,
        canary=args.canary,
        wave_size=args.wave_size,
        halt_on=args.halt_on_failures,
        send_wait_s=args.wait,
        commit_timeout_s=args.commit_timeout,
        parallel=args.parallel,
        chunk_size=args.chunk_kib << 10,
        takeover=args.takeover,
        say=lambda line: print(line, file=sys.stderr, flush=True),
    )
    doc = rollout.run()
    _print_rollout(doc, args.json)
    if doc["state"] != "done":
        failed = ", ".join(f"{r['site']}/{r['device']} ({r['reason']})" for r in doc["failed"]) or "none"
        print(f"rollout {doc['id']} {doc['state']}: failed: {failed}; fix them and run the same command again to resume", file=sys.stderr)
        return int(RolloutIncomplete.exit_code)
    return 0


def _print_rollout(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc))
        return
    counts = ", ".join(f"{n} {state}" for state, n in sorted(doc["counts"].items()))
    print(f"rollout {doc['id']}: {doc['state']} ({doc['detail']}); release {doc['version']}; {counts}")
    for r in doc["readers"]:
        why = f" ({r['reason']}): {r['detail']}" if r["state"] in ("failed", "not_reached") else ""
        print(f"  wave {r['wave']}\t{r['site']}/{r['device']}\t{r['state']}{why}")


def cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535 or args.threads < 1:
        raise UsageError("--port must be 0-65535 and --threads at least 1")
    try:
        from firmware_py.backend import web
    except ImportError as exc:
        raise UsageError(f"the web page needs Flask and waitress ({exc.name} is missing): pip install 'kaoclock[backend]'") from None
    _book_db(args).close()  # a missing SQLite file is refused, not created empty
    app = web.create_app(_db_target(args), _home(args).root, corrections=args.corrections, secure_cookie=args.secure_cookie)
    mode = "HR corrections after login" if args.corrections else "read-only"
    web.serve(app, args.host, args.port, lambda url: print(f"serving {url} ({mode}); Ctrl-C stops", flush=True), threads=args.threads)
    return 0


def _read_password(name: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != first:
            raise UsageError("the two passwords differ; nothing was changed")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_users_add(args: argparse.Namespace) -> int:
    new = users_mod.add_user(_database(args), args.name, _read_password(args.name), replace=args.replace)
    print(f"user {args.name}: {'added' if new else 'new password set'}")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    names = users_mod.list_users(_database(args))
    print(json.dumps(names) if args.json else "\n".join(names))
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    users_mod.remove_user(_database(args), args.name)
    print(f"user {args.name}: removed")
    return 0


def cmd_rejects(args: argparse.Namespace) -> int:
    rows = PunchStore(_database(args)).rejects(args.limit)
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
        result["signature"] = verify_result(result, _registry(_database(args), args))
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


# ---------------------------------------------------------------- HR master


def _master(args: argparse.Namespace, db: Database | None = None, key: bool = False) -> HrMaster:
    db = db or _database(args)
    return HrMaster.open(db, _home(args).template_key) if key else HrMaster(db)


def cmd_sites_add(args: argparse.Namespace) -> int:
    m = _master(args)
    for site in args.site:
        print(f"{site}: {'added' if m.add_site(site) else 'already known'}")
    return 0


def cmd_sites_list(args: argparse.Namespace) -> int:
    for site in _master(args).sites():
        print(site)
    return 0


def cmd_people_import(args: argparse.Namespace) -> int:
    try:
        data = args.csv_file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.csv_file}: {exc.strerror}") from None
    report = _master(args).import_people(data, full=args.full, where=str(args.csv_file))
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        r = report
        print(f"{args.csv_file}: {r.added} added, {r.updated} updated, {r.unchanged} unchanged, {r.removed} removed; run `kaoclock backend sync`")
    return 0


def cmd_people_list(args: argparse.Namespace) -> int:
    people = _master(args).people()
    if args.json:
        print(json.dumps(people, indent=2))
        return 0
    for p in people:
        tpl = ", ".join(f"{v}: {n}" for v, n in sorted(p["templates"].items())) or "no templates"
        print(f"{p['id']}\t{p['name']}\t{';'.join(p['sites'])}\t{p['photos']} photo(s)\t{tpl}")
    return 0


def cmd_people_remove(args: argparse.Namespace) -> int:
    if not _master(args).remove_person(args.person):
        raise UsageError(f"no person {args.person!r} in the HR master")
    print(f"removed {args.person}; run `kaoclock backend sync` to purge them from the readers")
    return 0


def _front_end(config: Path | None) -> tuple[Any, Any, bool]:
    from firmware_py.config import load
    from firmware_py.pipeline.build import build_analyzer
    from firmware_py.vision.embedding import load_embedder

    cfg = load(config)
    return build_analyzer(cfg, enrolment=True), load_embedder(cfg), cfg.recognition.mirror_average


def cmd_enrol(args: argparse.Namespace) -> int:
    from firmware_py.backend.enrol import enrol_person
    from firmware_py.gallery.enrol import EnrolmentRefused

    master = _master(args, key=True)
    if master.person(args.person) is None:
        raise UsageError(f"no person {args.person!r} in the HR master; import them first (`kaoclock backend people import staff.csv`)")
    analyzer, embedder, mirror = _front_end(args.config)
    try:
        report = enrol_person(master, analyzer, embedder, args.person, args.photos, replace=args.replace, mirror=mirror)
    except EnrolmentRefused as exc:
        if args.json:
            print(json.dumps(exc.report.as_dict(), indent=2))
        raise
    if args.json:
        print(json.dumps(report.as_dict() | {"embedder_version": embedder.version}, indent=2))
    else:
        print(f"enrolled {args.person}: {len(report.photos)} photo(s) kept, templates of {embedder.version}; run `kaoclock backend sync`")
    return 0


def _backend_embedders(config: Path | None) -> dict[str, Any]:
    """The backend's own embedder (by version, from the manifest), loaded only if a re-extraction needs it."""
    from firmware_py.models.manifest import ModelError, load_manifest
    from firmware_py.vision.embedder import EMBEDDER_MODEL

    try:
        version = load_manifest().entry(EMBEDDER_MODEL).version
    except ModelError as exc:
        print(f"warning: no embedder for re-extraction: {exc}", file=sys.stderr)
        return {}
    loaded: list[Any] = []

    def describe(data: bytes) -> Any:
        from firmware_py.backend.enrol import photo_describer

        if not loaded:
            loaded.append(photo_describer(*_front_end(config)))
        return loaded[0](data)

    return {version: describe}


def cmd_sync(args: argparse.Namespace) -> int:
    from firmware_py.backend.sync import Brokers, GallerySyncer

    brokers = Brokers(_brokers(args), _tls(args), args.username, os.environ.get("KAOCLOCK_MQTT_PASSWORD"), args.prefix)
    if not 1 <= args.parallel <= 64:
        raise UsageError("--parallel must be from 1 to 64")
    if not 0.1 <= args.poll <= 3600:
        raise UsageError("--poll must be from 0.1 to 3600 seconds")
    if args.snapshot_min < 0:
        raise UsageError("--snapshot-min must be 0 (never) or more")
    db = _database(args)
    master = _master(args, db, key=True)
    known = set(master.sites())
    for s in args.site or []:
        if s not in known:
            raise UsageError(f"--site {s}: unknown site (known: {', '.join(sorted(known)) or 'none'})")
    _registry(db, args)
    syncer = GallerySyncer(
        db,
        master,
        load_private_key(_home(args).key_file),
        brokers,
        embedders=_backend_embedders(args.config),
        wait_s=args.wait,
        parallel=args.parallel,
        snapshot_min=args.snapshot_min,
    )

    def report(results: list[Any]) -> bool:
        for r in results:
            if args.json:
                print(json.dumps(r.as_dict()), flush=True)
            else:
                line = f"{r.site}/{r.device}: {r.status}"
                if r.status != "offline":
                    line += f" ({r.embedder_version}): {r.updated} updated, {r.removed} removed, {r.unchanged} unchanged"
                    line += " (as one gallery snapshot)" if r.snapshot else ""
                if r.pulled:
                    line += f"; took live enrolment(s) of {', '.join(r.pulled)}"
                print(line, flush=True)
            for p in r.problems:
                print(f"{r.site}/{r.device}: {p}", file=sys.stderr)
        return all(r.status == "synced" and not r.missing for r in results)

    if not args.watch:
        return 0 if report(syncer.sync(args.site)) else 1
    return _watch(args, syncer, brokers, report)


def _watch(args: argparse.Namespace, syncer: Any, brokers: Any, report: Any) -> int:
    """Sync everything once, then each reader again when it comes online or reports a live enrolment."""
    import queue

    from firmware_py.mqtt.link import BrokerUrl, LinkSettings, MqttLink
    from firmware_py.topics import fleet_filter, parse_topic

    todo: queue.Queue[tuple[str, str]] = queue.Queue()
    sites = set(args.site or [])

    def on_message(topic: str, payload: bytes, _p: Any) -> None:
        where = parse_topic(topic, brokers.prefix)
        if where is None or (sites and where[0] not in sites):
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        if (where[2] == "status" and obj.get("state") == "online") or (where[2] == "events" and obj.get("type") == "gallery.enrol_live_done"):
            todo.put((where[0], where[1]))

    link = MqttLink(
        LinkSettings(
            brokers=[BrokerUrl.parse(b) for b in brokers.urls],
            client_id=f"kaoclock-sync-{os.uname().nodename}-{os.getpid()}"[:64],
            protocol="auto",
            tls=brokers.tls,
            username=brokers.username,
            password=brokers.password,
            clean_start=True,
        )
    )
    link.subscribe(fleet_filter("status", brokers.prefix), on_message, qos=1)
    link.subscribe(fleet_filter("events", brokers.prefix), on_message, qos=1)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    link.start()
    seen = syncer.master.change_mark()
    try:
        report(syncer.sync(args.site))
        print("watching for readers coming online, live enrolments and HR master changes", file=sys.stderr, flush=True)
        while not stop.is_set():
            try:
                first = todo.get(timeout=args.poll)
            except queue.Empty:
                mark = syncer.master.change_mark()
                if mark != seen:  # an import, enrolment or removal on any HR host: send the difference
                    seen = mark
                    report(syncer.sync(args.site))
                continue
            batch = {first}
            time.sleep(0.2)  # a burst (a site's readers reconnecting) becomes one round
            while not todo.empty():
                batch.add(todo.get_nowait())
            report(syncer.sync(devices=sorted(d for d in batch if d in set(syncer.devices()))))
    finally:
        link.stop()
    return 0
