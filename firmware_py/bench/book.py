"""`kaoclock bench book`: how long the monthly attendance book takes for a seeded month, on PostgreSQL.

Seeds one month of working days: ``--people`` people on ``--sites`` sites
(one reader each, its own Ed25519 key, zone Asia/Tokyo), a group schedule
per site (mon-fri 09:00-12:00 and 13:00-18:00), and per person and weekday
IN about 08:45, OUT 12:00, IN 13:00, OUT about 17:45 - with a few forgotten
OUTs and INs, double INs, visits to another site and punches from a reader without a
synchronised clock, so every anomaly kind is in the book.  Each punch is
signed with its reader's key and stored through the store's insert of
verified punches (what the consumer commits), not re-verified.  Then it
times ``kaoclock backend book --month M --csv`` as a separate process
(interpreter start included), the book's computation in this process, and
the web page: ``kaoclock backend serve`` started on the database, each page
fetched ``--repeat`` times over HTTP (request to the last byte; the first
fetch of a page opens the worker thread's database connection).
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo


def _progress(msg: str) -> None:
    print(f"bench book: {msg}", file=sys.stderr, flush=True)


def seed(db_url: str, people: int, sites: int, month: str, seed_: int = 19) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from firmware_py.backend.book import import_schedules, parse_month
    from firmware_py.backend.db import Database
    from firmware_py.backend.hr import HrMaster
    from firmware_py.backend.registry import DbDeviceRegistry
    from firmware_py.backend.store import PunchStore
    from firmware_py.backend.verify import VerifiedPunch
    from firmware_py.decision.outcome import Decision
    from firmware_py.keys.jwk import key_id, public_jwk
    from firmware_py.keys.jws import PUNCH_TYP, sign
    from firmware_py.punch.claims import build_claims
    from firmware_py.punch.ids import uuid7

    rng = random.Random(seed_)
    db = Database.open(db_url)
    reg = DbDeviceRegistry(db)
    readers = []
    for s in range(sites):
        key = Ed25519PrivateKey.generate()
        reg.add(f"site-{s:02d}", "gate-1", public_jwk(key))
        readers.append((f"site-{s:02d}", "gate-1", key, key_id(key), [0]))
    staff = "id,name,sites\n" + "".join(f"p{i:05d},Person {i},site-{i % sites:02d}\n" for i in range(people))
    HrMaster(db).import_people(staff.encode())
    shifts = (("09:00", "12:00"), ("13:00", "18:00"))
    rows = "".join(f"site:site-{s:02d},mon-fri,{a},{b},Asia/Tokyo\n" for s in range(sites) for a, b in shifts)
    import_schedules(db, ("who,days,start,end,tz\n" + rows).encode())
    store = PunchStore(db)
    first, _ = parse_month(month)
    tz = ZoneInfo("Asia/Tokyo")
    days = [first.replace(day=d) for d in range(1, calendar.monthrange(first.year, first.month)[1] + 1) if first.replace(day=d).weekday() < 5]
    batch: list[tuple[Any, str]] = []
    n = 0
    t0 = time.perf_counter()

    def punch(reader: tuple[Any, ...], person: str, direction: str, at: datetime, synced: bool = True) -> None:
        nonlocal n
        site, device, key, kid, seq = reader
        seq[0] += 1
        d = Decision(True, "match", 1, person_id=person, distance=0.4, threshold=0.55, ts=at.timestamp())
        claims = build_claims(d, direction, punch_id=str(uuid7()), site=site, device=device, seq=seq[0], clock_synced=synced,  # type: ignore[arg-type]
                              liveness_policy="passive", timezone="Asia/Tokyo")  # fmt: skip
        batch.append((VerifiedPunch(claims, sign(claims, key, PUNCH_TYP, kid), kid), ""))
        n += 1
        if len(batch) >= 2000:
            store.add_batch(batch)
            batch.clear()
            if n % 50_000 < 2000:
                _progress(f"{n} punches stored ({n / (time.perf_counter() - t0):.0f}/s)")

    for day in days:
        base = datetime(day.year, day.month, day.day, tzinfo=tz)
        for i in range(people):
            pid, home = f"p{i:05d}", readers[i % sites]
            r = rng.random()
            at_reader = readers[(i + 1) % sites] if r < 0.005 else home  # a visit to another site
            synced = not (0.005 <= r < 0.01)
            t_in = base + timedelta(minutes=525 + rng.randint(-15, 15))
            if not 0.04 <= r < 0.05:  # 1 % forget the morning IN
                punch(at_reader, pid, "in", t_in, synced)
            if 0.01 <= r < 0.02:
                punch(at_reader, pid, "in", t_in + timedelta(minutes=2), synced)  # double IN
            punch(at_reader, pid, "out", base + timedelta(hours=12), synced)
            punch(at_reader, pid, "in", base + timedelta(hours=13), synced)
            if not 0.02 <= r < 0.04:  # 2 % forget the last OUT
                punch(at_reader, pid, "out", base + timedelta(minutes=1065 + rng.randint(-20, 40)), synced)
    if batch:
        store.add_batch(batch)
    return {"punches": n, "working_days": len(days), "seed_s": round(time.perf_counter() - t0, 1)}


def time_pages(db_url: str, month: str, repeat: int, home: str) -> dict[str, Any]:
    """Start `backend serve` on the database and time its pages, each fetched ``repeat`` times."""
    proc = subprocess.Popen([sys.executable, "-m", "firmware_py", "backend", "serve", "--db", db_url, "--home", home, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("serving "):
            raise RuntimeError(f"backend serve did not start: {line!r} {proc.stderr.read() if proc.stderr and proc.poll() is not None else ''}")
        base = line.split()[1].rstrip("/")
        pages = {
            "book_page_1": f"/book?month={month}",
            "book_one_site": f"/book?month={month}&site=site-07",
            "book_last_page": f"/book?month={month}&page=50",
            "anomalies_page_1": f"/anomalies?month={month}",
            "person_month": f"/person/p00042?month={month}",
            "fleet": "/fleet",
        }
        out: dict[str, Any] = {}
        for name, path in pages.items():
            times, size, status = [], 0, 0
            for _ in range(repeat):
                t = time.perf_counter()
                try:
                    with urllib.request.urlopen(base + path, timeout=60) as resp:
                        size, status = len(resp.read()), resp.status
                except urllib.error.HTTPError as exc:
                    size, status = len(exc.read()), exc.code
                times.append(round(time.perf_counter() - t, 3))
            out[name] = {"path": path, "status": status, "bytes": size, "s": times}
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from firmware_py.backend import book
    from firmware_py.backend.db import Database
    from firmware_py.devtools.postgres import LocalPostgres, database_or_throwaway

    pg: LocalPostgres | None = None
    try:
        db_url, pg = database_or_throwaway(args.db)
        _progress(f"seeding {args.month}: {args.people} people on {args.sites} sites")
        seeded = seed(db_url, args.people, args.sites, args.month)
        _progress(f"seeded {seeded['punches']} punches; timing `backend book --month {args.month} --csv`")
        env = dict(os.environ)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "firmware_py", "backend", "book", "--month", args.month, "--csv", "--db", db_url],
                                  capture_output=True, text=True, env=env, check=True)  # fmt: skip
            times.append(time.perf_counter() - t)
        rows = proc.stdout.count("\n") - 1
        db = Database.open(db_url)
        t = time.perf_counter()
        m = book.compute(db, args.month)
        compute_s = time.perf_counter() - t
        t = time.perf_counter()
        one = book.compute(db, args.month, person="p00042")
        person_s = time.perf_counter() - t
        _progress("timing the web page (`backend serve`)")
        with tempfile.TemporaryDirectory(prefix="kaoclock-bench-web-") as home:
            web = time_pages(db_url, args.month, args.repeat, home)
        kinds: dict[str, int] = {}
        for a in m.anomalies:
            kinds[a.kind] = kinds.get(a.kind, 0) + 1
        return {
            "params": {"people": args.people, "sites": args.sites, "month": args.month},
            "database": "postgresql (throw-away, Debian package)" if pg else "given --db",
            "cpus": os.cpu_count(),
            "seeded": seeded,
            "book_csv_cli_s": [round(x, 2) for x in times],
            "book_csv_rows": rows,
            "compute_in_process_s": round(compute_s, 2),
            "one_person_month_s": round(person_s, 3),
            "one_person_days": len(one.days),
            "anomalies": kinds,
            "web_page_s": web,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    finally:
        if pg:
            pg.close()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("book", help="time of the monthly attendance book (backend book --month --csv) for a seeded month on PostgreSQL")
    p.add_argument("--people", type=int, default=5000, help="people (default 5000)")
    p.add_argument("--sites", type=int, default=50, help="sites, one reader each (default 50)")
    p.add_argument("--month", default="2026-12", help="the month to seed and render (default 2026-12)")
    p.add_argument("--repeat", type=int, default=2, help="runs of the CLI timed (default 2)")
    p.add_argument("--db", default=None, help="a postgresql:// URL to seed instead of a throw-away server (its tables are written to)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_book)


def cmd_book(args: argparse.Namespace) -> int:
    if args.people < 1 or args.sites < 2 or args.repeat < 1:
        print("--people and --repeat must be at least 1, --sites at least 2", file=sys.stderr)
        return 2
    print(json.dumps(run(args), indent=2))
    return 0
