"""[mqtt]: the broker link, TLS and signed commands."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from firmware_py.config.schema import Problem, Section, setting

_URL = r"(mqtts?://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?"


@dataclass(frozen=True)
class MqttConfig(Section):
    """MQTT link to the backend broker (punches, status, telemetry, events, commands)."""

    enabled: bool = setting(False, doc="Connect to a broker. Off in the embedded demo: punches then stay queued in the outbox.")
    brokers: list[str] = setting(
        ["mqtt://127.0.0.1:1883"],
        doc="Broker URLs tried in turn (failover): mqtts://host:8883 for TLS, mqtt://host:1883 without.",
        pattern=_URL,
        min_items=1,
        max_items=8,
        fix="write URLs like mqtts://broker.example:8883",
    )
    protocol: Literal["auto", "5", "3.1.1"] = setting("auto", doc="MQTT version: auto tries 5 and falls back to 3.1.1 when the broker refuses it.")
    client_id: str = setting("", doc="MQTT client id ('' = kaoclock-<site>-<device>).", pattern=r"[A-Za-z0-9_.-]{0,64}")
    topic_prefix: str = setting(
        "kaoclock/v1", doc="Root of every topic: <prefix>/<site>/<device>/<channel>.", pattern=r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*"
    )
    keepalive_s: int = setting(30, ge=5, le=3600, doc="MQTT keep-alive interval in seconds.")
    session_expiry_s: int = setting(
        3600, ge=0, le=604800, doc="How long the broker keeps this device's session (queued commands) while it is offline."
    )
    reconnect_min_s: float = setting(1.0, gt=0, le=60, doc="First reconnect delay; doubles per failure, randomised (jitter).")
    reconnect_max_s: float = setting(60.0, gt=0, le=3600, doc="Longest reconnect delay.")
    connect_timeout_s: float = setting(10.0, gt=0, le=120, doc="Give up on a broker that does not answer CONNECT within this time.")
    max_inflight: int = setting(20, ge=1, le=1000, doc="Outbox messages in flight (published, not yet acknowledged) at once.")
    ca_file: Path | None = setting(None, doc="CA certificate(s) that sign the broker's certificate (mqtts://); unset = the system's CAs.")
    cert_file: Path | None = setting(None, doc="This device's client certificate (PEM) for mutual TLS.")
    key_file: Path | None = setting(None, doc="The private key of cert_file (PEM, mode 0600).")
    username: str | None = setting(None, doc="MQTT user name, when the broker authenticates by password instead of (or besides) certificates.")
    password: str | None = setting(None, doc="MQTT password.", secret=True)
    events_per_minute: int = setting(
        120,
        ge=1,
        le=6000,
        doc="Most routine (info, warning) events published per minute; excess is counted, not queued. Alarms and faults are never limited.",
    )
    backend_key_file: Path | None = setting(
        None, doc="Backend public key(s) (JWK or JWK Set) that sign commands; unset = <data_dir>/keys/backend.jwk."
    )
    command_max_bytes: int = setting(262144, ge=1024, le=16777216, doc="Largest command accepted, in bytes.")
    command_max_ttl_s: float = setting(3600.0, gt=0, le=86400, doc="Longest validity (exp - iat) a command may claim; bounds the nonce store.")
    command_clock_skew_s: float = setting(60.0, ge=0, le=3600, doc="Clock difference tolerated when checking a command's iat and exp.")

    def check(self) -> Iterator[Problem]:
        if self.reconnect_min_s > self.reconnect_max_s:
            yield Problem(
                "reconnect_min_s",
                f"{self.reconnect_min_s} is above reconnect_max_s {self.reconnect_max_s}",
                "make reconnect_min_s <= reconnect_max_s",
            )
        if (self.cert_file is None) != (self.key_file is None):
            yield Problem("cert_file", "cert_file and key_file go together", "set both (mutual TLS) or neither")
        for i, url in enumerate(self.brokers):
            port = url.rsplit(":", 1)[-1] if url.count(":") >= 1 and not url.endswith("]") else ""
            if port.isdigit() and not 1 <= int(port) <= 65535:
                yield Problem(f"brokers[{i}]", f"port {port} is out of range", "use a port from 1 to 65535")
        if self.password is not None and self.username is None:
            yield Problem("password", "a password without a username", "set username too, or remove password")
