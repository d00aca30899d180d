"""The MQTT connection: paho-mqtt 2.x with failover, backoff with jitter, MQTT 5 or 3.1.1, TLS.

One supervisor thread owns the connection.  Each attempt builds a fresh paho
client for one broker URL (paho's own reconnect is off: it would retry one
host forever), connects, and runs paho's network thread until the connection
is lost; then the supervisor waits a randomised, growing delay and tries the
next URL.  With ``protocol = "auto"`` a broker that refuses MQTT 5 is retried
at once with 3.1.1, and that URL stays on 3.1.1 for the life of the process.

Nothing is queued here while offline: durable messages live in the outbox,
which resends them after every reconnect; :meth:`MqttLink.publish` simply
returns False when there is no connection.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

MqttVersion = Literal["auto", "5", "3.1.1"]
MessageHandler = Callable[[str, bytes, Any], "bool | None"]
AckCallback = Callable[[bool, str], None]


NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason: accepted, but no subscriber (and no session) will get it


class BrokerUrlError(ValueError):
    pass


@dataclass(frozen=True)
class BrokerUrl:
    """``mqtt://host:1883`` (plain) or ``mqtts://host:8883`` (TLS)."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, text: str) -> BrokerUrl:
        raw = text.strip()
        if "://" not in raw:
            raw = "mqtt://" + raw
        parts = urlsplit(raw)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise BrokerUrlError(f"broker URL {text!r}: scheme {parts.scheme!r} is not mqtt:// or mqtts://")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise BrokerUrlError(f"broker URL {text!r}: give only scheme://host:port")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise BrokerUrlError(f"broker URL {text!r}: the port is not a number from 1 to 65535") from None
        if not parts.hostname:
            raise BrokerUrlError(f"broker URL {text!r}: no host")
        return cls(parts.hostname, port, tls)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


