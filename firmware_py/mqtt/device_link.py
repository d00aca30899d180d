"""DeviceLink: everything the reader says and hears over MQTT, built from the config.

Wires an :class:`~firmware_py.mqtt.link.MqttLink` to

* the outbox drainer (punch topic, QoS 1, in order) and the backend's signed
  receipts (receipts topic): a punch leaves the outbox only on a verified receipt,
* the retained status (birth on connect, Last Will "offline", goodbye on stop),
* periodic telemetry from a :class:`~firmware_py.telemetry.collector.TelemetryCollector`,
* the EventBus (events topic), and
* signed commands (commands topic in, command_results topic out).

It emits ``link.offline`` / ``link.online`` on the bus: the "offline" signal
(broker unreachable, punches queued) the feedback LEDs can show.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_py.decision.ports import Door
from firmware_py.events import EventBus
from firmware_py.keys.jwk import KeyFileError, PublicKey, load_public_keys
from firmware_py.keys.jws import sign
from firmware_py.keys.store import backend_public_path, device_key_path, load_private_key
from firmware_py.mqtt.commands.builtin import RunningConfig, register_builtin
from firmware_py.mqtt.commands.nonces import NonceStore
from firmware_py.mqtt.commands.processor import RESULT_TYP, CommandProcessor
from firmware_py.mqtt.commands.registry import CommandRegistry
from firmware_py.mqtt.events_bridge import EventPublisher
from firmware_py.mqtt.link import BrokerUrl, LinkSettings, LinkState, MqttLink, TlsFiles, Will
from firmware_py.mqtt.receipts import ReceiptRefused, verify_receipt
from firmware_py.mqtt.status import encode, status_payload
from firmware_py.outbox.drain import OutboxDrainer
from firmware_py.outbox.store import Outbox
from firmware_py.telemetry.collector import TelemetryCollector
from firmware_py.timefmt import utc_ms
from firmware_py.topics import Topics

if TYPE_CHECKING:
    from firmware_py.config import Config

log = logging.getLogger(__name__)

# Delay between a config change of [mqtt] and the reconnect (the command's result goes out first).
RECONNECT_DELAY_S = 0.5


def link_settings(cfg: Config, topics: Topics) -> LinkSettings:
    """LinkSettings from ``[mqtt]``, with the Last Will on the status topic."""
    m = cfg.mqtt
    client_id = m.client_id or f"kaoclock-{cfg.device.site}-{cfg.device.id}"
    will = status_payload(cfg.device.site, cfg.device.id, "offline", "connection_lost")
    return LinkSettings(
        brokers=[BrokerUrl.parse(u) for u in m.brokers],
        client_id=client_id,
        protocol=m.protocol,
        keepalive_s=m.keepalive_s,
        tls=TlsFiles(
            str(m.ca_file) if m.ca_file else None,
            str(m.cert_file) if m.cert_file else None,
            str(m.key_file) if m.key_file else None,
        ),
        username=m.username,
        password=m.password,
        clean_start=False,
        session_expiry_s=m.session_expiry_s,
        reconnect_min_s=m.reconnect_min_s,
        reconnect_max_s=m.reconnect_max_s,
        connect_timeout_s=m.connect_timeout_s,
        max_inflight=m.max_inflight + 20,  # room for status, events and results beside the outbox window
        will=Will(topics.status, encode(will), 1, True),
    )


class BackendKeys:
    """The backend public keys commands must be signed with, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._keys: dict[str, PublicKey] = {}

    def __call__(self) -> dict[str, PublicKey]:
        try:
            st = self.path.stat()
        except OSError:
            self._stamp, self._keys = None, {}
            return {}
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._stamp:
            try:
                self._keys = load_public_keys(self.path)
            except KeyFileError as exc:
                log.error("backend key file refused, commands will be refused: %s", exc)
                self._keys = {}
            self._stamp = stamp
        return self._keys


