"""Signing commands with the backend key, and sending them to a device."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.keys.jwk import b64url_encode
from firmware_py.keys.jws import COMMAND_TYP, sign
from firmware_py.mqtt.link import BrokerUrl, LinkSettings, MqttLink, TlsFiles
from firmware_py.mqtt.topics import PREFIX, Topics
from firmware_py.punch.ids import uuid7


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
    """Publish a signed command and wait for its result (None on timeout)."""
    topics = Topics(site, device, prefix)
    got: dict[str, Any] = {}
    done = threading.Event()

    def on_result(_t: str, payload: bytes, _p: Any) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if isinstance(obj, dict) and obj.get("id") == command_id:
            got.update(obj)
            done.set()

    link = MqttLink(
        LinkSettings(
            brokers=[BrokerUrl.parse(b) for b in brokers],
            client_id=client_id or f"kaoclock-cmd-{command_id[-12:]}",
            protocol="auto",
            tls=tls or TlsFiles(),
            username=username,
            password=password,
            clean_start=True,
            reconnect_min_s=0.5,
            reconnect_max_s=2.0,
        )
    )
    link.subscribe(topics.command_results, on_result, qos=1)
    subscribed = threading.Event()
    link.on_connect(lambda _l: subscribed.set())
    link.start()
    try:
        if not subscribed.wait(wait_s):
            return None
        time.sleep(0.1)  # let the SUBACK land before the device can answer
        sent = threading.Event()
        if not link.publish(topics.commands, token.encode("ascii"), 1, False, content_type="application/jose", on_ack=lambda ok, r: sent.set()):
            return None
        done.wait(wait_s)
        return got or None
    finally:
        link.stop()


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
