"""The device's MQTT side against a real mosquitto: failover, birth/will/goodbye status, telemetry,
events, reconnect after a broker restart, MQTT 3.1.1 and the fallback to it. Every message is
checked against the contract's schemas."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from firmware_py.compose.punch_path import recorder_from_config
from firmware_py.config import load, with_changes
from firmware_py.decision.outcome import Decision, LivenessVerdict
from firmware_py.devtools.broker import Capture, LocalBroker, free_port
from firmware_py.events import EventBus
from firmware_py.keys.store import device_key_path, init_private_key
from firmware_py.mqtt.device_link import DeviceLink
from firmware_py.mqtt.event_catalogue import DecisionEvents
from firmware_py.mqtt.link import BrokerUrl
from firmware_py.outbox.store import Outbox
from tests.receipt_support import Backend


def device_cfg(home: Path, brokers: list[str], **extra: Any):
    changes = {
        "device.data_dir": str(home),
        "device.site": "site-a",
        "device.id": "reader-1",
        "mqtt.enabled": True,
        "mqtt.brokers": brokers,
        "mqtt.reconnect_min_s": 0.05,
        "mqtt.reconnect_max_s": 0.3,
        "mqtt.connect_timeout_s": 3.0,
        "telemetry.interval_s": 3600.0,
    }
    changes.update(extra)
    init_private_key(device_key_path(home))
    return with_changes(load(None), changes)


class Device:
    """Outbox + recorder + DeviceLink, as the daemon wires them."""

    def __init__(self, cfg: Any) -> None:
        self.bus = EventBus()
        self.events: list[Any] = []
        self.bus.subscribe(self.events.append)
        self.outbox = Outbox.from_config(cfg, self.bus)
        self.recorder = recorder_from_config(cfg, self.bus, self.outbox)
        self.link = DeviceLink.from_config(cfg, self.bus, outbox=self.outbox)

    def punch(self, n: int = 1) -> list[str]:
        return [self.recorder.record(Decision(True, "match", i, person_id=f"emp-{i}", distance=0.4, threshold=0.55), "in") for i in range(n)]

    def types(self) -> list[str]:
        return [e.type for e in self.events]


def jws_claims(token: bytes) -> str:
    from firmware_py.keys.jwk import b64url_decode

    return b64url_decode(token.decode().split(".")[1]).decode()


def status_of(capture: Capture) -> list[dict]:
    return [json.loads(p) for _t, p, _r in capture.on("status")]


def test_failover_birth_punches_telemetry_events_goodbye(tmp_path: Path, mosquitto: LocalBroker, contract: Any) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens here: the link must fail over
    cfg = device_cfg(tmp_path / "home", [dead, mosquitto.url], **{"telemetry.interval_s": 1.0})
    backend = Backend(tmp_path / "backend")
    backend.register(tmp_path / "home")
    dev = Device(cfg)
    ids = dev.punch(3)  # recorded while offline: they wait in the outbox
    cap = Capture(mosquitto.url)
    backend.start(mosquitto.url)  # stores them and sends the receipts that empty the outbox
    dev.link.start()
    try:
        msgs = cap.wait_for(lambda m: sum(t.endswith("/punch") for t, _, _ in m) >= 3 and any(t.endswith("/telemetry") for t, _, _ in m))
        DecisionEvents(dev.bus).on_decision(
            Decision(
                False, "spoof", 9, person_id="emp-1", liveness=LivenessVerdict("strict", False, 0.1, 0.5, {"moire": 0.9}, "moire pattern of a screen")
            )
        )
        msgs = cap.wait_for(lambda m: any(b'"decision.spoof_attempt"' in p for t, p, _ in m if t.endswith("/events")))
        punches = [contract.check(t, p) for t, p, _ in msgs if t.endswith("/punch")]
        assert [p["id"] for p in punches] == ids and [p["seq"] for p in punches] == [1, 2, 3]
        birth = status_of(cap)[0]
        assert (birth["state"], birth["reason"], birth["protocol"]) == ("online", "connected", "5")
        tele = contract.check(*next((t, p) for t, p, _ in msgs if t.endswith("/telemetry")))
        assert tele["link"]["connected"] is True and tele["link"]["broker"] == str(BrokerUrl.parse(mosquitto.url))
        assert tele["outbox"]["capacity"] == cfg.outbox.capacity and tele["last_punch"]["id"] == ids[-1]
        assert tele["clock"]["source"] in ("adjtimex", "unknown")
        assert set(tele["unavailable"]) == {"pipeline", "gallery", "camera"}  # not wired in this test, and said so
        spoof = next(json.loads(p) for t, p, _ in cap.on("events") if b"spoof" in p)
        assert spoof["severity"] == "alarm" and spoof["data"]["liveness"]["reason"] == "moire pattern of a screen"
        # The offline signal while the first (dead) broker was tried, then online with the queue size.
        types = dev.types()
        assert types.index("link.offline") < types.index("link.online")
        online = next(e for e in dev.events if e.type == "link.online")
        assert online.data["queued"] == 3 and online.data["protocol"] == "5"
        # A late subscriber gets the retained birth message.
        late = Capture(mosquitto.url)
        late.wait_for(lambda m: any(t.endswith("/status") and r for t, _, r in m))
        assert status_of(late)[-1]["state"] == "online"
        late.close()
        deadline = time.monotonic() + 5
        while dev.outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert dev.outbox.depth() == 0 and sorted(backend.store.ids()) == sorted(ids)
        cap.wait_for(lambda m: sum(t.endswith("/telemetry") for t, _, _ in m) >= 2, timeout=5)  # periodic, every interval_s
    finally:
        dev.link.stop()
        backend.stop()
    cap.wait_for(lambda m: any(b'"shutdown"' in p for t, p, _ in m if t.endswith("/status")))
    after = Capture(mosquitto.url)
    after.wait_for(lambda m: any(t.endswith("/status") for t, _, _ in m))
    goodbye = status_of(after)[-1]
    assert (goodbye["state"], goodbye["reason"]) == ("offline", "shutdown")
    contract.check_all(cap.messages + after.messages)
    cap.close()
    after.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    from firmware_py.config import load, with_changes
    from firmware_py.events import EventBus
    from firmware_py.mqtt.device_link import DeviceLink
    from firmware_py.outbox.store import Outbox
    cfg = with_changes(load(None), {"device.data_dir": sys.argv[1], "device.site": "site-a", "device.id": "reader-1",
                                    "mqtt.enabled": True, "mqtt.brokers": [sys.argv[2]]})
    bus = EventBus()
    link = DeviceLink.from_config(cfg, bus, outbox=Outbox.from_config(cfg, bus))
    link.start()
    time.sleep(60)
    """
)


