"""End-to-end receipts on a real mosquitto: a punch leaves the reader's outbox only on the backend's signed receipt.

Each of these was a way to lose punches when a PUBACK counted as delivery:
no backend session (PUBACK 0x10), a subscriber that is not the backend, a
forged or misaddressed receipt; and a long outage had no alarm.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.compose.punch_path import recorder_from_config
from firmware_py.config import load, with_changes
from firmware_py.decision.outcome import Decision
from firmware_py.devtools.broker import Capture, LocalBroker
from firmware_py.events import EventBus
from firmware_py.keys.jws import COMMAND_TYP, RECEIPT_TYP, sign
from firmware_py.mqtt.device_link import DeviceLink
from firmware_py.mqtt.receipts import receipt_claims
from firmware_py.outbox.store import Outbox
from tests.receipt_support import Backend

SITE, DEVICE = "site-a", "reader-1"


def wait_until(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


class Device:
    def __init__(self, home: Path, url: str, **extra: Any) -> None:
        changes = {
            "device.data_dir": str(home),
            "device.site": SITE,
            "device.id": DEVICE,
            "mqtt.enabled": True,
            "mqtt.brokers": [url],
            "mqtt.reconnect_min_s": 0.05,
            "mqtt.reconnect_max_s": 0.3,
            "telemetry.interval_s": 3600.0,
            **extra,
        }
        self.cfg = with_changes(load(None), changes)
        self.bus = EventBus()
        self.events: list[Any] = []
        self.bus.subscribe(self.events.append)
        self.outbox = Outbox.from_config(self.cfg, self.bus)
        self.recorder = recorder_from_config(self.cfg, self.bus, self.outbox)
        self.link = DeviceLink.from_config(self.cfg, self.bus, outbox=self.outbox)

    def punch(self, n: int) -> list[str]:
        return [self.recorder.record(Decision(True, "match", i, person_id=f"emp-{i}", distance=0.4, threshold=0.55), "in") for i in range(n)]

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def test_no_backend_session_keeps_punches_until_the_backend_stores_them(tmp_path: Path, mosquitto: LocalBroker) -> None:
    """Finding 1: with no consumer session the broker answers PUBACK 0x10; that was counted as delivered."""
    backend = Backend(tmp_path / "backend")
    backend.register(tmp_path / "home")
    dev = Device(tmp_path / "home", mosquitto.url)
    dev.link.start()
    try:
        ids = dev.punch(5)
        # Nobody subscribes: every PUBACK says "No matching subscribers"; the punches stay, and one fault says why.
        assert wait_until(lambda: "outbox.publish_refused" in dev.types())
        refused = next(e for e in dev.events if e.type == "outbox.publish_refused")
        assert "subscribers" in refused.data["reason"].lower()
        time.sleep(0.5)
        assert dev.outbox.depth() == 5
        # The backend comes (a new session): the resends reach it, its receipts empty the outbox.
        backend.start(mosquitto.url, client_id="backend-late")
        assert wait_until(lambda: dev.outbox.depth() == 0, 15), dev.outbox.depth()
        assert sorted(backend.store.ids()) == sorted(ids)
    finally:
        dev.link.stop()
        backend.stop()


def test_puback_alone_never_deletes_and_unreceipted_punches_are_resent(tmp_path: Path, mosquitto: LocalBroker, contract: Any) -> None:
    """A subscriber that is not the backend (or a backend that stores nothing) acknowledges at the broker only."""
    backend = Backend(tmp_path / "backend")
    backend.register(tmp_path / "home")
    cap = Capture(mosquitto.url)  # a plain subscriber: PUBACK reason 0 "success", but no receipt
    dev = Device(tmp_path / "home", mosquitto.url, **{"outbox.receipt_timeout_s": 0.3, "outbox.resend_max_s": 0.6})
    dev.link.start()
    try:
        ids = dev.punch(3)
        # Published, acknowledged by the broker, and published again for want of a receipt.
        msgs = cap.wait_for(lambda m: sum(t.endswith("/punch") for t, _, _ in m) >= 9, timeout=15)
        sent = [json.loads(json.dumps(contract.check(t, p)))["id"] for t, p, _ in msgs if t.endswith("/punch")]
        assert set(sent) == set(ids) and all(sent.count(i) >= 2 for i in ids)
        assert dev.outbox.depth() == 3
        backend.start(mosquitto.url)
        assert wait_until(lambda: dev.outbox.depth() == 0, 15)
        assert sorted(backend.store.ids()) == sorted(ids)
        receipts = [contract.check(t, p) for t, p, _ in cap.messages if t.endswith("/receipts")]
        assert receipts and {i for r in receipts for i in r["ids"]} == set(ids)
    finally:
        dev.link.stop()
        backend.stop()
        cap.close()


def test_forged_or_misaddressed_receipts_remove_nothing(tmp_path: Path, mosquitto: LocalBroker) -> None:
    backend = Backend(tmp_path / "backend")
    backend.register(tmp_path / "home")
    dev = Device(tmp_path / "home", mosquitto.url)
    dev.link.start()
    cap = Capture(mosquitto.url)
    try:
        ids = dev.punch(2)
        assert dev.link.link.wait_connected(10) is not None
        topic = dev.link.topics.receipts
        other = Ed25519PrivateKey.generate()
        now = int(time.time())
        bad = [
            sign(receipt_claims(SITE, DEVICE, ids, receipt_id="r1", iat=now), other, RECEIPT_TYP),  # not the trusted backend key
            sign(receipt_claims(SITE, "reader-2", ids, receipt_id="r2", iat=now), backend.key, RECEIPT_TYP),  # for another reader
            sign(receipt_claims(SITE, DEVICE, ids, receipt_id="r3", iat=now), backend.key, COMMAND_TYP),  # a command's type
            sign({"v": 1, "id": "r4", "aud": f"{SITE}/{DEVICE}", "iat": now, "ids": "all"}, backend.key, RECEIPT_TYP),
            b"[" * 50000,
        ]
        for token in bad:
            cap.client.publish(topic, token, qos=1).wait_for_publish(5)
        assert wait_until(lambda: dev.link.receipts_refused == len(bad))
        assert dev.outbox.depth() == 2
        good = sign(receipt_claims(SITE, DEVICE, ids[:1], receipt_id="r5", iat=now), backend.key, RECEIPT_TYP)
        cap.client.publish(topic, good, qos=1).wait_for_publish(5)
        assert wait_until(lambda: dev.outbox.depth() == 1)
        assert [m.id for m in dev.outbox.pending()] == ids[1:]
    finally:
        dev.link.stop()
        cap.close()


def test_retention_bound_raises_the_alarm_and_the_status_flag_and_deletes_nothing(tmp_path: Path, mosquitto: LocalBroker, contract: Any) -> None:
    backend = Backend(tmp_path / "backend")
    backend.register(tmp_path / "home")
    dev = Device(tmp_path / "home", mosquitto.url, **{"outbox.retention_s": 1.0, "outbox.receipt_timeout_s": 0.3})
    dev.link.drainer.retention_check_s = 0.1
    cap = Capture(mosquitto.url)
    dev.link.start()
    try:
        ids = dev.punch(2)
        assert wait_until(lambda: any(e.type == "outbox.high_water" and e.data.get("reason") == "retention" for e in dev.events), 10)
        status = cap.wait_for(lambda m: any(t.endswith("/status") and b"unconfirmed_since" in p for t, p, _ in m))
        flagged = next(contract.check(t, p) for t, p, _ in status if t.endswith("/status") and b"unconfirmed_since" in p)
        assert flagged["state"] == "online" and flagged["reason"] == "outbox" and flagged["outbox_depth"] == 2
        assert dev.outbox.depth() == 2
        # The backend catches up: the flag is cleared in the retained status.
        backend.start(mosquitto.url)
        assert wait_until(lambda: dev.outbox.depth() == 0, 15)
        assert sorted(backend.store.ids()) == sorted(ids)
        assert wait_until(lambda: "outbox.normal" in dev.types())
        cap.wait_for(lambda m: [json.loads(p).get("unconfirmed_since") for t, p, _ in m if t.endswith("/status")][-1] is None)
    finally:
        dev.link.stop()
        backend.stop()
        cap.close()
