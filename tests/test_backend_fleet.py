"""The fleet view: the consumer stores each reader's retained status, telemetry and events from a real mosquitto
(the Last Will of a reader whose connection dies included) and `backend fleet` lists them with their alerts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from backend_support import Reader
from paho.mqtt.enums import CallbackAPIVersion

from firmware_py.backend.consumer import PunchConsumer
from firmware_py.backend.db import Database
from firmware_py.backend.fleet import FleetRecorder, fleet
from firmware_py.backend.registry import DbDeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.cli.main import main
from firmware_py.devtools.broker import LocalBroker
from firmware_py.events import Event
from firmware_py.keys.jwk import public_jwk
from firmware_py.mqtt.events_bridge import event_payload
from firmware_py.mqtt.status import encode, status_payload
from firmware_py.outbox.store import Outbox
from firmware_py.telemetry.collector import TelemetryCollector


def _client(port: int, will: tuple[str, bytes] | None = None) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    if will:
        c.will_set(will[0], will[1], qos=1, retain=True)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _wait(cond: Any, timeout: float = 10.0, what: Any = None) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out: {what}"
        time.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "fleet.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_fleet_from_status_telemetry_and_events(
    tmp_path: Path, mosquitto: LocalBroker, target: str, contract: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    db = Database.open(target)
    reg = DbDeviceRegistry(db)
    r1 = Reader(tmp_path, site="site-a", device="gate-1")
    r1.outbox = Outbox(tmp_path / "r1-small.sqlite", capacity=10, high_water=0.5)  # a small outbox that fills up
    r1.rec.outbox = r1.outbox
    r2 = Reader(tmp_path, site="site-a", device="gate-2")
    reg.add("site-a", "gate-1", public_jwk(r1.key))
    reg.add("site-a", "gate-2", public_jwk(r2.key))
    reg.add("site-b", "gate-9", public_jwk(Reader(tmp_path, site="site-b", device="gate-9").key))  # registered, never connected
    status2 = "kaoclock/v1/site-a/gate-2/status"
    will = encode(status_payload("site-a", "gate-2", "offline", "connection_lost", protocol=None))
    dev2 = _client(mosquitto.port, will=(status2, will))
    dev2.publish(status2, encode(status_payload("site-a", "gate-2", "online", "connected", protocol="5")), qos=1, retain=True).wait_for_publish()

    recorder = FleetRecorder(db)
    consumer = PunchConsumer(PunchStore(db), reg, fleet=recorder)
    link = consumer.connect([mosquitto.url], group="hr", client_id="hr-1", reconnect_min_s=0.1)
    pub = _client(mosquitto.port)
    try:
        assert link.wait_connected(10) is not None
        _wait(lambda: recorder.stored["status"] == 1)  # the retained birth of gate-2, published before the consumer came
        punches = [r1.punch("alice", "in" if i % 2 == 0 else "out") for i in range(6)]  # 6 waiting > high water 5
        pub.publish(r1.topic, punches[0], qos=1).wait_for_publish()
        msgs = [("kaoclock/v1/site-a/gate-1/status", encode(status_payload("site-a", "gate-1", "online", "connected", protocol="5", outbox_depth=6)))]
        tele = TelemetryCollector(
            site="site-a", device="gate-1", data_dir=tmp_path, outbox=r1.outbox, providers={"gallery": lambda: {"version": 7, "size": 42}}
        ).snapshot()
        tele["clock"] = {**tele["clock"], "synced": False, "detail": "no NTP server reachable"}  # what an unsynced reader reports
        msgs.append(("kaoclock/v1/site-a/gate-1/telemetry", json.dumps(tele).encode()))
        for ev in (
            Event("tamper", "alarm", {"state": "open"}),
            Event("door.forced_open", "alarm", {}),
            Event("decision.spoof_attempt", "alarm", {"score": 0.1}),
            Event("decision.spoof_attempt", "alarm", {"score": 0.2}),
            Event("update.rolled_back", "fault", {"slot": "b", "version": "0.9", "to_slot": "a", "reason": "health check failed"}),
        ):
            msgs.append(("kaoclock/v1/site-a/gate-1/events", json.dumps(event_payload(ev, "site-a", "gate-1")).encode()))
        msgs.append(("kaoclock/v1/site-a/gate-1/events", b"not json"))  # dropped, not looping
        for topic, payload in msgs:
            if payload != b"not json":
                contract.check(topic, payload)  # what a real reader publishes
            pub.publish(topic, payload, qos=1, retain=topic.endswith("/status")).wait_for_publish()
        dev2.socket().close()  # gate-2 vanishes without a DISCONNECT: the broker publishes its Last Will
        _wait(lambda: recorder.stored["events"] == 5 and recorder.stored["telemetry"] == 1 and recorder.stored["status"] == 3, what=recorder.stored)
        _wait(lambda: recorder.stored["ignored"] == 1)
    finally:
        consumer.stop()
        pub.loop_stop()
        dev2.loop_stop()
    lost_at = db.query("SELECT since_ms FROM reader_status WHERE device='gate-2'")[0][0] / 1000
    assert abs(lost_at - time.time()) < 30

    readers = {r["device"]: r for r in fleet(db, now=lost_at + 60)}
    assert sorted(readers) == ["gate-1", "gate-2", "gate-9"]
    g1 = readers["gate-1"]
    assert g1["state"] == "online" and g1["gallery"] == {"version": 7, "size": 42} and g1["outbox"]["depth"] == 6
    assert g1["cpu_temp_c"] == tele["cpu"]["temp_c"] and g1["models"] == tele["models"] and g1["firmware"] == tele["firmware"]
    assert g1["last_punch_stored"] is not None and g1["last_punch"] == tele["last_punch"]["ts"]
    alerts = {a["alert"]: a for a in g1["alerts"]}
    assert sorted(alerts) == ["clock_not_synced", "door_forced_open", "outbox_high_water", "spoof_attempts", "tamper", "update_rolled_back"]
    assert alerts["spoof_attempts"]["count"] == 2
    assert readers["gate-2"]["state"] == "offline" and readers["gate-2"]["alerts"] == []  # offline 1 min: not yet an alert
    assert [a["alert"] for a in readers["gate-9"]["alerts"]] == ["never_seen"]
    later = {r["device"]: r for r in fleet(db, now=lost_at + 11 * 60)}
    assert [a["alert"] for a in later["gate-2"]["alerts"]] == ["offline"] and "offline for 11 min" in later["gate-2"]["alerts"][0]["detail"]
    # the retained birth of gate-1 delivered again (a consumer restart) keeps its since
    since = db.query("SELECT since_ms FROM reader_status WHERE device='gate-1'")[0][0]
    recorder.handle(msgs[0][0], msgs[0][1])
    assert db.query("SELECT since_ms FROM reader_status WHERE device='gate-1'")[0][0] == since

    assert main(["backend", "fleet", "--json", "--site", "site-a", "--db", target]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["device"] for r in out] == ["gate-1", "gate-2"] and "tamper" in {a["alert"] for a in out[0]["alerts"]}
    assert main(["backend", "fleet", "--offline-after", "0", "--db", target]) == 2
