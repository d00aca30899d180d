"""Checking one punch message from the broker, as a backend must."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firmware_py.backend.registry import DbDeviceRegistry, DeviceRegistry
from firmware_py.keys.jws import PUNCH_TYP, JwsError, peek, verify
from firmware_py.punch.claims import claims_problem
from firmware_py.topics import PREFIX, parse_topic

MAX_PUNCH_BYTES = 16 * 1024


class PunchRejected(Exception):
    """A punch message was refused; ``reason`` is a short code for reports."""

    def __init__(self, reason: str, detail: str, claims: dict[str, Any] | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.claims = claims


@dataclass(frozen=True)
class VerifiedPunch:
    claims: dict[str, Any]
    token: str
    kid: str


def verify_punch(topic: str, payload: bytes, registry: DeviceRegistry | DbDeviceRegistry, prefix: str = PREFIX) -> VerifiedPunch:
    """Verify a message from a punch topic or raise :class:`PunchRejected`.

    Reasons: ``bad_topic``, ``oversized``, ``malformed``, ``unsigned``,
    ``unsupported_alg``, ``wrong_type``, ``unknown_key`` (no registered device
    has this kid), ``bad_signature``, ``wrong_device`` (the key is registered
    for another device than the claims name), ``topic_mismatch`` (claims and
    topic name different devices).
    """
    where = parse_topic(topic, prefix)
    if where is None or where[2] != "punch":
        raise PunchRejected("bad_topic", f"{topic!r} is not a {prefix}/<site>/<device>/punch topic")
    if len(payload) > MAX_PUNCH_BYTES:
        raise PunchRejected("oversized", f"{len(payload)} bytes; a punch is at most {MAX_PUNCH_BYTES}")
    try:
        header, unverified = peek(payload)
    except JwsError as exc:
        raise PunchRejected(exc.reason, str(exc)) from None
    kid = header.get("kid")
    entry = registry.lookup(kid) if isinstance(kid, str) else None
    if entry is None:
        raise PunchRejected("unknown_key", f"no registered device has key {kid!r}; register it with `kaoclock backend devices add`", unverified)
    try:
        verified = verify(payload, {entry.key.kid: entry.key}, PUNCH_TYP)
    except JwsError as exc:
        raise PunchRejected(exc.reason, str(exc), unverified) from None
    claims = verified.claims
    problem = claims_problem(claims)
    if problem:
        raise PunchRejected("malformed", problem, claims)
    if (claims["site"], claims["device"]) != (entry.site, entry.device):
        raise PunchRejected(
            "wrong_device", f"signed with the key of {entry.site}/{entry.device} but claims {claims['site']}/{claims['device']}", claims
        )
    if (where[0], where[1]) != (claims["site"], claims["device"]):
        raise PunchRejected("topic_mismatch", f"published on {where[0]}/{where[1]} but claims {claims['site']}/{claims['device']}", claims)
    return VerifiedPunch(claims, payload.decode("ascii").strip(), entry.key.kid)
