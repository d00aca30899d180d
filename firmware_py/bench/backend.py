"""`kaoclock bench backend`: the backend at a city's scale, measured.

Simulated readers (each its own Ed25519 key, registered like a real one)
sign real punches; a few MQTT connections publish them QoS 1 on each
reader's own topic to a broker; ``--consumers`` real ``kaoclock backend
consume`` processes on one shared subscription store them into one
PostgreSQL database.  By default the bench starts its own mosquitto and its
own PostgreSQL (Debian's packages) in a temporary directory; ``--broker`` and
``--db`` point it at real ones instead.

Phases:

1. latency: ``--latency-punches`` at ``--latency-rate`` per second (a
   realistic load), publish-to-row p50/p95 (the row's ``received`` time
   minus the publish time, one clock);
2. throughput: the rest of ``--punches`` as fast as the publishers go;
   sustained punches/s stored (first publish to last row), with
   ``--kill-one`` one consumer SIGKILLed halfway and restarted, and with
   ``--restart-broker`` the broker (persistence on) restarted at 70 %;
3. receipts: the consumers sign a receipt for every stored punch, as for
   real readers; the publishers keep each punch until its receipt comes and
   publish it again after ``--receipt-timeout`` (doubling), as a reader's
   outbox does, so whatever a broker drops is sent again end to end;
4. losses and duplicates: every published id is looked up; redeliveries the
   consumers recognised are the ``duplicates`` counter;
5. sync: ``--people`` in the HR master over ``--sync-sites`` sites (one
   reader each, hosted in a separate process), the time of a full sync
   (empty readers: one gallery snapshot each, or with ``--sync-snapshot-min 0``
   one command per person) and of one person moved between two sites.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _progress(msg: str) -> None:
    print(f"bench backend: {msg}", file=sys.stderr, flush=True)


def _ms(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile of seconds, in milliseconds (None without values)."""
    return round(float(np.percentile(np.asarray(values), q)) * 1000, 1) if values else None


def sign_punches(readers: list[tuple[str, str, Any, str]], n: int, people: int, t0: float) -> list[tuple[str, str, bytes]]:
    """``n`` real signed punches round-robin over ``readers`` (site, device, key, kid): (id, topic, token)."""
    from firmware_py.decision.outcome import Decision
    from firmware_py.keys.jws import PUNCH_TYP, sign
    from firmware_py.punch.claims import build_claims
    from firmware_py.punch.ids import uuid7

    seq = [0] * len(readers)
    out = []
    for i in range(n):
        r = i % len(readers)
        site, device, key, kid = readers[r]
        seq[r] += 1
        d = Decision(True, "match", 1, person_id=f"p{i % people:05d}", distance=0.4, threshold=0.55, ts=t0 + i * 0.001)
        pid = str(uuid7())
        claims = build_claims(
            d, "in" if seq[r] % 2 else "out", punch_id=pid, site=site, device=device, seq=seq[r], clock_synced=True,
            liveness_policy="passive", timezone="Asia/Tokyo",
        )  # fmt: skip
        out.append((pid, f"kaoclock/v1/{site}/{device}/punch", sign(claims, key, PUNCH_TYP, kid).encode("ascii")))
    return out


