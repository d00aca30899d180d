"""The backend on a real PostgreSQL: migrations, idempotent punches, the shared device registry,
a database that is read-only or down while punches arrive, and consumers that scale out."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from backend_support import Reader
from paho.mqtt.enums import CallbackAPIVersion

from firmware_py.backend.consumer import PunchConsumer
from firmware_py.backend.db import Database, DatabaseError, StoreUnavailable
from firmware_py.backend.home import BackendHome
from firmware_py.backend.migrations import LATEST, schema_version
from firmware_py.backend.registry import DbDeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.backend.verify import verify_punch
from firmware_py.cli.main import main
from firmware_py.compose.punch_path import recorder_from_config
from firmware_py.config import load, with_changes
from firmware_py.decision.outcome import Decision
from firmware_py.devtools.broker import LocalBroker
from firmware_py.events import EventBus
from firmware_py.keys.jwk import KeyFileError, public_jwk
from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key, load_private_key
from firmware_py.mqtt.device_link import DeviceLink
from firmware_py.outbox.store import Outbox


def _publisher(port: int) -> paho.Client:
    pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(100)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    return pub


def test_migrations_once_even_with_concurrent_starts(pg_url: str) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            Database.open(pg_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]  # four consumers starting at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    db = Database.open(pg_url)
    assert schema_version(db) == LATEST
    assert [r[0] for r in db.query("SELECT version FROM schema_migrations ORDER BY version")] == list(range(1, LATEST + 1))
    with psycopg.connect(pg_url, autocommit=True) as conn:  # a newer kaoclock migrated this database: refuse, do not guess
        conn.execute("INSERT INTO schema_migrations(version, name, applied) VALUES (%s, 'future', 0)", (LATEST + 1,))
    with pytest.raises(DatabaseError, match="newer than this kaoclock"):
        Database.open(pg_url)


def test_an_old_sqlite_punch_file_is_adopted(tmp_path: Path) -> None:
    """A punch database from before migrations keeps its punches and gains the new tables."""
    old = tmp_path / "punches.sqlite"
    conn = sqlite3.connect(old)
    conn.executescript(
        "CREATE TABLE punches (id TEXT PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL, person TEXT NOT NULL,"
        " direction TEXT NOT NULL, ts TEXT NOT NULL, ts_ms INTEGER NOT NULL, tz TEXT NOT NULL, clock_synced INTEGER, kid TEXT NOT NULL,"
        " claims TEXT NOT NULL, jws TEXT NOT NULL, received REAL NOT NULL);"
        "INSERT INTO punches VALUES ('p1','s','d',1,'e','in','2026-01-01T00:00:00.000Z',0,'UTC',1,'k','{}','t',0);"
    )
    conn.commit()
    conn.close()
    store = PunchStore(old)
    assert store.ids() == ["p1"] and schema_version(store.db) == LATEST
    assert store.db.query("SELECT count(*) FROM people")[0][0] == 0


def test_punches_idempotent_and_registry_shared_on_postgres(tmp_path: Path, pg_url: str) -> None:
    r1, r2 = Reader(tmp_path), Reader(tmp_path, device="reader-2")
    host_a, host_b = Database.open(pg_url), Database.open(pg_url)  # two consumer hosts, one database
    reg_a, reg_b = DbDeviceRegistry(host_a), DbDeviceRegistry(host_b, rescan_s=0.0)
    reg_a.add("site-a", "reader-1", public_jwk(r1.key))
    consumer_b = PunchConsumer(PunchStore(host_b), reg_b)
    token = r1.punch()
    assert consumer_b.handle(r1.topic, token).status == "stored"  # registered on host A, accepted on host B
    assert PunchConsumer(PunchStore(host_a), reg_a).handle(r1.topic, token).status == "duplicate"
    assert consumer_b.handle(r2.topic, r2.punch()).reason == "unknown_key"
    with pytest.raises(KeyFileError, match="already registered for site-a/reader-1"):
        reg_b.add("site-b", "reader-9", public_jwk(r1.key))
    with pytest.raises(KeyFileError, match="--replace"):
        reg_b.add("site-a", "reader-1", public_jwk(r2.key))
    store = PunchStore(host_a)
    assert store.count() == 1 and store.counter("duplicates") == 1
    assert [r["reason"] for r in store.rejects()] == ["unknown_key"]
    assert host_a.query("SELECT site FROM sites") == [("site-a",)]


def test_store_unavailable_while_read_only_or_down(tmp_path: Path, pg_url: str, postgres_server) -> None:
    reader = Reader(tmp_path)
    db = Database.open(pg_url)
    DbDeviceRegistry(db).add("site-a", "reader-1", public_jwk(reader.key))
    store = PunchStore(db)
    token = reader.punch()
    p = verify_punch(reader.topic, token, DbDeviceRegistry(db))
    postgres_server.set_read_only(pg_url, True)
    with pytest.raises(StoreUnavailable):
        store.add(p)
    with pytest.raises(StoreUnavailable, match="read-only"):
        store.add(p)  # reconnected, and refused again with the reason
    postgres_server.set_read_only(pg_url, False)
    assert store.add(p) == "stored"


def test_consumer_does_not_acknowledge_what_it_has_not_stored(tmp_path: Path, pg_url: str, postgres_server, mosquitto: LocalBroker) -> None:
    """Punches arriving while the database is read-only, then down, are redelivered and stored once it is back."""
    reader = Reader(tmp_path)
    db = Database.open(pg_url)
    DbDeviceRegistry(db).add("site-a", "reader-1", public_jwk(reader.key))
    committed: list[str] = []
    consumer = PunchConsumer(PunchStore(db), DbDeviceRegistry(db), after_commit=lambda outs: committed.extend(o.id for o in outs))
    link = consumer.connect([mosquitto.url], group="hr", client_id="hr-1", reconnect_min_s=0.2, reconnect_max_s=0.5)
    assert link.wait_connected(10) is not None
    pub = _publisher(mosquitto.port)
    count = PunchStore(pg_url)
    try:
        tokens = [reader.punch(f"emp-{i}") for i in range(6)]
        postgres_server.set_read_only(pg_url, True)
        for t in tokens[:3]:
            pub.publish(reader.topic, t, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while consumer.counts["unavailable"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert consumer.counts["unavailable"] >= 2  # refused, disconnected, delivered again, refused again
        postgres_server.stop()  # and now the server is down altogether
        for t in tokens[3:]:
            pub.publish(reader.topic, t, qos=1).wait_for_publish(5)
        time.sleep(1.0)
        postgres_server.start()
        postgres_server.set_read_only(pg_url, False)
        deadline = time.monotonic() + 20
        while count.count() < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert count.count() == 6 and consumer.counts["stored"] == 6
        assert sorted(committed) == sorted(count.ids())  # after_commit saw each stored punch after its commit
    finally:
        pub.disconnect()
        pub.loop_stop()
        consumer.stop()
        if not postgres_server.started:
            postgres_server.start()


REPO = Path(__file__).resolve().parents[1]


def _consumer(home: Path, db: str, broker: str, client_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "firmware_py", "backend", "consume", "--home", str(home), "--db", db, "--broker", broker,
         "--group", "city", "--client-id", client_id, "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip


class _Gate:
    """A simulated reader with the real punch path: signed recorder, durable outbox, MQTT link, receipts, resends."""

    def __init__(self, tmp: Path, site: str, device: str, broker_url: str, backend_jwk: dict[str, str]) -> None:
        self.home = tmp / device
        init_private_key(device_key_path(self.home))
        self.jwk = public_jwk(load_private_key(device_key_path(self.home)))
        backend_public_path(self.home).write_text(json.dumps(backend_jwk))
        cfg = with_changes(
            load(None),
            {
                "device.data_dir": str(self.home), "device.site": site, "device.id": device, "mqtt.enabled": True,
                "mqtt.brokers": [broker_url], "mqtt.reconnect_min_s": 0.1, "mqtt.reconnect_max_s": 0.5,
                "telemetry.interval_s": 3600, "outbox.receipt_timeout_s": 1.0, "outbox.resend_max_s": 2.0,
            },
        )  # fmt: skip
        bus = EventBus()
        self.outbox = Outbox.from_config(cfg, bus)
        self.recorder = recorder_from_config(cfg, bus, self.outbox)
        self.link = DeviceLink.from_config(cfg, bus, outbox=self.outbox)
        self.site, self.device = site, device

    def punch(self, n: int) -> str:
        d = Decision(True, "match", n, person_id=f"emp-{n % 9}", distance=0.4, threshold=0.55)
        return self.recorder.record(d, "in" if n % 2 == 0 else "out")


def test_three_consumers_consumer_killed_and_broker_restarted_every_punch_exactly_once(tmp_path: Path, pg_url: str) -> None:
    """Three consumers on one shared subscription into one PostgreSQL, four readers on the real outbox and receipts path.

    Mid-stream one consumer is SIGKILLed, the broker (with persistence) is
    restarted, and the consumer comes back.  Mosquitto 2.0.11 (Debian 12) does
    not restore a durable session's $share subscriptions on a restart (fixed
    upstream in 2.0.12): until the consumers subscribe again the broker answers
    the readers' punches with "no matching subscribers" and keeps nothing.  The
    consumers subscribe on every connection and the readers keep each punch
    until its signed receipt, so every punch still ends up stored exactly once.
    """
    broker = LocalBroker(tmp_path / "mosquitto", persistence=True).start()
    home = tmp_path / "backend"
    assert main(["backend", "init", "--home", str(home)]) == 0  # the key that signs receipts
    backend_jwk = public_jwk(load_private_key(BackendHome(home).key_file))
    gates = [_Gate(tmp_path, f"site-{i % 2}", f"gate-{i}", broker.url, backend_jwk) for i in range(4)]
    for g in gates:
        (tmp_path / f"{g.device}.jwk").write_text(json.dumps(g.jwk))
        assert main(["backend", "devices", "add", g.site, g.device, str(tmp_path / f"{g.device}.jwk"), "--db", pg_url, "--home", str(home)]) == 0
    procs = [_consumer(home, pg_url, broker.url, f"c-{i}") for i in range(3)]
    store = PunchStore(pg_url)
    recorded: list[str] = []
    try:
        for p in procs:
            assert p.stderr is not None and "consuming punches" in p.stderr.readline()
        for g in gates:
            g.link.start()
        for n in range(150):  # the readers punch interleaved, as a morning peak would
            recorded += [g.punch(n) for g in gates]
            if n == 40:
                procs[1].send_signal(signal.SIGKILL)  # mid-stream: stored-but-unacknowledged and in-flight punches
                procs[1].wait()
            if n == 70:
                broker.restart()  # with c-1's session (and what waits in it) saved, two consumers connected
                stored_at_restart = store.count()
            if n == 100:
                procs[1] = _consumer(home, pg_url, broker.url, "c-1")  # same client id: its saved session resumes
                assert procs[1].stderr is not None and "consuming punches" in procs[1].stderr.readline()  # back before the last 49 rounds
            time.sleep(0.01)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and (store.count() < len(recorded) or any(g.outbox.depth() for g in gates)):
            time.sleep(0.2)
        time.sleep(0.5)  # anything still in flight would show up as a surplus
        rows = store.db.query("SELECT id, count(*) FROM punches GROUP BY id")
        assert {r[0] for r in rows} == set(recorded), f"{len(set(recorded) - {r[0] for r in rows})} recorded punches not stored"
        assert all(r[1] == 1 for r in rows)
        assert dict(store.db.query("SELECT device, count(*) FROM punches GROUP BY device")) == {g.device: 150 for g in gates}
        assert [g.outbox.depth() for g in gates] == [0, 0, 0, 0]  # every punch receipted, none left waiting
        assert 0 < stored_at_restart <= 71 * 4  # the restart really was mid-stream: 316 punches came after it
        assert not store.rejects()
    finally:
        for g in gates:
            g.link.stop()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        summaries = []
        for p in procs:
            try:
                _, err = p.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                err = ""
            summaries.append(err)
        broker.stop()
    stored_by = [json.loads(e.strip().splitlines()[-1])["summary"].get("stored", 0) for e in summaries]
    assert sum(stored_by) >= 600 - 40 * 4 and all(n > 0 for n in stored_by), stored_by  # the restarted consumer and both others took a share
    assert os.environ.get("KAOCLOCK_BACKEND_DB") is None