def test_last_will_says_offline_when_the_process_dies(tmp_path: Path, mosquitto: LocalBroker, contract: Any) -> None:
    home = tmp_path / "home"
    device_cfg(home, [mosquitto.url])
    cap = Capture(mosquitto.url)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(home), mosquitto.url])
    try:
        cap.wait_for(lambda m: any(b'"online"' in p for t, p, _ in m if t.endswith("/status")), timeout=15)
        child.send_signal(signal.SIGKILL)
        child.wait()
        cap.wait_for(lambda m: any(b'"connection_lost"' in p for t, p, _ in m if t.endswith("/status")))
    finally:
        if child.poll() is None:
            child.kill()
    will = status_of(cap)[-1]
    assert (will["state"], will["reason"], will["protocol"]) == ("offline", "connection_lost", None)
    late = Capture(mosquitto.url)
    late.wait_for(lambda m: any(t.endswith("/status") for t, _, _ in m))
    assert status_of(late)[-1]["reason"] == "connection_lost"  # retained
    contract.check_all(cap.messages)
    cap.close()
    late.close()


def test_reconnects_after_broker_restart_and_signals_offline(tmp_path: Path, contract: Any) -> None:
    broker = LocalBroker(tmp_path / "broker", persistence=True).start()
    cfg = device_cfg(tmp_path / "home", [broker.url], **{"mqtt.reconnect_min_s": 0.1})
    dev = Device(cfg)
    cap = Capture(broker.url, persistent=True)
    dev.link.start()
    try:
        assert dev.link.link.wait_connected(10) is not None
        dev.punch(2)
        cap.wait_for(lambda m: sum(t.endswith("/punch") for t, _, _ in m) >= 2)
        broker.stop()
        deadline = time.monotonic() + 5
        while "link.offline" not in dev.types() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "link.offline" in dev.types()
        queued = dev.punch(3)
        assert dev.outbox.depth() == 5  # the first two only got a PUBACK, no backend receipt: they stay too
        broker.start()
        ids = lambda m: list(dict.fromkeys(json.loads(jws_claims(p))["id"] for t, p, _ in m if t.endswith("/punch")))  # noqa: E731
        msgs = cap.wait_for(lambda m: len(ids(m)) >= 5, timeout=20)
        # At least once: a message in flight when the broker went down may come twice; first arrivals keep the order.
        assert ids(msgs)[2:] == queued
        # The outage itself is reported on the events topic once the link is back.
        cap.wait_for(lambda m: any(b'"link.offline"' in p for t, p, _ in m if t.endswith("/events")), timeout=10)
        assert dev.types().count("link.online") == 2
        contract.check_all(cap.messages)
    finally:
        dev.link.stop()
        cap.close()
        broker.stop()


