"""Fleet retention on SQLite and PostgreSQL: `backend prune --keep-days` deletes old telemetry and events (never a
reader's newest telemetry, never punches), and the last punch per reader is kept in a small table on insert
(filled from the stored punches by the migration) instead of a GROUP BY over every punch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from backend_support import Reader
from paho.mqtt.enums import CallbackAPIVersion

from firmware_py.backend import migrations
from firmware_py.backend import store as store_mod
from firmware_py.backend.db import Database
from firmware_py.backend.fleet import FleetRecorder, fleet, prune
from firmware_py.backend.registry import DbDeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.backend.verify import verify_punch
from firmware_py.cli.main import main
from firmware_py.devtools.broker import LocalBroker
from firmware_py.errors import ExitCode
from firmware_py.keys.jwk import public_jwk
from firmware_py.timefmt import utc_ms

DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "backend.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _by_group(db: Database) -> list[tuple[str, str, int]]:
    """What the fleet view used to compute: the newest stored punch per reader, over every punch."""
    return sorted((r[0], r[1], int(r[2])) for r in db.query("SELECT site, device, max(ts_ms) FROM punches GROUP BY site, device"))


def _table(db: Database) -> list[tuple[str, str, int]]:
    return sorted((r[0], r[1], int(r[2])) for r in db.query("SELECT site, device, ts_ms FROM reader_last_punch"))


def test_the_last_punch_per_reader_is_backfilled_by_the_migration_and_kept_on_insert(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database of schema 4 (before the table existed) that already holds punches stored by the code of then.
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
    monkeypatch.setattr(migrations, "LATEST", 4)
    monkeypatch.setattr(store_mod, "_note_last_punches", lambda _cur, _punches: None)
    db = Database.open(target)
    reg = DbDeviceRegistry(db)
    store = PunchStore(db)
    r1, r2 = Reader(tmp_path, "site-a", "gate-1"), Reader(tmp_path, "site-b", "gate-2")
    for r in (r1, r2):
        reg.add(r.site, r.device, public_jwk(r.key))
    t0 = time.time() - 10 * DAY

    def add(r: Reader, ts: float) -> list[str]:
        payload = r.punch("emp-1", "in", ts=ts)
        return store.add_batch([(verify_punch(r.topic, payload, reg), r.topic)])

    add(r1, t0), add(r1, t0 + 3600), add(r2, t0 + 60)
    monkeypatch.undo()
    assert migrations.migrate(db) == [n for n, _, _ in migrations.MIGRATIONS[4:]]  # 5 (this table) and any later
    assert _table(db) == _by_group(db) and len(_table(db)) == 2
    # On insert: a newer punch moves it; an older one sent late from an outbox, or a duplicate, leaves it.
    assert add(r1, t0 + 7200) == ["stored"]
    late = r2.punch("emp-2", "out", ts=t0)
    assert store.add_batch([(verify_punch(r2.topic, late, reg), r2.topic)]) == ["stored"]
    assert store.add_batch([(verify_punch(r2.topic, late, reg), r2.topic)]) == ["duplicate"]
    assert _table(db) == _by_group(db)
    assert dict(((s, d), ts) for s, d, ts in _table(db))[("site-a", "gate-1")] == int((t0 + 7200) * 1000)
    # Several punches of one reader in one transaction (a consumer's batch).
    batch = [(verify_punch(r2.topic, r2.punch("emp-3", "in", ts=t0 + k * 600), reg), r2.topic) for k in (5, 9, 7)]
    assert store.add_batch(batch) == ["stored"] * 3
    assert _table(db) == _by_group(db)
    view = {(e["site"], e["device"]): e for e in fleet(db)}
    assert view[("site-b", "gate-2")]["last_punch_stored"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t0 + 9 * 600)))


def test_prune_deletes_old_telemetry_and_events_but_keeps_each_readers_newest_telemetry(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = Database.open(target)
    rec = FleetRecorder(db)
    now = time.time()

    def send(device: str, channel: str, age_days: float, **extra: object) -> None:
        t = now - age_days * DAY
        msg = {"site": "site-a", "device": device, "ts": utc_ms(t), **extra}
        assert rec.handle(f"kaoclock/v1/site-a/{device}/{channel}", json.dumps(msg).encode(), received=t) == channel

    for age in (30, 20, 1):
        send("gate-1", "telemetry", age, cpu={"temp_c": 40 + age})
    for age in (40, 35):  # gate-2 has been switched off for 35 days
        send("gate-2", "telemetry", age, cpu={"temp_c": 70 + age})
    send("gate-1", "events", 30, type="door.forced_open", severity="alarm", data={})
    send("gate-1", "events", 1, type="door.held_open", severity="warning", data={})
    assert prune(db, 7, now=now) == {"telemetry": 3, "events": 1}
    ages = sorted((r[0], round((now * 1000 - int(r[1])) / 86400000)) for r in db.query("SELECT device, ts_ms FROM reader_telemetry"))
    assert ages == [("gate-1", 1), ("gate-2", 35)]
    assert [r[0] for r in db.query("SELECT type FROM reader_events")] == ["door.held_open"]
    view = {e["device"]: e for e in fleet(db, now=now)}
    assert view["gate-2"]["cpu_temp_c"] == 105  # the long-offline reader still shows its last telemetry
    assert prune(db, 7, now=now) == {"telemetry": 0, "events": 0}
    # The CLI, with --json; a bad --keep-days is refused.
    capsys.readouterr()
    assert main(["backend", "prune", "--keep-days", "0.5", "--json", "--db", target]) == 0
    assert json.loads(capsys.readouterr().out) == {"keep_days": 0.5, "deleted": {"telemetry": 0, "events": 1}}
    assert main(["backend", "prune", "--keep-days", "0", "--db", target]) == ExitCode.USAGE
    assert "--keep-days must be positive" in capsys.readouterr().err
    assert db.query("SELECT count(*) FROM reader_telemetry")[0][0] == 2


def test_consume_with_keep_days_prunes_at_start(tmp_path: Path, mosquitto: LocalBroker, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "backend"
    assert main(["backend", "init", "--home", str(home)]) == 0
    reader = Reader(tmp_path)
    db = Database.open(home / "punches.sqlite")
    DbDeviceRegistry(db).add(reader.site, reader.device, public_jwk(reader.key))
    rec, now = FleetRecorder(db), time.time()
    for age in (30, 1):
        msg = {"site": reader.site, "device": reader.device, "ts": utc_ms(now - age * DAY)}
        rec.handle(f"kaoclock/v1/{reader.site}/{reader.device}/events", json.dumps(msg | {"type": "tamper"}).encode(), received=now - age * DAY)
    argv = ["backend", "consume", "--home", str(home), "--broker", mosquitto.url, "--keep-days", "7", "--count", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}  # this checkout's firmware_py
    proc = subprocess.Popen([sys.executable, "-m", "firmware_py", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    deadline = time.monotonic() + 30
    try:
        while proc.poll() is None and time.monotonic() < deadline:  # the consumer stops after one stored punch
            pub.publish(reader.topic, reader.punch(), qos=1).wait_for_publish(5)
            time.sleep(0.5)
    finally:
        pub.disconnect()
        pub.loop_stop()
        if proc.poll() is None:
            proc.kill()
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert '{"pruned": {"telemetry": 0, "events": 1}}' in err
    assert db.query("SELECT count(*) FROM reader_events")[0][0] == 1
    assert main(["backend", "consume", "--home", str(home), "--broker", mosquitto.url, "--keep-days", "-1"]) == ExitCode.USAGE
