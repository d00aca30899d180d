"""Mutual TLS and the per-device ACL of mqtt/mosquitto/acl.example, on a real mosquitto."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from firmware_py.backend.consumer import PunchConsumer
from firmware_py.backend.registry import DeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.compose.punch_path import recorder_from_config
from firmware_py.config import load, with_changes
from firmware_py.decision.outcome import Decision
from firmware_py.devtools.broker import Capture, DevPki, LocalBroker
from firmware_py.events import EventBus
from firmware_py.keys.jwk import public_jwk
from firmware_py.keys.store import device_key_path, init_private_key, load_private_key
from firmware_py.mqtt.device_link import DeviceLink
from firmware_py.mqtt.link import BrokerUrl, LinkSettings, MqttLink, TlsFiles
from firmware_py.outbox.drain import OutboxDrainer
from firmware_py.outbox.store import Outbox, OutMessage
from firmware_py.paths import MQTT_CONTRACT


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tls")
    pki = DevPki(d / "pki")
    acl = (MQTT_CONTRACT / "mosquitto" / "acl.example").read_text()  # the documented example, verbatim
    broker = LocalBroker(d / "broker", pki=pki, acl=acl).start()
    certs = {cn: pki.issue(cn) for cn in ("reader-1", "reader-2", "kaoclock-backend")}
    yield broker, pki, certs
    broker.stop()


def tls_for(pki: DevPki, certs: dict, cn: str) -> tuple[str, str, str]:
    crt, key = certs[cn]
    return (str(pki.ca_file), str(crt), str(key))


def raw_client(broker: LocalBroker, tls: tuple[str, str, str] | None) -> tuple[paho.Client, dict[int, Any]]:
    acks: dict[int, Any] = {}
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{time.monotonic_ns()}", protocol=MQTTProtocolVersion.MQTTv5)
    if tls:
        c.tls_set(ca_certs=tls[0], certfile=tls[1], keyfile=tls[2])
    c.on_publish = lambda cl, u, mid, rc, p: acks.__setitem__(mid, rc)
    c.on_subscribe = lambda cl, u, mid, rcs, p: acks.__setitem__(mid, rcs)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    u = BrokerUrl.parse(broker.tls_url)
    c.connect(u.host, u.port)
    c.loop_start()
    assert connected.wait(10)
    return c, acks


def wait_ack(acks: dict[int, Any], mid: int) -> Any:
    deadline = time.monotonic() + 10
    while mid not in acks and time.monotonic() < deadline:
        time.sleep(0.01)
    return acks[mid]


def test_device_over_mutual_tls_and_backend_shared_subscription(tmp_path: Path, tls_broker: Any, contract: Any) -> None:
    broker, pki, certs = tls_broker
    ca, crt, key = tls_for(pki, certs, "reader-1")
    home = tmp_path / "home"
    init_private_key(device_key_path(home))
    cfg = with_changes(
        load(None),
        {
            "device.data_dir": str(home),
            "device.site": "site-a",
            "device.id": "reader-1",
            "mqtt.enabled": True,
            "mqtt.brokers": [broker.tls_url],
            "mqtt.ca_file": ca,
            "mqtt.cert_file": crt,
            "mqtt.key_file": key,
        },
    )
    bus = EventBus()
    outbox = Outbox.from_config(cfg, bus)
    recorder = recorder_from_config(cfg, bus, outbox)
    registry = DeviceRegistry(tmp_path / "devices")
    registry.add("site-a", "reader-1", public_jwk(load_private_key(device_key_path(home))))
    store = PunchStore(tmp_path / "punches.sqlite")
    consumer = PunchConsumer(store, registry)
    link = consumer.connect([broker.tls_url], client_id="backend-tls", tls=TlsFiles(*tls_for(pki, certs, "kaoclock-backend")))
    assert link.wait_connected(10) is not None
    cap = Capture(broker.tls_url, tls=tls_for(pki, certs, "kaoclock-backend"))
    dev = DeviceLink.from_config(cfg, bus, outbox=outbox)
    dev.start()
    try:
        ids = [recorder.record(Decision(True, "match", i, person_id="emp-1", distance=0.3, threshold=0.5), "in") for i in range(3)]
        deadline = time.monotonic() + 10
        while set(store.ids()) != set(ids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert set(store.ids()) == set(ids)  # through the ACL'd shared subscription, verified
        cap.wait_for(lambda m: any(t.endswith("/status") for t, _, _ in m))
        contract.check_all(cap.messages)
    finally:
        dev.stop()
        consumer.stop()
        cap.close()


def test_acl_refuses_another_devices_topics(tls_broker: Any) -> None:
    broker, pki, certs = tls_broker
    backend = Capture(broker.tls_url, tls=tls_for(pki, certs, "kaoclock-backend"))
    c, acks = raw_client(broker, tls_for(pki, certs, "reader-1"))
    try:
        foreign = c.publish("kaoclock/v1/site-a/reader-2/punch", b"forged", qos=1)
        assert wait_ack(acks, foreign.mid).getName() == "Not authorized"
        own = c.publish("kaoclock/v1/site-a/reader-1/events", b"{}", qos=1)
        assert not wait_ack(acks, own.mid).is_failure
        backend.wait_for(lambda m: any(t.endswith("reader-1/events") for t, _, _ in m))
        assert not [t for t, _, _ in backend.messages if "reader-2" in t]  # the forged punch never got through
    finally:
        c.disconnect()
        c.loop_stop()
    # Reading: reader-1 subscribes to every device's commands, but receives only its own.
    spy = Capture(broker.tls_url, "kaoclock/v1/+/+/commands", tls=tls_for(pki, certs, "reader-1"))
    try:
        backend.client.publish("kaoclock/v1/site-a/reader-2/commands", b"for reader-2", qos=1)
        backend.client.publish("kaoclock/v1/site-a/reader-1/commands", b"for reader-1", qos=1)
        spy.wait_for(lambda m: any(p == b"for reader-1" for _, p, _ in m))
        assert [p for _, p, _ in spy.messages] == [b"for reader-1"]
    finally:
        spy.close()
        backend.close()


def test_no_client_certificate_no_connection(tls_broker: Any) -> None:
    broker, pki, _ = tls_broker
    link = MqttLink(LinkSettings([BrokerUrl.parse(broker.tls_url)], "anon", tls=TlsFiles(str(pki.ca_file)), connect_timeout_s=3))
    link.start()
    try:
        assert link.wait_connected(1.5) is None
        assert link.state.last_error
    finally:
        link.stop()


def test_refused_puback_keeps_the_message_and_raises_a_fault(tmp_path: Path, tls_broker: Any) -> None:
    broker, pki, certs = tls_broker
    bus = EventBus()
    events: list[Any] = []
    bus.subscribe(events.append)
    outbox = Outbox(tmp_path / "o.sqlite", bus=bus)
    outbox.enqueue(OutMessage("m-1", "kaoclock/v1/site-a/reader-2/punch", b"x.y.z"))  # not reader-1's topic
    link = MqttLink(
        LinkSettings([BrokerUrl.parse(broker.tls_url)], "reader-1-drain", tls=TlsFiles(*tls_for(pki, certs, "reader-1")), clean_start=True)
    )
    drainer = OutboxDrainer(outbox, link, bus=bus, retry_min_s=0.2, retry_max_s=0.4)
    link.start()
    drainer.start()
    try:
        deadline = time.monotonic() + 10
        while drainer.published < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        drainer.stop()
        link.stop()
    refused = [e for e in events if e.type == "outbox.publish_refused"]
    assert drainer.published >= 3  # retried after growing pauses ...
    # ... with one fault for the run of refusals, not one per retry.
    assert len(refused) == 1 and refused[0].severity == "fault" and "authorized" in refused[0].data["reason"]
    assert outbox.depth() == 1  # retried, never dropped
    row = outbox._r.execute("SELECT last_error FROM messages").fetchone()
    assert "authorized" in row[0]