class Publishers:
    """``n`` MQTT 5 connections publishing QoS 1, and the readers' side of receipts.

    Each punch's first publish time is kept for the latency.  Every punch
    stays in ``unconfirmed`` until a receipt signed by the backend key names
    it (verified like a reader does); :meth:`resend_due` publishes again what
    has waited longer than ``receipt_timeout_s`` (doubling per attempt).

    With ``verify_later`` the signature checks wait for :meth:`verify_held`:
    500 real readers check their receipts on their own CPUs, so doing it here
    during the timed phase would charge the backend with the fleet's work on
    the same 2 cores.  A receipt only clears its punches at once; one that
    fails the later check puts them back as unconfirmed and is counted.
    """

    def __init__(self, host: str, port: int, n: int, backend_key: Any = None, receipt_timeout_s: float = 60.0, verify_later: bool = False) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.clients = []
        for i in range(n):
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}-{i}", protocol=paho.MQTTv5)
            c.max_inflight_messages_set(1000)
            c.max_queued_messages_set(0)
            c.connect(host, port)
            c.loop_start()
            self.clients.append(c)
        self.published: dict[str, float] = {}
        self.receipt_timeout_s = receipt_timeout_s
        self._lock = threading.Lock()
        self.unconfirmed: dict[str, tuple[str, bytes, float, int]] = {}  # id -> topic, token, last publish, attempts
        self.resent = 0
        self.resent_ids: set[str] = set()
        self.receipts = 0
        self.receipts_refused = 0
        self.verify_later = verify_later
        # topic, receipt, the entries it cleared from ``unconfirmed``: checked by verify_held()
        self._held: list[tuple[str, bytes, dict[str, tuple[str, bytes, float, int]]]] = []
        self._listener = None
        if backend_key is not None:
            from firmware_py.keys.jwk import parse_public_jwk, public_jwk

            pub = parse_public_jwk(public_jwk(backend_key))
            self._keys = {pub.kid: pub}
            lst = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-receipts-{os.getpid()}", protocol=paho.MQTTv5)
            subscribed = threading.Event()
            lst.on_connect = lambda cl, *_: cl.subscribe("kaoclock/v1/+/+/receipts", qos=1)  # again after every reconnect
            lst.on_subscribe = lambda *_: subscribed.set()
            lst.on_message = self._on_receipt
            lst.connect(host, port)
            lst.loop_start()
            if not subscribed.wait(10):
                raise RuntimeError("the receipt listener could not subscribe")
            self._listener = lst

    def _on_receipt(self, _client: Any, _userdata: Any, msg: Any) -> None:
        from firmware_py.keys.jws import JwsError, peek
        from firmware_py.mqtt.receipts import ReceiptRefused, verify_receipt

        parts = msg.topic.split("/")
        if self.verify_later:
            try:
                ids = peek(msg.payload)[1].get("ids")
            except JwsError:
                ids = None
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                with self._lock:
                    self.receipts_refused += 1
                return
            with self._lock:
                self.receipts += 1
                cleared = {i: e for i in ids if (e := self.unconfirmed.pop(i, None)) is not None}
                self._held.append((msg.topic, bytes(msg.payload), cleared))
            return
        try:
            ids = verify_receipt(msg.payload, self._keys, parts[2], parts[3])
        except ReceiptRefused:
            with self._lock:
                self.receipts_refused += 1
            return
        with self._lock:
            self.receipts += 1
            for i in ids:
                self.unconfirmed.pop(i, None)

    def verify_held(self) -> int:
        """Check the signatures of the receipts held by ``verify_later``; returns how many were refused."""
        from firmware_py.mqtt.receipts import ReceiptRefused, verify_receipt

        with self._lock:
            held, self._held = self._held, []
        refused = 0
        for topic, payload, cleared in held:
            parts = topic.split("/")
            try:
                if set(cleared) <= set(verify_receipt(payload, self._keys, parts[2], parts[3])):
                    continue
            except ReceiptRefused:
                pass
            refused += 1
            with self._lock:
                self.receipts -= 1
                self.receipts_refused += 1
                self.unconfirmed.update(cleared)  # not really confirmed: those punches are owed again
        return refused

    def resend_due(self) -> int:
        """Publish again every punch whose receipt is overdue; returns how many."""
        now = time.time()
        with self._lock:
            due = [
                (pid, t, tok, n) for pid, (t, tok, last, n) in self.unconfirmed.items() if now - last > self.receipt_timeout_s * 2 ** min(n - 1, 4)
            ]
            for pid, t, tok, n in due:
                self.unconfirmed[pid] = (t, tok, now, n + 1)
                self.resent_ids.add(pid)
        for k, (_pid, topic, token, _n) in enumerate(due):
            self.clients[k % len(self.clients)].publish(topic, token, qos=1)  # not connected: paho queues it for the reconnect
        self.resent += len(due)
        return len(due)

    def publish(self, punches: list[tuple[str, str, bytes]], rate: float = 0.0) -> float:
        """Publish (``rate`` per second, 0 = as fast as possible) and wait for every PUBACK; returns the seconds taken."""
        start = time.perf_counter()
        parts = [punches[i :: len(self.clients)] for i in range(len(self.clients))]
        per_client = rate / len(self.clients) if rate else 0.0
        lock = self._lock

        def run(client: Any, part: list[tuple[str, str, bytes]]) -> None:
            infos = []
            t_start = time.perf_counter()
            for k, (pid, topic, token) in enumerate(part):
                if per_client:
                    delay = t_start + k / per_client - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                now = time.time()
                with lock:
                    self.published[pid] = now
                    self.unconfirmed[pid] = (topic, token, now, 1)
                infos.append(client.publish(topic, token, qos=1))
            for info in infos:
                with contextlib.suppress(RuntimeError, ValueError):  # not sent (the broker was away): resend_due() sends it again
                    info.wait_for_publish(120)

        threads = [threading.Thread(target=run, args=(c, p)) for c, p in zip(self.clients, parts, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    def close(self) -> None:
        for c in [*self.clients, *([self._listener] if self._listener else [])]:
            c.disconnect()
            c.loop_stop()


class _Consumer:
    """One ``kaoclock backend consume`` process; its stderr is read all along (a full pipe would block it)."""

    def __init__(self, db: str, broker: str, home: Path, i: int, timeout_s: float = 120.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_py", "backend", "consume", "--home", str(home), "--db", db, "--broker", broker,
             "--group", "bench", "--client-id", f"bench-consumer-{i}", "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout_s):  # log lines (a slow SUBACK under load) may come first
            self.proc.kill()
            raise RuntimeError(f"consumer {i} did not start: {' | '.join(self.lines[-3:])}")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if "consuming punches" in line:
                self._ready.set()
        self._ready.set()  # exited

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def summary(self, timeout_s: float = 30.0) -> dict[str, Any] | None:
        """Stop it (SIGTERM) and return its closing summary line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        self._reader.join(5)
        try:
            last = json.loads(self.lines[-1])
            return last["summary"] | {"transactions": last["batches"]["transactions"], "largest_batch": last["batches"]["largest"]}
        except (ValueError, IndexError, KeyError):
            return None


def _wait_stored(store: Any, target: int, pubs: Publishers | None = None, stall_s: float = 60.0) -> int:
    """Wait until ``target`` rows are stored (and, given ``pubs``, every punch is receipted), resending overdue punches."""
    last, last_change = (-1, -1), time.monotonic()
    if pubs is not None:
        stall_s = max(stall_s, pubs.receipt_timeout_s * 1.5 + 30)  # give an overdue punch its resend before giving up
    while True:
        n = store.count()
        waiting = len(pubs.unconfirmed) if pubs else 0
        if n >= target and not waiting:
            return n
        if pubs is not None:
            pubs.resend_due()
        if (n, waiting) != last:
            last, last_change = (n, waiting), time.monotonic()
            _progress(f"{n}/{target} stored" + (f", {waiting} without receipt" if pubs else ""))
        elif time.monotonic() - last_change > stall_s:
            return n
        time.sleep(0.5)


def _latencies(db: Any, published: dict[str, float], ids: list[str]) -> tuple[list[float], float | None]:
    """Publish-to-row seconds of ``ids``, and the time of the last row."""
    lat, last = [], None
    for k in range(0, len(ids), 1000):
        chunk = ids[k : k + 1000]
        rows = db.query(f"SELECT id, received FROM punches WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        for pid, received in rows:
            lat.append(float(received) - published[pid])
            last = float(received) if last is None else max(last, float(received))
    return lat, last


def bench_punches(args: argparse.Namespace, db_url: str, broker_url: str, home: Path, broker: Any = None) -> dict[str, Any]:
    """Phases 1-4; ``broker`` is the bench's own LocalBroker (needed for ``--restart-broker``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from firmware_py.backend.db import Database
    from firmware_py.backend.home import BackendHome
    from firmware_py.backend.registry import DbDeviceRegistry
    from firmware_py.backend.store import PunchStore
    from firmware_py.keys.jwk import key_id, public_jwk
    from firmware_py.keys.store import init_private_key, load_private_key
    from firmware_py.mqtt.link import BrokerUrl

    db = Database.open(db_url)
    registry = DbDeviceRegistry(db)
    sites = max(1, args.readers // 10)
    readers = []
    _progress(f"registering {args.readers} readers on {sites} sites")
    for i in range(args.readers):
        key = Ed25519PrivateKey.generate()
        site, device = f"site-{i % sites:03d}", f"reader-{i:04d}"
        registry.add(site, device, public_jwk(key))
        readers.append((site, device, key, key_id(key)))
    _progress(f"signing {args.punches} punches")
    t_sign = time.perf_counter()
    punches = sign_punches(readers, args.punches, args.people, time.time())
    sign_s = time.perf_counter() - t_sign
    key_file = BackendHome(home).key_file  # the consumers sign a receipt for every stored punch with it
    init_private_key(key_file)
    consumers = [_Consumer(db_url, broker_url, home, i) for i in range(args.consumers)]
    url = BrokerUrl.parse(broker_url)
    pubs = Publishers(url.host, url.port, args.publishers, load_private_key(key_file), args.receipt_timeout, args.receipts_checked == "after")
    store = PunchStore(db)
    out: dict[str, Any] = {"signing_per_s": round(args.punches / sign_s, 1)}
    try:
        n_lat = min(args.latency_punches, args.punches)
        lat_part, bulk = punches[:n_lat], punches[n_lat:]
        if lat_part:
            _progress(f"latency phase: {n_lat} punches at {args.latency_rate}/s")
            pubs.publish(lat_part, args.latency_rate)
            _wait_stored(store, n_lat, pubs)
            lat, _ = _latencies(db, pubs.published, [p[0] for p in lat_part])
            out["latency"] = {
                "punches": n_lat,
                "rate_per_s": args.latency_rate,
                "publish_to_row_p50_ms": _ms(lat, 50),
                "publish_to_row_p95_ms": _ms(lat, 95),
            }
        killed = {"done": False}
        if bulk:
            _progress(f"throughput phase: {len(bulk)} punches as fast as {args.publishers} publishers go")
            if args.kill_one and args.consumers > 1:

                def kill_later() -> None:
                    target = n_lat + len(bulk) // 2
                    while store.count() < target:
                        time.sleep(0.05)
                    consumers[0].kill()
                    time.sleep(1.0)
                    consumers[0] = _Consumer(db_url, broker_url, home, 0)
                    killed["done"] = True

                threading.Thread(target=kill_later, daemon=True).start()
            restarted: dict[str, float | None] = {"down_s": None}
            if args.restart_broker and broker is not None:

                def restart_later() -> None:
                    target = n_lat + len(bulk) * 7 // 10
                    while store.count() < target:
                        time.sleep(0.05)
                    t = time.perf_counter()
                    broker.restart()  # SIGTERM: mosquitto saves its sessions and queues, then starts again
                    restarted["down_s"] = round(time.perf_counter() - t, 2)

                threading.Thread(target=restart_later, daemon=True).start()
            t0 = time.time()
            publish_s = pubs.publish(bulk)
            stored = _wait_stored(store, args.punches, pubs)
            all_receipted_s = round(time.time() - t0, 1) if not pubs.unconfirmed else None
            once = [p[0] for p in bulk if p[0] not in pubs.resent_ids]  # stored from their first publish
            lat, last = _latencies(db, pubs.published, once)
            out["throughput"] = {
                "punches": len(bulk),
                "publish_per_s": round(len(bulk) / publish_s, 1),
                "stored_per_s": round(len(lat) / (last - t0), 1) if last else None,
                "publish_to_row_p50_ms": _ms(lat, 50),
                "publish_to_row_p95_ms": _ms(lat, 95),
                "all_stored_and_receipted_s": all_receipted_s,
                "note": "publishers run flat out, so latency here includes the queue at the broker; stored_per_s and the latency "
                "count the punches stored from their first publish (resent ones are in all_stored_and_receipted_s)",
            }
            out["killed_and_restarted_one_consumer"] = killed["done"]
            if args.restart_broker:
                out["broker_restarted"] = restarted["down_s"] is not None
                out["broker_restart_s"] = restarted["down_s"]
        else:
            stored = store.count()
        sent = [p[0] for p in punches]
        found = 0
        for k in range(0, len(sent), 1000):
            chunk = sent[k : k + 1000]
            found += int(db.query(f"SELECT count(*) FROM punches WHERE id IN ({','.join('?' * len(chunk))})", chunk)[0][0])
        rows, distinct = db.query("SELECT count(*), count(DISTINCT id) FROM punches")[0]
        pubs.verify_held()  # --receipts-checked after: every receipt's signature, now that the clock has stopped
        out |= {
            "published": len(punches),
            "stored": stored,
            "losses": len(punches) - found,
            "duplicate_rows": int(rows) - int(distinct),
            "redeliveries_recognised": store.counter("duplicates"),
            "rejects": len(store.rejects(10)),
            "receipts": pubs.receipts,
            "receipts_refused": pubs.receipts_refused,
            "receipts_checked": args.receipts_checked,
            "without_receipt_at_end": len(pubs.unconfirmed),
            "resent_after_receipt_timeout": pubs.resent,
        }
    finally:
        pubs.close()
        for c in consumers:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        out["per_consumer"] = [c.summary() for c in consumers]
    return out


def bench_sync(args: argparse.Namespace, db_url: str, broker_url: str, home: Path) -> dict[str, Any]:
    from firmware_py.backend.db import Database
    from firmware_py.backend.hr import HrMaster
    from firmware_py.backend.registry import DbDeviceRegistry
    from firmware_py.backend.sync import Brokers, GallerySyncer
    from firmware_py.keys.jwk import public_jwk
    from firmware_py.keys.store import init_private_key, load_private_key

    db = Database.open(db_url)
    init_private_key(home / "backend_ed25519.pem")
    key = load_private_key(home / "backend_ed25519.pem")
    (home / "backend.jwk").write_text(json.dumps(public_jwk(key)))
    master = HrMaster.open(db, home / "templates.key")
    n_sites = args.sync_sites
    sites = [f"sync-{i:03d}" for i in range(n_sites)]
    for s in sites:
        master.add_site(s)
    emb = "bench-embedder"
    _progress(f"starting {n_sites} readers (one per site) in a separate process")
    host = subprocess.Popen(
        [sys.executable, "-m", "firmware_py.bench.gates", "--broker", broker_url, "--dir", str(home / "gates"),
         "--backend-jwk", str(home / "backend.jwk"), "--embedder", emb, *[f"{s}/gate" for s in sites]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert host.stdout is not None
        registry = DbDeviceRegistry(db)
        while True:
            line = host.stdout.readline()
            if not line:
                raise RuntimeError("the reader host exited")
            if line.strip() == "ready":
                break
            d = json.loads(line)
            registry.add(d["site"], d["device"], d["jwk"])
        # ~5% of people work at two sites (the documented way: list both sites).
        rows = ["id,name,sites"]
        rng = np.random.default_rng(1)
        for i in range(args.people):
            own = sites[i % n_sites]
            extra = f";{sites[(i + 1) % n_sites]}" if i % 20 == 0 and n_sites > 1 else ""
            rows.append(f"p{i:05d},Person {i},{own}{extra}")
        _progress(f"importing and enrolling {args.people} people")
        master.import_people(("\n".join(rows) + "\n").encode())
        for i in range(args.people):
            d = rng.normal(0, 0.1, 128).astype(np.float32)
            master.store_enrolment(f"p{i:05d}", [f"photo {i}".encode()], [d], emb)
        syncer = GallerySyncer(db, master, key, Brokers([broker_url]), wait_s=30.0, parallel=args.sync_parallel, snapshot_min=args.sync_snapshot_min)
        _progress(f"full sync of {args.people} people to {n_sites} sites")
        t0 = time.perf_counter()
        results = syncer.sync()
        full_s = time.perf_counter() - t0
        # One change: a person moves from one site to another.
        pid, old, new = "p00001", sites[1 % n_sites], sites[(1 + max(1, n_sites // 2)) % n_sites]  # two different sites from 2 up
        name = master.person(pid)[0]  # type: ignore[index]
        with db.tx() as cur:
            cur.execute("UPDATE person_sites SET site=? WHERE person_id=? AND site=?", (new, pid, old))
            cur.execute("UPDATE people SET updated=? WHERE person_id=?", (time.time(), pid))
        t1 = time.perf_counter()
        change = syncer.sync(sorted({old, new}))
        change_s = time.perf_counter() - t1
        return {
            "people": args.people,
            "sites": n_sites,
            "readers": n_sites,
            "full_sync_s": round(full_s, 2),
            "commands_sent": int(db.query("SELECT count(*) FROM command_log")[0][0]) - len(change) - sum(c.updated + c.removed for c in change),
            "readers_sent_a_snapshot": sum(r.snapshot for r in results),
            "snapshot_min": args.sync_snapshot_min,
            "per_reader_s_p50": round(statistics.median(r.seconds for r in results), 2),
            "per_reader_s_max": round(max(r.seconds for r in results), 2),
            "not_synced": [f"{r.site}/{r.device}: {r.status}" for r in results if r.status != "synced"],
            "one_change_s": round(change_s, 2),
            "one_change": f"{pid} ({name}) moved {old} -> {new}: " + ", ".join(f"{r.site} +{r.updated} -{r.removed}" for r in change),
        }
    finally:
        if host.stdin:
            host.stdin.close()
        try:
            host.wait(60)
        except subprocess.TimeoutExpired:
            host.kill()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from firmware_py.devtools.broker import LocalBroker
    from firmware_py.devtools.postgres import LocalPostgres, database_or_throwaway

    tmp = Path(tempfile.mkdtemp(prefix="kaoclock-bench-backend-"))
    pg: LocalPostgres | None = None
    broker = None
    try:
        db_url, pg = database_or_throwaway(args.db)
        if args.broker:
            broker_url = args.broker
        else:
            broker = LocalBroker(tmp / "mosquitto", persistence=args.restart_broker).start()
            broker_url = broker.url
        out: dict[str, Any] = {
            "params": {k: v for k, v in vars(args).items() if k not in ("func", "json", "db", "broker") and not callable(v)},
            "database": "postgresql (throw-away, Debian package)" if pg else "given --db",
            "broker": "mosquitto (throw-away)" if broker else "given --broker",
            "cpus": os.cpu_count(),
        }
        if args.punches:
            out["punches"] = bench_punches(args, db_url, broker_url, tmp / "home", broker)
        if args.people and args.sync_sites:
            sync_db = pg.new_database() if pg else db_url
            out["sync"] = bench_sync(args, sync_db, broker_url, tmp / "sync-home")
        return out
    finally:
        if broker:
            broker.stop()
        if pg:
            pg.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backend", help="backend at city scale: punches/s stored, publish-to-row latency, losses, sync time")
    p.add_argument("--readers", type=int, default=500, help="simulated readers, 10 per site (default 500)")
    p.add_argument("--people", type=int, default=5000, help="people in the HR master (default 5000)")
    p.add_argument("--punches", type=int, default=100000, help="punches in all (default 100000)")
    p.add_argument("--consumers", type=int, default=3, help="consumer processes on one shared subscription (default 3)")
    p.add_argument("--publishers", type=int, default=4, help="MQTT connections publishing the readers' punches (default 4)")
    p.add_argument("--latency-punches", type=int, default=2000, help="punches of the latency phase (default 2000)")
    p.add_argument("--latency-rate", type=float, default=100.0, help="punches per second in the latency phase (default 100)")
    p.add_argument("--kill-one", action="store_true", help="SIGKILL one consumer halfway through the throughput phase and restart it")
    p.add_argument(
        "--restart-broker", action="store_true", help="restart the bench's own mosquitto (persistence on) at 70 %% of the throughput phase"
    )
    p.add_argument(
        "--receipt-timeout",
        type=float,
        default=300.0,
        help="seconds before a punch without receipt is published again, doubling (default 300: longer than the queue the flat-out phase builds)",
    )
    p.add_argument(
        "--receipts-checked",
        choices=["after", "live"],
        default="after",
        help="when the simulated readers check each receipt's signature: 'after' the timed phase (default; real readers do it "
        "on their own CPUs, not the backend's) or 'live' as they arrive, on the same cores as the consumers",
    )
    p.add_argument("--sync-sites", type=int, default=50, help="sites (one reader each) for the sync measurement (default 50; 0 skips it)")
    p.add_argument(
        "--sync-snapshot-min",
        type=int,
        default=20,
        help="an empty reader owed at least this many people gets one gallery snapshot (default 20, as `backend sync`; 0: one command per person)",
    )
    p.add_argument("--sync-parallel", type=int, default=8, help="readers synced at once (default 8)")
    p.add_argument("--db", default=None, help="a postgresql:// URL to use instead of a throw-away server (its tables are written to)")
    p.add_argument("--broker", default=None, help="a broker URL to use instead of a throw-away mosquitto")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_backend)


def cmd_backend(args: argparse.Namespace) -> int:
    for name in ("readers", "consumers", "publishers"):
        if getattr(args, name) < 1:
            print(f"--{name} must be at least 1", file=sys.stderr)
            return 2
    if args.restart_broker and args.broker:
        print("--restart-broker restarts the bench's own mosquitto; it cannot be used with --broker", file=sys.stderr)
        return 2
    if args.sync_snapshot_min < 0:
        print("--sync-snapshot-min must be 0 (never) or more", file=sys.stderr)
        return 2
    if args.receipt_timeout <= 0:
        print("--receipt-timeout must be positive", file=sys.stderr)
        return 2
    if args.punches < 0 or (args.people < 1 and args.sync_sites):
        print("--punches must be >= 0 and --people >= 1", file=sys.stderr)
        return 2
    print(json.dumps(run(args), indent=2))
    return 0
