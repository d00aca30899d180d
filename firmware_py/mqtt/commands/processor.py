"""Checking and running one command; every outcome becomes a result, nothing escapes.

Why a command is refused (the first failing check is the reason in the result):

====================  ==========================================================
``oversized``         the payload is larger than ``max_bytes``
``no_backend_key``    this device has no backend public key to check signatures
``malformed``         not a compact JWS, or its claims miss or mistype a field
``unsigned``          ``alg: none`` or an empty signature
``unsupported_alg``   signed with something other than EdDSA
``wrong_type``        the JWS ``typ`` is not ``kaoclock-command+jwt``
``unknown_key``       signed by a key this device does not trust
``bad_signature``     the signature does not verify
``wrong_device``      ``aud`` names another device
``not_yet_valid``     ``iat`` is in the future (beyond the allowed clock skew)
``expired``           ``exp`` has passed (beyond the allowed clock skew)
``ttl_too_long``      ``exp - iat`` exceeds ``max_ttl_s``
``unknown_command``   no handler is registered for ``cmd``
``bad_args``          ``args`` holds keys the command does not take (or the handler says so)
``replayed``          this nonce was already used
``busy``              the command queue is full
====================  ==========================================================

A handler may refuse with its own reason (:class:`CommandRefused`); an
exception in a handler gives status ``failed``, reason ``handler_error``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from firmware_py.events import EventBus
from firmware_py.keys.jwk import PublicKey
from firmware_py.keys.jws import COMMAND_TYP, JwsError, peek, verify
from firmware_py.mqtt.commands.nonces import NonceStore
from firmware_py.mqtt.commands.registry import CommandContext, CommandRefused, CommandRegistry
from firmware_py.timefmt import utc_ms

log = logging.getLogger(__name__)

RESULT_VERSION = 1
# The JWS type of a command result signed with the device key (the ``jws`` field of every result).
RESULT_TYP = "kaoclock-result+jwt"
# Refusals of messages nobody authenticated: anyone who can publish can make these, so they cost no event budget
# (one command.refused event per JUNK_EVENT_EVERY_S, with the count of those left out); their results still go out.
UNAUTHENTICATED = frozenset(
    {"oversized", "busy", "malformed", "unsigned", "unsupported_alg", "wrong_type", "unknown_key", "bad_signature", "no_backend_key"}
)
JUNK_EVENT_EVERY_S = 10.0


class CommandProcessor:
    """Verifies commands and runs their handlers on one worker thread.

    ``keys`` is called for the trusted backend keys each time (so a key
    installed while running is picked up); ``publish_result`` sends a result
    dict to the command_results topic.
    """

    def __init__(
        self,
        registry: CommandRegistry,
        keys: Callable[[], Mapping[str, PublicKey]],
        nonces: NonceStore,
        *,
        site: str,
        device: str,
        publish_result: Callable[[dict[str, Any]], None] | None = None,
        bus: EventBus | None = None,
        max_bytes: int = 256 * 1024,
        max_ttl_s: float = 3600.0,
        skew_s: float = 60.0,
        queue_size: int = 32,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.keys = keys
        self.nonces = nonces
        self.site = site
        self.device = device
        self.audience = f"{site}/{device}"
        self.publish_result = publish_result
        self.bus = bus
        self._junk_last = -JUNK_EVENT_EVERY_S
        self._junk_suppressed = 0
        self.max_bytes = max_bytes
        self.max_ttl_s = max_ttl_s
        self.skew_s = skew_s
        self.clock = clock
        self._queue: queue.Queue[bytes | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ threading

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="commands", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
            self._thread = None

    def _junk_event_due(self) -> bool:
        now = time.monotonic()
        if now - self._junk_last >= JUNK_EVENT_EVERY_S:
            self._junk_last = now
            return True
        self._junk_suppressed += 1
        return False

    def submit(self, payload: bytes) -> None:
        """Queue a raw command payload (called on the network thread; never blocks)."""
        if len(payload) > self.max_bytes:
            self._finish(self._refusal(None, None, "oversized", f"command is {len(payload)} bytes, the limit is {self.max_bytes}"))
            return
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            cid, name = self._ids_unverified(payload)
            self._finish(self._refusal(cid, name, "busy", "the command queue is full; try again later"))

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            try:
                self._finish(self.process(payload))
            except Exception:  # process() already catches everything; belt and braces for the thread
                log.exception("command processing failed")

    def _finish(self, result: dict[str, Any]) -> None:
        if self.bus is not None:
            if result["status"] == "done":
                self.bus.emit_new("command.executed", "info", id=result["id"], cmd=result["cmd"])
            elif result.get("reason") in UNAUTHENTICATED and not self._junk_event_due():
                pass  # junk nobody signed: counted, reported at most once per JUNK_EVENT_EVERY_S, never a flood of events
            else:
                extra = {"suppressed": self._junk_suppressed} if result.get("reason") in UNAUTHENTICATED else {}
                self._junk_suppressed = 0 if extra else self._junk_suppressed
                self.bus.emit_new(
                    "command.refused", "warning", id=result["id"], cmd=result["cmd"], reason=result["reason"], detail=result["detail"], **extra
                )
        if self.publish_result is not None:
            try:
                self.publish_result(result)
            except Exception:
                log.exception("publishing a command result failed")

    # ------------------------------------------------------------ checks

    def process(self, payload: bytes | str) -> dict[str, Any]:
        """Verify and run one command; return its result (never raises)."""
        try:
            return self._process(payload)
        except Exception as exc:  # defensive: a bug in a check must not take the daemon down
            log.exception("unexpected error while checking a command")
            cid, name = self._ids_unverified(payload)
            return self._result(cid, name, "failed", "internal_error", f"unexpected error: {exc}")

    def _process(self, payload: bytes | str) -> dict[str, Any]:
        received = self.clock()
        raw = payload.encode("utf-8") if isinstance(payload, str) else payload
        if len(raw) > self.max_bytes:
            return self._refusal(None, None, "oversized", f"command is {len(raw)} bytes, the limit is {self.max_bytes}")
        cid, name = self._ids_unverified(raw)  # only echoed in refusals, never trusted
        keys = self.keys()
        if not keys:
            return self._refusal(cid, name, "no_backend_key", "this device has no backend public key; install one with `kaoclock keys trust-backend`")
        try:
            verified = verify(raw, keys, COMMAND_TYP)
        except JwsError as exc:
            return self._refusal(cid, name, exc.reason, str(exc))
        claims = verified.claims
        problem = _claims_problem(claims)
        if problem:
            return self._refusal(cid, name, "malformed", problem)
        cid, name = claims["id"], claims["cmd"]
        if claims["aud"] != self.audience:
            return self._refusal(cid, name, "wrong_device", f"addressed to {claims['aud']!r}, this device is {self.audience!r}")
        iat, exp = float(claims["iat"]), float(claims["exp"])
        if iat > received + self.skew_s:
            return self._refusal(cid, name, "not_yet_valid", f"issued {iat - received:.0f} s in the future (check the clocks)")
        if exp < received - self.skew_s:
            return self._refusal(cid, name, "expired", f"expired {received - exp:.0f} s ago")
        if exp - iat > self.max_ttl_s:
            return self._refusal(cid, name, "ttl_too_long", f"valid for {exp - iat:.0f} s, at most {self.max_ttl_s:.0f} s allowed")
        entry = self.registry.get(name)
        if entry is None:
            return self._refusal(cid, name, "unknown_command", f"no command {name!r}; this device knows {', '.join(self.registry.names())}")
        args = claims.get("args", {})
        if entry.allowed_args is not None:
            extra = sorted(set(args) - entry.allowed_args)
            if extra:
                allowed = ", ".join(sorted(entry.allowed_args)) or "none"
                return self._refusal(cid, name, "bad_args", f"unknown argument(s) {', '.join(extra)}; {name} takes: {allowed}")
        # The nonce is stored (synced) before the handler runs: a crash mid-command cannot enable a replay.
        if not self.nonces.remember(claims["nonce"], exp + self.skew_s, now=received):
            return self._refusal(cid, name, "replayed", "this command (nonce) was already received")
        ctx = CommandContext(cid, name, dict(args), claims, verified.key.kid, received)
        try:
            out = entry.handler(ctx)
        except CommandRefused as exc:
            return self._result(cid, name, "refused", exc.reason, str(exc), exc.result)
        except Exception as exc:
            log.exception("command %s (%s) failed", name, cid)
            return self._result(cid, name, "failed", "handler_error", f"{type(exc).__name__}: {exc}")
        return self._result(cid, name, "done", None, "ok", out if out is not None else {})

    def _ids_unverified(self, raw: bytes | str) -> tuple[str | None, str | None]:
        try:
            _, claims = peek(raw)
        except JwsError:
            return None, None
        cid, name = claims.get("id"), claims.get("cmd")
        return (cid if isinstance(cid, str) and len(cid) <= 64 else None, name if isinstance(name, str) and len(name) <= 64 else None)

    def _refusal(self, cid: str | None, name: str | None, reason: str, detail: str) -> dict[str, Any]:
        log.warning("command %s (%s) refused: %s: %s", name, cid, reason, detail)
        return self._result(cid, name, "refused", reason, detail)

    def _result(
        self, cid: str | None, name: str | None, status: str, reason: str | None, detail: str, result: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "v": RESULT_VERSION,
            "id": cid,
            "cmd": name,
            "site": self.site,
            "device": self.device,
            "ts": utc_ms(self.clock()),
            "status": status,
            "reason": reason,
            "detail": detail[:1000],
            "result": result,
        }


def _claims_problem(c: dict[str, Any]) -> str | None:
    """What is wrong with the command claims' shape, or None (mirrors mqtt/schemas/command-claims.schema.json)."""
    if c.get("v") != 1:
        return f"claim 'v' must be 1, got {c.get('v')!r}"
    for key in ("id", "cmd", "aud", "nonce"):
        if not isinstance(c.get(key), str) or not c[key]:
            return f"claim {key!r} must be a non-empty string"
    if len(c["id"]) > 64:
        return "claim 'id' is longer than 64 characters"
    if len(c["cmd"]) > 64:
        return "claim 'cmd' is longer than 64 characters"
    if not 16 <= len(c["nonce"]) <= 128:
        return "claim 'nonce' must be 16 to 128 characters"
    for key in ("iat", "exp"):
        v = c.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"claim {key!r} must be a number (seconds since the epoch)"
    if "args" in c and not isinstance(c["args"], dict):
        return "claim 'args' must be an object"
    return None
