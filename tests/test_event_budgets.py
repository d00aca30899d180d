"""Alarms always get out: routine events and junk commands cannot use up the alarms' budget (real mosquitto)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from firmware_py.config import load, with_changes
from firmware_py.devtools.broker import Capture, LocalBroker
from firmware_py.events import EventBus
from firmware_py.keys.store import device_key_path, init_private_key
from firmware_py.mqtt.commands.processor import UNAUTHENTICATED
from firmware_py.mqtt.device_link import DeviceLink
from firmware_py.outbox.store import Outbox

ALARMS = ("door.forced_open", "tamper", "decision.spoof_attempt")


def test_alarms_pass_a_flood_of_routine_events_and_junk_commands(tmp_path: Path, mosquitto: LocalBroker) -> None:
    home = tmp_path / "home"
    init_private_key(device_key_path(home))
    cfg = with_changes(
        load(None),
        {
            "device.data_dir": str(home),
            "device.site": "site-a",
            "device.id": "reader-1",
            "mqtt.enabled": True,
            "mqtt.brokers": [mosquitto.url],
            "mqtt.events_per_minute": 10,
            "telemetry.interval_s": 3600.0,
        },
    )
    bus = EventBus()
    seen: list = []
    bus.subscribe(seen.append)
    link = DeviceLink.from_config(cfg, bus, outbox=Outbox.from_config(cfg, bus))
    cap = Capture(mosquitto.url)
    link.start()
    try:
        assert link.link.wait_connected(10) is not None
        # A busy gate: routine events far beyond the budget ...
        for i in range(200):
            bus.emit_new("decision.unknown_face", "info", track_id=i)
        # ... and a flood of junk on the commands topic (each refusal is a routine event too).
        for _ in range(50):
            cap.client.publish(link.topics.commands, b"not a command", qos=1).wait_for_publish(5)
        time.sleep(0.5)
        # Unsigned junk costs no event budget: one command.refused for the lot, not fifty.
        refused = [e for e in seen if e.type == "command.refused"]
        assert len(refused) == 1 and refused[0].data["reason"] in UNAUTHENTICATED, refused
        for name in ALARMS:
            bus.emit_new(name, "alarm", test=True)
        bus.emit_new("outbox.store_failed", "fault", error="disk full", path="x")
        msgs = cap.wait_for(lambda m: sum(b'"test":true' in p for t, p, _ in m if t.endswith("/events")) >= len(ALARMS), timeout=10)
        events = [json.loads(p) for t, p, _ in msgs if t.endswith("/events")]
        assert [e["type"] for e in events if e["data"].get("test")] == list(ALARMS)
        cap.wait_for(lambda m: any(b"outbox.store_failed" in p for t, p, _ in m))
        routine = [e for e in events if e["severity"] in ("info", "warning")]
        assert len(routine) <= 12  # the routine budget held (burst of 10, plus what refilled meanwhile) ...
        assert sum(e["dropped"] for e in events) >= 200 - len(routine)  # ... and what it dropped is counted
    finally:
        link.stop()
        cap.close()
