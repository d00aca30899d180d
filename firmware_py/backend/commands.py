"""Signing commands with the backend key, and sending them to a device."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.errors import KaoclockError
from firmware_py.keys.jwk import b64url_encode
from firmware_py.keys.jws import COMMAND_TYP, sign
from firmware_py.mqtt.link import BrokerUrl, LinkSettings, MqttLink, TlsFiles
from firmware_py.punch.ids import uuid7
from firmware_py.topics import PREFIX, Topics


def command_claims(
    site: str, device: str, cmd: str, args: dict[str, Any] | None = None, *, ttl_s: float = 60.0, now: float | None = None
) -> dict[str, Any]:
    """Claims of one command for site/device, valid ``ttl_s`` seconds from now, with a fresh nonce."""
    now = time.time() if now is None else now
    return {
        "v": 1,
        "id": str(uuid7()),
        "cmd": cmd,
        "args": args or {},
        "aud": f"{site}/{device}",
        "iat": int(now),
        "exp": int(now + ttl_s),
        "nonce": b64url_encode(os.urandom(18)),
    }


def sign_command(key: Ed25519PrivateKey, claims: dict[str, Any]) -> str:
    return sign(claims, key, COMMAND_TYP)


class BrokerUnreachable(KaoclockError):
    """The backend could not connect to any of its brokers."""


class CommandSession:
    """One MQTT connection for many signed commands to one device, each result matched by command id.

    ::

        with CommandSession(brokers, site, device, backend_key) as s:
            result = s.call("status.request", {})
    """

    def __init__(
        self,
        brokers: list[str],
        site: str,
        device: str,
        key: Ed25519PrivateKey | None = None,
        *,
        tls: TlsFiles | None = None,
        username: str | None = None,
        password: str | None = None,
        prefix: str = PREFIX,
        client_id: str | None = None,
        ttl_s: float = 120.0,
        connect_s: float = 10.0,
    ) -> None:
        self.site, self.device, self.key, self.ttl_s, self.connect_s = site, device, key, ttl_s, connect_s
        self.topics = Topics(site, device, prefix)
        self._results: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.link = MqttLink(
            LinkSettings(
                brokers=[BrokerUrl.parse(b) for b in brokers],
                client_id=client_id or f"kaoclock-cmd-{site}-{device}-{os.urandom(3).hex()}"[:64],
                protocol="auto",
                tls=tls or TlsFiles(),
                username=username,
                password=password,
                clean_start=True,
                reconnect_min_s=0.5,
                reconnect_max_s=2.0,
            )
        )
        self.link.subscribe(self.topics.command_results, self._on_result, qos=1)

    def _on_result(self, _t: str, payload: bytes, _p: Any) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            with self._cond:
                self._results[obj["id"]] = obj
                self._cond.notify_all()

    def __enter__(self) -> CommandSession:
        self.link.start()
        if self.link.wait_connected(self.connect_s) is None:
            self.link.stop()
            raise BrokerUnreachable(f"cannot reach the broker ({self.link.state.last_error})")
        time.sleep(0.1)  # let the SUBACK land before the device can answer
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()

    def call(self, cmd: str, args: dict[str, Any], wait_s: float = 30.0) -> dict[str, Any] | None:
        """Sign (with the session's key) and send one command; its result, or None when none arrived within ``wait_s``."""
        if self.key is None:
            raise ValueError("this session has no signing key: use send() with a signed token")
        claims = command_claims(self.site, self.device, cmd, args, ttl_s=self.ttl_s)
        return self.send(sign_command(self.key, claims), claims["id"], wait_s)

    def send(self, token: str, command_id: str, wait_s: float = 30.0) -> dict[str, Any] | None:
        """Publish an already signed command; its result, or None when none arrived within ``wait_s``."""
        if not self.link.publish(self.topics.commands, token.encode("ascii"), 1, False, content_type="application/jose"):
            return None
        end = time.monotonic() + wait_s
        with self._cond:
            while command_id not in self._results:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._results.pop(command_id)


def send_command(
    brokers: list[str],
    site: str,
    device: str,
    token: str,
    command_id: str,
    *,
    wait_s: float = 10.0,
    tls: TlsFiles | None = None,
    username: str | None = None,
    password: str | None = None,
    prefix: str = PREFIX,
    client_id: str | None = None,
) -> dict[str, Any] | None:
    """Publish one signed command and wait for its result (None when the broker or the device does not answer)."""
    session = CommandSession(
        brokers, site, device, tls=tls, username=username, password=password, prefix=prefix, client_id=client_id, connect_s=wait_s
    )
    try:
        with session:
            return session.send(token, command_id, wait_s)
    except BrokerUnreachable:
        return None


def verify_result(result: dict[str, Any], registry: Any) -> str:
    """Check a command result's ``jws`` against the registered key of the device it names.

    Returns ``"verified"``, or raises ValueError saying why the result cannot
    be trusted (unsigned, unknown key, another device's key, bad signature,
    plain fields that differ from the signed ones). ``registry`` is a
    :class:`~firmware_py.backend.registry.DeviceRegistry`.
    """
    from firmware_py.keys.jws import JwsError, peek, verify
    from firmware_py.mqtt.commands.processor import RESULT_TYP

    token = result.get("jws")
    if not isinstance(token, str):
        raise ValueError("the result is not signed (no jws field)")
    try:
        header, _ = peek(token)
        found = registry.lookup(str(header.get("kid")))
        if found is None:
            raise ValueError(f"signed by key {header.get('kid')!r}, which is not registered (kaoclock backend devices add)")
        claims = verify(token, {found.key.kid: found.key}, RESULT_TYP).claims
    except JwsError as exc:
        raise ValueError(f"signature refused: {exc}") from None
    if (claims.get("site"), claims.get("device")) != (found.site, found.device):
        raise ValueError(f"signed by {found.site}/{found.device}'s key but claims to come from {claims.get('site')}/{claims.get('device')}")
    if {k: v for k, v in result.items() if k != "jws"} != claims:
        raise ValueError("the plain fields differ from the signed ones")
    return "verified"