def test_mqtt_311_forced(tmp_path: Path, mosquitto: LocalBroker, contract: Any) -> None:
    dev = Device(device_cfg(tmp_path / "home", [mosquitto.url], **{"mqtt.protocol": "3.1.1"}))
    cap = Capture(mosquitto.url, protocol=3)
    dev.link.start()
    try:
        (pid,) = dev.punch(1)
        msgs = cap.wait_for(lambda m: any(t.endswith("/punch") for t, _, _ in m))
        assert contract.check(*next((t, p) for t, p, _ in msgs if t.endswith("/punch")))["id"] == pid
        cap.wait_for(lambda m: any(t.endswith("/status") for t, _, _ in m))
        assert status_of(cap)[0]["protocol"] == "3.1.1"
    finally:
        dev.link.stop()
        cap.close()


class V311OnlyProxy:
    """A TCP front for a real broker that answers MQTT 5 CONNECTs the way a 3.1.1-only broker does."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.levels: list[int] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        first = conn.recv(65536)
        i = 1
        while first[i] & 0x80:  # remaining-length varint
            i += 1
        level = first[i + 1 + 2 + 4]  # after the length: protocol name (2-byte length + "MQTT"), then the level
        self.levels.append(level)
        if level == 5:
            conn.sendall(b"\x20\x02\x00\x01")  # CONNACK, 3.1.1 return code 1: unacceptable protocol version
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        up.sendall(first)

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(up, conn), daemon=True).start()
        pump(conn, up)

    def close(self) -> None:
        self.sock.close()


def test_auto_falls_back_to_311_when_broker_refuses_5(tmp_path: Path, mosquitto: LocalBroker, contract: Any) -> None:
    proxy = V311OnlyProxy(mosquitto.port)
    dev = Device(device_cfg(tmp_path / "home", [f"mqtt://127.0.0.1:{proxy.port}"], **{"mqtt.protocol": "auto"}))
    cap = Capture(mosquitto.url)
    dev.link.start()
    try:
        (pid,) = dev.punch(1)
        msgs = cap.wait_for(lambda m: any(t.endswith("/punch") for t, _, _ in m))
        assert contract.check(*next((t, p) for t, p, _ in msgs if t.endswith("/punch")))["id"] == pid
        assert proxy.levels[:2] == [5, 4]  # tried 5, refused, went straight to 3.1.1 (level 4)
        cap.wait_for(lambda m: any(t.endswith("/status") for t, _, _ in m))
        assert status_of(cap)[0]["protocol"] == "3.1.1"
    finally:
        dev.link.stop()
        cap.close()
        proxy.close()


@pytest.mark.parametrize("url", ["ftp://x:1", "mqtt://host:99999", "mqtt://:1883", "mqtt://h:1/path"])
def test_bad_broker_urls_are_refused(url: str) -> None:
    from firmware_py.mqtt.link import BrokerUrlError

    with pytest.raises(BrokerUrlError):
        BrokerUrl.parse(url)


def test_config_refuses_bad_mqtt_settings() -> None:
    from firmware_py.config import ConfigError

    with pytest.raises(ConfigError) as exc:
        with_changes(
            load(None), {"mqtt.brokers": ["mqtt://a:70000"], "mqtt.cert_file": "/x.crt", "mqtt.reconnect_min_s": 9.0, "mqtt.reconnect_max_s": 1.0}
        )
    keys = {p.key for p in exc.value.problems}
    assert keys == {"mqtt.brokers[0]", "mqtt.cert_file", "mqtt.reconnect_min_s"}
    assert BrokerUrl.parse("mqtts://[::1]:8883").tls and str(BrokerUrl.parse("broker:1884")) == "mqtt://broker:1884"


def test_backoff_doubles_caps_and_jitters() -> None:
    from firmware_py.mqtt.link import backoff_delay

    lows = [backoff_delay(f, 0.5, 30, lambda: 0.0) for f in range(8)]
    highs = [backoff_delay(f, 0.5, 30, lambda: 1.0) for f in range(8)]
    assert highs == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert lows == [h / 2 for h in highs]
    import random

    rnd = random.Random(1)
    samples = {round(backoff_delay(3, 0.5, 30, rnd.random), 3) for _ in range(50)}
    assert len(samples) > 40 and all(2.0 <= x <= 4.0 for x in samples)