class DeviceLink:
    """The reader's MQTT side; ``start()`` / ``stop()``."""

    def __init__(
        self,
        cfg: Config,
        bus: EventBus,
        *,
        outbox: Outbox,
        telemetry: TelemetryCollector | None = None,
        door: Door | None = None,
        config: RunningConfig | None = None,
        registry: CommandRegistry | None = None,
    ) -> None:
        self.cfg = cfg
        self.bus = bus
        self.outbox = outbox
        self.site, self.device = cfg.device.site, cfg.device.id
        self.topics = Topics(self.site, self.device, cfg.mqtt.topic_prefix)
        self.link = MqttLink(link_settings(cfg, self.topics))
        self.telemetry = telemetry or TelemetryCollector.from_config(cfg, bus, outbox=outbox)
        self.telemetry.set_provider("link", self._link_info)
        self.telemetry_interval_s = cfg.telemetry.interval_s
        oc = cfg.outbox
        self.drainer = OutboxDrainer(
            outbox,
            self.link,
            window=cfg.mqtt.max_inflight,
            receipt_timeout_s=oc.receipt_timeout_s,
            resend_max_s=oc.resend_max_s,
            retry_min_s=cfg.mqtt.reconnect_min_s,
            retry_max_s=cfg.mqtt.reconnect_max_s,
            retention_s=oc.retention_s,
            on_unconfirmed=self._unconfirmed_changed,
            bus=bus,
        )
        self._unconfirmed_since: float | None = None
        self.receipts_refused = 0
        self.events = EventPublisher(self.link, self.topics.events, bus, site=self.site, device=self.device, per_minute=cfg.mqtt.events_per_minute)
        self.commands = registry or CommandRegistry()
        register_builtin(self.commands, door=door, config=config, status=self.status_now)
        data_dir = cfg.device.data_dir
        self.backend_keys = BackendKeys(cfg.mqtt.backend_key_file or backend_public_path(data_dir))
        self.processor = CommandProcessor(
            self.commands,
            self.backend_keys,
            NonceStore(data_dir / "command_nonces.sqlite", skew_s=cfg.mqtt.command_clock_skew_s),
            site=self.site,
            device=self.device,
            publish_result=self.publish_result,
            bus=bus,
            max_bytes=cfg.mqtt.command_max_bytes,
            max_ttl_s=cfg.mqtt.command_max_ttl_s,
            skew_s=cfg.mqtt.command_clock_skew_s,
        )
        self.link.subscribe(self.topics.commands, lambda _t, payload, _p: self.processor.submit(payload))
        self.link.subscribe(self.topics.receipts, self._on_receipt)
        self.link.on_connect(self._connected)
        self.link.on_state(self._state_changed)
        self.link.before_disconnect(self._goodbye)
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._result_key: Any = None
        if config is not None:
            config.on_change(self._config_changed)

    @classmethod
    def from_config(cls, cfg: Config, bus: EventBus, **kwargs: Any) -> DeviceLink:
        return cls(cfg, bus, **kwargs)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stop.clear()
        self.processor.start()
        self.events.start()
        self.link.start()
        self.drainer.start()
        self._timer = threading.Thread(target=self._telemetry_loop, name="telemetry", daemon=True)
        self._timer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join(5)
            self._timer = None
        self.drainer.stop()
        self.link.stop()
        self.events.stop()
        self.processor.stop()
        self.processor.nonces.close()

    # ------------------------------------------------------------ publishing

    def _publish_json(
        self, topic: str, obj: dict[str, Any], qos: int = 1, retain: bool = False, on_ack: Callable[[bool, str], None] | None = None
    ) -> bool:
        return self.link.publish(topic, encode(obj), qos, retain, content_type="application/json", on_ack=on_ack)

    def publish_status(self, reason: str = "requested") -> bool:
        st = self.outbox.stats()
        extra: dict[str, Any] = {"unconfirmed_since": utc_ms(self._unconfirmed_since)} if self._unconfirmed_since is not None else {}
        payload = status_payload(self.site, self.device, "online", reason, protocol=self.link.protocol, outbox_depth=st.depth, **extra)
        return self._publish_json(self.topics.status, payload, 1, True)

    def _on_receipt(self, _topic: str, payload: bytes, _props: Any) -> None:
        """A receipt from the backend: verified with the trusted backend key, then its punches leave the outbox."""
        try:
            ids = verify_receipt(payload, self.backend_keys(), self.site, self.device)
        except ReceiptRefused as exc:
            self.receipts_refused += 1
            log.warning("receipt refused (%s): %s; no punch was removed", exc.reason, exc.detail)
            return
        self.drainer.confirm(ids)

    def _unconfirmed_changed(self, since: float | None) -> None:
        """Punches have waited past [outbox] retention_s for their receipt (or no longer): say so in the retained status."""
        self._unconfirmed_since = since
        if self.link.connected:
            self.publish_status("outbox")

    def publish_telemetry(self) -> dict[str, Any]:
        snap = self.telemetry.snapshot()
        self._publish_json(self.topics.telemetry, snap, 0, False)
        return snap

    def _device_key(self) -> Any:
        """The device's signing key (loaded once); None, logged, when it cannot be read."""
        if self._result_key is None:
            path = self.cfg.punch.key_file or device_key_path(self.cfg.device.data_dir)
            try:
                self._result_key = load_private_key(path)
            except (KeyFileError, OSError) as exc:
                log.error("command results go out unsigned: the device key cannot be used: %s", exc)
                self._result_key = False
        return self._result_key or None

    def sign_result(self, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` plus ``jws``: the same fields signed by the device's key, so the backend can trust it."""
        key = self._device_key()
        if key is None:
            return result
        return {**result, "jws": sign(result, key, RESULT_TYP)}

    def publish_result(self, result: dict[str, Any]) -> None:
        result = self.sign_result(result)
        if not self._publish_json(self.topics.command_results, result, 1, False):
            log.warning("command result %s not published (offline)", result.get("id"))

    def status_now(self) -> dict[str, Any]:
        """The status.request command: publish status and telemetry now, return both."""
        self.publish_status("requested")
        snap = self.publish_telemetry()
        return {"outbox_depth": self.outbox.depth(), "telemetry": snap}

    # ------------------------------------------------------------ callbacks

    def _connected(self, link: MqttLink) -> None:
        self.publish_status("connected")
        self.events.flush()
        self.publish_telemetry()

    def _goodbye(self, link: MqttLink) -> None:
        done = threading.Event()
        payload = status_payload(self.site, self.device, "offline", "shutdown", protocol=link.protocol)
        if self._publish_json(self.topics.status, payload, 1, True, on_ack=lambda ok, r: done.set()):
            done.wait(2.0)

    def _state_changed(self, state: LinkState) -> None:
        if state.connected:
            self.bus.emit_new("link.online", "info", broker=state.broker, protocol=state.protocol, queued=self.outbox.depth())
        else:
            self.bus.emit_new("link.offline", "warning", broker=state.broker, error=state.last_error, queued=self.outbox.depth())

    def _config_changed(self, new: Any) -> None:
        """A validated config replaced the running one: reconnect when the MQTT settings differ, adopt the command limits."""
        old_settings, self.cfg = self.link.settings, new
        settings = link_settings(new, self.topics)
        m = new.mqtt
        self.processor.max_bytes, self.processor.max_ttl_s, self.processor.skew_s = m.command_max_bytes, m.command_max_ttl_s, m.command_clock_skew_s
        self.events.rate = m.events_per_minute / 60.0
        self._result_key = None  # [punch] key_file may have changed
        # The Last Will holds a timestamp: compare everything else.
        if dataclasses.replace(settings, will=None) == dataclasses.replace(old_settings, will=None):
            return
        log.warning("MQTT settings changed: reconnecting to %s", ", ".join(str(b) for b in settings.brokers))
        # Shortly after, so the result of the command that made the change still goes out on this connection.
        timer = threading.Timer(RECONNECT_DELAY_S, self.link.reconfigure, (settings,))
        timer.daemon = True
        timer.start()

    def _link_info(self) -> dict[str, Any]:
        s = self.link.state
        return {
            "connected": s.connected,
            "broker": s.broker,
            "protocol": s.protocol,
            "since": utc_ms(s.since) if s.since else None,
            "reconnects": s.reconnects,
            "last_error": s.last_error,
        }

    def _telemetry_loop(self) -> None:
        while not self._stop.wait(self.telemetry_interval_s):
            if self.link.connected:
                try:
                    self.publish_telemetry()
                except Exception:
                    log.exception("telemetry failed")
