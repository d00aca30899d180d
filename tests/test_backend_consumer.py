"""The reference consumer: verification against registered keys, rejects with reasons, de-duplication,
shared subscriptions splitting the load, the consume CLI, and the attendance book."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from backend_support import Reader
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.backend.attendance import book
from firmware_py.backend.consumer import PunchConsumer
from firmware_py.backend.home import BackendHome
from firmware_py.backend.registry import DeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.cli.main import main
from firmware_py.devtools.broker import LocalBroker
from firmware_py.keys.jwk import KeyFileError, b64url_decode, b64url_encode, parse_public_jwk, public_jwk
from firmware_py.keys.jws import PUNCH_TYP, sign
from firmware_py.keys.store import load_private_key
from firmware_py.mqtt.receipts import verify_receipt


@pytest.fixture
def backend(tmp_path: Path) -> dict[str, Any]:
    registry = DeviceRegistry(tmp_path / "devices")
    store = PunchStore(tmp_path / "punches.sqlite")
    return {"registry": registry, "store": store, "consumer": PunchConsumer(store, registry)}


def test_verification_rejects_with_reasons_and_dedups(tmp_path: Path, backend: dict) -> None:
    r1, r2 = Reader(tmp_path), Reader(tmp_path, device="reader-2")
    reg, store, consumer = backend["registry"], backend["store"], backend["consumer"]
    reg.add("site-a", "reader-1", public_jwk(r1.key))
    good = r1.punch()
    assert consumer.handle(r1.topic, good).status == "stored"
    assert consumer.handle(r1.topic, good).status == "duplicate"  # at-least-once on the wire, once in the book

    h, p, s = good.decode().split(".")
    claims = json.loads(b64url_decode(p))
    forged_claims = b64url_encode(json.dumps(claims | {"person": "emp-666"}).encode())
    r2_token = r2.punch()
    cases = {
        "unknown_key": (r2.topic, r2_token),  # reader-2 is not registered
        "wrong_device": (r2.topic, sign(claims | {"device": "reader-2"}, r1.key, PUNCH_TYP).encode()),  # reader-1's key, reader-2's name
        "topic_mismatch": ("kaoclock/v1/site-a/reader-9/punch", r1.punch()),
        "bad_signature": (r1.topic, f"{h}.{forged_claims}.{s}".encode()),
        "malformed": (r1.topic, b"hello"),
        "bad_topic": ("kaoclock/v1/site-a/reader-1/events", r1.punch()),
        "oversized": (r1.topic, b"a" * 20000),
        "wrong_type": (r1.topic, sign(claims, r1.key, "kaoclock-command+jwt").encode()),
    }
    for reason, (topic, payload) in cases.items():
        out = consumer.handle(topic, payload)
        assert (out.status, out.reason) == ("rejected", reason), (reason, out.detail)
    bad_claims = sign({k: v for k, v in claims.items() if k != "seq"} | {"id": "0190a000-0000-7000-8000-000000000000"}, r1.key, PUNCH_TYP)
    assert consumer.handle(r1.topic, bad_claims.encode()).reason == "malformed"
    same_id_other_content = sign(claims | {"direction": "out"}, r1.key, PUNCH_TYP)
    assert consumer.handle(r1.topic, same_id_other_content.encode()).reason == "id_conflict"
    assert store.ids() == [claims["id"]]
    reasons = sorted(r["reason"] for r in store.rejects())
    assert reasons == sorted([*cases, "malformed", "id_conflict"])
    assert store.counter("duplicates") == 2
    # A device registered later is picked up without a restart (the rescan is rate-limited, 1/s by default).
    reg.rescan_s = 0.0
    reg2 = DeviceRegistry(tmp_path / "devices")
    reg2.add("site-a", "reader-2", public_jwk(r2.key))
    assert consumer.handle(r2.topic, r2_token).status == "stored"


def test_registry_refuses_bad_entries(tmp_path: Path) -> None:
    reg = DeviceRegistry(tmp_path / "devices")
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    reg.add("site-a", "reader-1", public_jwk(k1))
    with pytest.raises(KeyFileError, match="already registered for site-a/reader-1"):
        reg.add("site-b", "reader-7", public_jwk(k1))
    with pytest.raises(KeyFileError, match="--replace"):
        reg.add("site-a", "reader-1", public_jwk(k2))
    reg.add("site-a", "reader-1", public_jwk(k2), replace=True)
    with pytest.raises(KeyFileError, match="lowercase"):
        reg.add("Site A", "reader-1", public_jwk(k2))
    (tmp_path / "devices" / "site-a" / "broken.jwk").write_text("{")
    reg.scan()
    assert any("broken.jwk" in p for p in reg.problems) and [d.device for d in reg.devices()] == ["reader-1"]


def test_shared_subscription_splits_the_load(tmp_path: Path, mosquitto: LocalBroker) -> None:
    reader = Reader(tmp_path)
    stores, consumers = [], []
    for i in range(2):
        reg = DeviceRegistry(tmp_path / "devices")
        reg.add("site-a", "reader-1", public_jwk(reader.key))
        store = PunchStore(tmp_path / f"consumer-{i}.sqlite")
        consumer = PunchConsumer(store, reg)
        assert consumer.connect([mosquitto.url], group="hr", client_id=f"hr-{i}").wait_connected(10) is not None
        stores.append(store)
        consumers.append(consumer)
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    tokens = [reader.punch(f"emp-{i}") for i in range(20)]
    for t in tokens:
        pub.publish(reader.topic, t, qos=1).wait_for_publish(5)
    try:
        deadline = time.monotonic() + 10
        while sum(s.count() for s in stores) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        a, b = set(stores[0].ids()), set(stores[1].ids())
        assert len(a | b) == 20 and not (a & b)  # every punch to exactly one consumer of the group
        assert a and b  # both consumers got a share
    finally:
        pub.disconnect()
        pub.loop_stop()
        for consumer in consumers:
            consumer.stop()


def test_consume_cli(tmp_path: Path, mosquitto: LocalBroker, capsys: pytest.CaptureFixture[str]) -> None:
    reader = Reader(tmp_path)
    home = tmp_path / "backend"
    jwk = tmp_path / "reader.jwk"
    jwk.write_text(json.dumps(public_jwk(reader.key)))
    assert main(["backend", "devices", "add", "site-a", "reader-1", str(jwk), "--home", str(home)]) == 0
    assert main(["backend", "devices", "list", "--home", str(home)]) == 0
    assert "site-a/reader-1" in capsys.readouterr().out
    # Without its key the backend could not sign receipts, and readers would keep every punch: refused.
    assert main(["backend", "consume", "--home", str(home), "--broker", mosquitto.url]) == 2
    assert "backend init" in capsys.readouterr().err
    assert main(["backend", "init", "--home", str(home)]) == 0
    assert "backend key created" in capsys.readouterr().out
    backend_key = load_private_key(BackendHome(home).key_file)
    receipts: list[bytes] = []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firmware_py",
            "backend",
            "consume",
            "--home",
            str(home),
            "--broker",
            mosquitto.url,
            "--count",
            "2",
            "--client-id",
            "cli-1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    pub.on_message = lambda _c, _u, m: receipts.append(m.payload)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.subscribe("kaoclock/v1/site-a/reader-1/receipts", qos=1)
    pub.loop_start()
    try:
        watchdog = threading.Timer(30, proc.kill)  # never hang the suite on a stuck consumer
        watchdog.start()
        assert "consuming punches" in proc.stderr.readline()  # connected and subscribed
        first = reader.punch()
        for t in (first, first, b"junk", reader.punch("emp-2", "out")):
            pub.publish(reader.topic, t, qos=1).wait_for_publish(5)
        out, err = proc.communicate(timeout=20)
        watchdog.cancel()
    finally:
        pub.disconnect()
        pub.loop_stop()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["status"], x["reason"]) for x in lines] == [("stored", None), ("duplicate", None), ("rejected", "malformed"), ("stored", None)]
    # Signed receipts name every stored punch (and the duplicate), never the rejected message.
    trusted = parse_public_jwk(public_jwk(backend_key))
    deadline = time.monotonic() + 5
    while len({i for r in receipts for i in verify_receipt(r, {trusted.kid: trusted}, "site-a", "reader-1")}) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    confirmed = [i for r in receipts for i in verify_receipt(r, {trusted.kid: trusted}, "site-a", "reader-1")]
    assert set(confirmed) == {lines[0]["id"], lines[3]["id"]}
    assert confirmed.count(lines[0]["id"]) == 2  # the duplicate is confirmed again: its first receipt may have been lost
    assert main(["backend", "rejects", "--home", str(home)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["reason"] == "malformed"


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_attendance_book_and_time_zones(tmp_path: Path, backend: dict, capsys: pytest.CaptureFixture[str]) -> None:
    tokyo = Reader(tmp_path, device="gate-1", tz="Asia/Tokyo")
    lisbon = Reader(tmp_path, site="site-b", device="gate-9", tz="Europe/Lisbon")
    reg, store = backend["registry"], backend["store"]
    reg.add("site-a", "gate-1", public_jwk(tokyo.key))
    reg.add("site-b", "gate-9", public_jwk(lisbon.key))
    punches = [
        # alice in Tokyo (UTC+9) on 2026-03-02: 08:58 in, 12:00 out, 13:00 in, 17:30 out -> 7:32 worked
        (tokyo, "alice", "in", "2026-03-01T23:58:00"),
        (tokyo, "alice", "out", "2026-03-02T03:00:00"),
        (tokyo, "alice", "in", "2026-03-02T04:00:00"),
        (tokyo, "alice", "in", "2026-03-02T04:00:05"),  # double punch: the first counts
        (tokyo, "alice", "out", "2026-03-02T08:30:00"),
        # bob in Tokyo: in at 22:00 local, no out before midnight -> missing out
        (tokyo, "bob", "in", "2026-03-02T13:00:00"),
        (tokyo, "bob", "out", "2026-03-02T17:00:00"),  # 02:00 on 03-03 local: the next day
        # carol in Lisbon (UTC+0 in March before DST): 23:30 UTC on 03-01 is 03-01 there, 09:00 in / 17:00 out on 03-02
        (lisbon, "carol", "in", "2026-03-01T23:30:00"),
        (lisbon, "carol", "in", "2026-03-02T09:00:00"),
        (lisbon, "carol", "out", "2026-03-02T17:00:00"),
    ]
    for reader, person, direction, ts in punches:
        assert backend["consumer"].handle(reader.topic, reader.punch(person, direction, utc(ts))).status == "stored"
    rows = {r.person: r for r in book(store, datetime(2026, 3, 2).date())}
    assert sorted(rows) == ["alice", "bob", "carol"]
    a = rows["alice"]
    assert a.first_in.isoformat() == "2026-03-02T08:58:00+09:00" and a.last_out.isoformat() == "2026-03-02T17:30:00+09:00"
    assert a.worked.total_seconds() == (3 * 60 + 2 + 4 * 60 + 30) * 60 and not a.missing_out and a.punches == 5
    assert rows["bob"].missing_out and rows["bob"].last_out is None and rows["bob"].worked.total_seconds() == 0
    c = rows["carol"]
    assert c.first_in.isoformat() == "2026-03-02T09:00:00+00:00" and c.worked.total_seconds() == 8 * 3600
    # The next day in Tokyo: bob's out without an in.
    nxt = {r.person: r for r in book(store, datetime(2026, 3, 3).date())}
    assert nxt["bob"].missing_in == 1 and nxt["bob"].last_out.isoformat() == "2026-03-03T02:00:00+09:00"
    # --tz UTC puts everyone on the UTC calendar instead.
    utc_rows = {r.person: r for r in book(store, datetime(2026, 3, 1).date(), "UTC")}
    assert utc_rows["alice"].first_in.isoformat() == "2026-03-01T23:58:00+00:00" and utc_rows["alice"].missing_out
    assert utc_rows["carol"].first_in.isoformat() == "2026-03-01T23:30:00+00:00"

    home = tmp_path  # the backend fixture's store lives at tmp_path/punches.sqlite, the CLI's home layout
    assert main(["backend", "attendance", "--date", "2026-03-02", "--csv", "--home", str(home)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "date,person,first_in,last_out,worked_minutes,worked,punches,missing_out,missing_in,devices"
    assert out[1] == "2026-03-02,alice,2026-03-02T08:58:00+09:00,2026-03-02T17:30:00+09:00,452,7:32,5,no,0,site-a/gate-1"
    assert out[2] == "2026-03-02,bob,2026-03-02T22:00:00+09:00,,0,0:00,1,yes,0,site-a/gate-1"
    assert main(["backend", "attendance", "--date", "2026-02-30", "--home", str(home)]) == 2
    assert main(["backend", "attendance", "--date", "2026-03-02", "--tz", "Mars/Olympus", "--home", str(home)]) == 2