@dataclass(frozen=True)
class TlsFiles:
    """CA bundle that signs the broker's certificate, and this client's certificate and key."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass
class LinkSettings:
    brokers: list[BrokerUrl]
    client_id: str
    protocol: MqttVersion = "auto"
    keepalive_s: int = 30
    tls: TlsFiles = field(default_factory=TlsFiles)
    username: str | None = None
    password: str | None = None
    clean_start: bool = False
    session_expiry_s: int = 3600
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    max_inflight: int = 40
    will: Will | None = None
    manual_ack: bool = False  # acknowledge a QoS 1 message only after its handler succeeded
    receive_maximum: int | None = None  # MQTT 5: unacknowledged QoS 1 messages the broker may send at once (None: broker default)


@dataclass(frozen=True)
class LinkState:
    connected: bool
    broker: str | None
    protocol: str | None
    since: float | None  # when the current state began (epoch s)
    reconnects: int  # successful connections after the first
    last_error: str | None


def backoff_delay(failures: int, min_s: float, max_s: float, rnd: Callable[[], float] = random.random) -> float:
    """Seconds to wait before the next attempt: doubling per failure, capped, with "equal jitter"
    (uniform in [base/2, base]) so that a fleet reconnecting after a broker restart spreads out."""
    base = min(max_s, min_s * 2 ** min(failures, 20))
    return base / 2 + rnd() * base / 2


# Outcomes of one connection attempt.
_LOST, _FAILED, _REFUSED_PROTOCOL, _STOPPED = "lost", "failed", "refused_protocol", "stopped"


class _Session:
    """One paho client for one connection attempt, with its own publish bookkeeping."""

    def __init__(self, client: paho.Client, url: BrokerUrl, protocol: str) -> None:
        self.client = client
        self.url = url
        self.protocol = protocol
        self.connack = threading.Event()
        self.connack_rc: int | None = None
        self.connack_reason = ""
        self.closed = threading.Event()
        self.close_reason = ""
        self.acks: dict[int, AckCallback] = {}
        self.early: dict[int, tuple[bool, str]] = {}
        self.lock = threading.Lock()  # never held while calling into paho (see on_publish)

    def on_publish(self, client: paho.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        # paho calls this holding its own out-message lock, so this must not wait for
        # anything a publisher holds while calling client.publish().
        # Not delivered: an MQTT 5 error (>= 0x80), and 0x10 "No matching subscribers" (nobody gets it).
        code = getattr(rc, "value", 0) if rc is not None else 0
        ok = not (getattr(rc, "is_failure", False) or code == NO_MATCHING_SUBSCRIBERS)
        reason = "" if ok else str(rc)
        with self.lock:
            cb = self.acks.pop(mid, None)
            if cb is None:
                self.early[mid] = (ok, reason)
        if cb is not None:
            cb(ok, reason)

    def register(self, mid: int, cb: AckCallback | None) -> None:
        with self.lock:
            early = self.early.pop(mid, None)
            if early is None:
                if cb is not None:
                    self.acks[mid] = cb
                else:
                    self.acks.pop(mid, None)
        if early is not None and cb is not None:
            cb(*early)


class MqttLink:
    """A supervised MQTT connection that fails over between brokers.

    ``on_connect`` callbacks run on the supervisor thread once a connection
    is up and subscribed (publish the birth message there); ``on_state``
    callbacks get every online/offline change.
    """

    def __init__(self, settings: LinkSettings) -> None:
        if not settings.brokers:
            raise ValueError("MqttLink needs at least one broker URL")
        self.settings = settings
        self._handlers: list[tuple[str, int, Callable[..., Any], bool]] = []
        self._on_connect: list[Callable[[MqttLink], None]] = []
        self._on_state: list[Callable[[LinkState], None]] = []
        self._before_disconnect: list[Callable[[MqttLink], None]] = []
        self._session: _Session | None = None
        self._attempting: _Session | None = None
        self._generation = 0
        self._connected = threading.Condition()
        self._is_connected = False
        self._ready = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._downgraded: set[BrokerUrl] = set()
        self._props: dict[str, Properties] = {}
        self._state = LinkState(False, None, None, None, 0, None)
        self._connections = 0
        self._reconfigured = False

    # ------------------------------------------------------------ wiring

    def subscribe(self, topic_filter: str, handler: MessageHandler | Callable[..., Any], qos: int = 1, *, deferred_ack: bool = False) -> None:
        """Subscribe on every connection; ``handler(topic, payload, properties)`` runs on the network thread.

        ``topic_filter`` may be an MQTT 5 shared subscription (``$share/GROUP/filter``).
        With ``manual_ack`` the message is acknowledged after the handler
        returns; a handler returning False leaves it unacknowledged and drops
        the connection, so the broker delivers it again after the reconnect.

        With ``manual_ack`` and ``deferred_ack`` the handler is called as
        ``handler(topic, payload, properties, settle)`` and the message stays
        unacknowledged until ``settle(ok)`` is called (from any thread, in the
        order the messages arrived): ``settle(True)`` acknowledges it,
        ``settle(False)`` drops the connection for a redelivery.  A settle for
        a connection that is gone does nothing: the broker delivers the
        message again on the next one.  This lets a consumer store many
        messages in one transaction before acknowledging them.
        """
        self._handlers.append((topic_filter, qos, handler, deferred_ack))

    def on_connect(self, fn: Callable[[MqttLink], None]) -> None:
        self._on_connect.append(fn)

    def on_state(self, fn: Callable[[LinkState], None]) -> None:
        self._on_state.append(fn)

    def before_disconnect(self, fn: Callable[[MqttLink], None]) -> None:
        """Run ``fn`` while still connected during :meth:`stop` (e.g. publish "offline")."""
        self._before_disconnect.append(fn)

    # ------------------------------------------------------------ state

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def generation(self) -> int | None:
        return self._generation if self._is_connected else None

    @property
    def connected(self) -> bool:
        return self._is_connected

    @property
    def protocol(self) -> str | None:
        s = self._session
        return s.protocol if s is not None and self._is_connected else None

    def wait_connected(self, timeout: float) -> int | None:
        with self._connected:
            if not self._ready:
                self._connected.wait(timeout)
            return self._generation if self._ready else None

    # ------------------------------------------------------------ publishing

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        *,
        content_type: str | None = None,
        on_ack: AckCallback | None = None,
    ) -> bool:
        """Send a message on the current connection; False (and nothing queued) when offline.

        ``on_ack(ok, reason)`` is called on the network thread when the
        broker acknowledges a QoS 1 message (for QoS 0: when it is written);
        ``ok`` is False when an MQTT 5 broker answered with an error code
        (>= 0x80) or with 0x10 "No matching subscribers".
        """
        s = self._session
        if s is None or not self._is_connected:
            return False
        props = self._properties(content_type) if s.protocol == "5" else None
        try:
            info = s.client.publish(topic, payload, qos, retain, props)
        except (ValueError, RuntimeError) as exc:
            log.warning("publish to %s refused by the client library: %s", topic, exc)
            return False
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        s.register(info.mid, on_ack)
        return True

    def _properties(self, content_type: str | None) -> Properties | None:
        if content_type is None:
            return None
        props = self._props.get(content_type)
        if props is None:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = content_type
            if content_type.startswith("application/json") or content_type == "application/jose":
                props.PayloadFormatIndicator = 1  # UTF-8 text
            self._props[content_type] = props
        return props

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._supervise, name="mqtt-link", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say goodbye (``before_disconnect``), disconnect cleanly and end the supervisor."""
        self._stop.set()
        for s in (self._session, self._attempting):
            if s is not None:
                s.closed.set()
                s.connack.set()  # also end a wait for CONNACK
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def reconfigure(self, settings: LinkSettings) -> None:
        """Use ``settings`` from the next connection on, and drop the current one now (brokers, TLS, credentials changed).

        Subscriptions and callbacks stay; the supervisor reconnects at once
        with the new settings, starting with their first broker.
        """
        if not settings.brokers:
            raise ValueError("MqttLink needs at least one broker URL")
        self.settings = settings
        self._downgraded.clear()
        self._reconfigured = True
        for s in (self._session, self._attempting):
            if s is not None:
                s.close_reason = "reconnecting with new settings"
                s.closed.set()
                s.connack.set()

    # ------------------------------------------------------------ supervisor

    def _supervise(self) -> None:
        index = 0
        failures = 0
        while not self._stop.is_set():
            if self._reconfigured:
                self._reconfigured, index, failures = False, 0, 0
            brokers = self.settings.brokers  # re-read: reconfigure() may have changed them
            url = brokers[index % len(brokers)]
            protocol = "3.1.1" if self.settings.protocol == "3.1.1" or url in self._downgraded else "5"
            outcome, error = self._attempt(url, protocol)
            if outcome == _STOPPED:
                break
            if self._reconfigured:  # dropped on purpose: reconnect at once with the new settings
                self._set_state(False, str(url), None, "reconnecting with new settings")
                continue
            if outcome == _REFUSED_PROTOCOL and protocol == "5" and self.settings.protocol == "auto":
                log.warning("broker %s refused MQTT 5 (%s); falling back to MQTT 3.1.1", url, error)
                self._downgraded.add(url)
                continue
            if outcome == _LOST:
                failures = 0  # the link was up: try the same broker again first
            else:
                failures += 1
                index += 1  # fail over to the next URL
            self._set_state(False, str(url), None, error)
            delay = backoff_delay(failures, self.settings.reconnect_min_s, self.settings.reconnect_max_s)
            log.info("mqtt: %s (%s); next attempt in %.2f s", outcome, error, delay)
            self._stop.wait(delay)

    def _new_client(self, protocol: str) -> paho.Client:
        st = self.settings
        v5 = protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=st.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else st.clean_start,
            reconnect_on_failure=False,
            manual_ack=st.manual_ack,
        )
        client.max_inflight_messages_set(st.max_inflight)
        client.connect_timeout = st.connect_timeout_s
        client.max_queued_messages_set(0)
        if st.username is not None:
            client.username_pw_set(st.username, st.password)
        if st.will is not None:
            client.will_set(st.will.topic, st.will.payload, st.will.qos, st.will.retain)
        return client

    def _attempt(self, url: BrokerUrl, protocol: str) -> tuple[str, str]:
        st = self.settings
        client = self._new_client(protocol)
        s = _Session(client, url, protocol)
        self._attempting = s
        if url.tls:
            try:
                client.tls_set(
                    ca_certs=st.tls.ca_file,
                    certfile=st.tls.cert_file,
                    keyfile=st.tls.key_file,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                return _FAILED, f"TLS files refused: {exc}"

        def on_connect(c: paho.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
            s.connack_rc = int(rc.value) if hasattr(rc, "value") else int(rc)
            s.connack_reason = str(rc)
            s.connack.set()

        def on_disconnect(c: paho.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
            s.close_reason = str(rc)
            s.closed.set()
            s.connack.set()  # wake a waiter for CONNACK too

        def settler(c: paho.Client, mid: int, qos: int, topic: str) -> Callable[[bool], None]:
            def settle(ok: bool) -> None:
                if s.closed.is_set():  # not self._session: a resumed session's messages arrive before it is set
                    return  # that connection is gone; the broker delivers the message again on the next one
                if ok:
                    c.ack(mid, qos)
                else:
                    log.warning("message on %s not acknowledged; reconnecting for redelivery", topic)
                    c.disconnect()

            return settle

        def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
            ok = True
            deferred = False
            for flt, _qos, handler, defer in self._handlers:
                if paho.topic_matches_sub(_unshared(flt), msg.topic):
                    try:
                        if defer and st.manual_ack and msg.qos > 0:
                            handler(msg.topic, msg.payload, msg.properties, settler(c, msg.mid, msg.qos, msg.topic))
                            deferred = True
                        elif handler(msg.topic, msg.payload, msg.properties) is False:
                            ok = False
                    except Exception:
                        log.exception("mqtt handler for %s failed", flt)
                        ok = False
            if deferred and ok:
                return  # acknowledged (or not) by the handler's settle
            if st.manual_ack and msg.qos > 0:
                if ok:
                    c.ack(msg.mid, msg.qos)
                else:
                    log.warning("message on %s not acknowledged; reconnecting for redelivery", msg.topic)
                    c.disconnect()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = s.on_publish
        client.on_message = on_message
        props = None
        if protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0 if st.clean_start else st.session_expiry_s
            if st.receive_maximum:
                props.ReceiveMaximum = st.receive_maximum
        try:
            kwargs: dict[str, Any] = {"properties": props}
            if protocol == "5":
                kwargs["clean_start"] = st.clean_start
            client.connect(url.host, url.port, st.keepalive_s, **kwargs)
        except (OSError, ssl.SSLError) as exc:
            return _FAILED, f"cannot connect to {url}: {exc}"
        client.loop_start()
        try:
            if not s.connack.wait(st.connect_timeout_s) or self._stop.is_set():
                if self._stop.is_set():
                    return _STOPPED, "stopped"
                return _FAILED, f"no CONNACK from {url} within {st.connect_timeout_s} s"
            if s.connack_rc is None:
                # Closed before any CONNACK: how a 3.1.1-only broker may answer an MQTT 5 CONNECT.
                return (_REFUSED_PROTOCOL if protocol == "5" else _FAILED), f"{url} closed the connection before CONNACK ({s.close_reason})"
            if s.connack_rc != 0:
                if protocol == "5" and s.connack_rc in (1, 132):  # 3.1.1 "unacceptable protocol version" / 5 "unsupported protocol version"
                    return _REFUSED_PROTOCOL, s.connack_reason
                return _FAILED, f"{url} refused the connection: {s.connack_reason}"
            return self._connected_session(s)
        finally:
            with contextlib.suppress(Exception):  # already closed
                client.disconnect()
            client.loop_stop()
            self._session = None if self._session is s else self._session

    def _connected_session(self, s: _Session) -> tuple[str, str]:
        if self._handlers:
            # Subscribe and wait for the SUBACKs, so "connected" means "receiving" too.  On every
            # connection, even when the broker says the session was resumed: a broker may have lost
            # subscriptions (mosquitto 2.0.11 drops a durable session's $share ones on a restart; fixed in
            # 2.0.12), and subscribing again to the same filter only replaces the subscription.
            subacked = threading.Event()
            s.client.on_subscribe = lambda *a: subacked.set()
            s.client.subscribe([(flt, qos) for flt, qos, _h, _d in self._handlers])
            if not subacked.wait(self.settings.connect_timeout_s):
                log.warning("mqtt: no SUBACK from %s within %s s", s.url, self.settings.connect_timeout_s)
        self._session = s
        with self._connected:
            self._generation += 1
            self._is_connected = True  # publish() works from here on ...
        self._connections += 1
        self._set_state(True, str(s.url), s.protocol, None)
        log.info("mqtt: connected to %s (MQTT %s)", s.url, s.protocol)
        for fn in list(self._on_connect):
            try:
                fn(self)
            except Exception:
                log.exception("mqtt on_connect callback failed")
        with self._connected:
            self._ready = True  # ... and wait_connected() returns once the birth message is out
            self._connected.notify_all()
        s.closed.wait()
        if self._stop.is_set() and s.client.is_connected():
            for fn in list(self._before_disconnect):
                try:
                    fn(self)
                except Exception:
                    log.exception("mqtt before_disconnect callback failed")
        with self._connected:
            self._is_connected = False
            self._ready = False
        if self._stop.is_set():
            return _STOPPED, "stopped"
        return _LOST, f"connection to {s.url} lost: {s.close_reason}"

    def _set_state(self, connected: bool, broker: str | None, protocol: str | None, error: str | None) -> None:
        prev = self._state
        if prev.connected == connected and prev.since is not None:
            self._state = LinkState(connected, broker, protocol, prev.since, prev.reconnects, error or prev.last_error)
            return  # still offline: not a change
        self._state = LinkState(connected, broker, protocol, time.time(), max(0, self._connections - 1), error)
        for fn in list(self._on_state):
            try:
                fn(self._state)
            except Exception:
                log.exception("mqtt on_state callback failed")


def _unshared(topic_filter: str) -> str:
    """The plain filter inside an MQTT 5 shared subscription ``$share/GROUP/filter``."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else topic_filter
    return topic_filter
