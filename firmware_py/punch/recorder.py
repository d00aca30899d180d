"""SignedPunchRecorder: the PunchRecorder port, backed by the device key and the outbox."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.decision.outcome import Decision, Direction
from firmware_py.events import EventBus
from firmware_py.keys.jwk import key_id
from firmware_py.keys.jws import PUNCH_TYP, sign
from firmware_py.outbox.store import Outbox as OutboxStore
from firmware_py.outbox.store import OutboxError, OutMessage
from firmware_py.punch.claims import build_claims
from firmware_py.punch.ids import advance_to, uuid7, uuid7_ms
from firmware_py.timefmt import parse_utc_ms
from firmware_py.topics import Topics

log = logging.getLogger(__name__)


class PunchError(OutboxError):
    """A punch could not be built or stored; the reader must not signal success."""


class SignedPunchRecorder:
    """Turns accepted decisions into signed punches stored durably in the outbox.

    :meth:`record` returns only after the punch is committed and synced to
    disk, so the gate may signal success as soon as it returns; it raises
    (:class:`PunchError` / :class:`~firmware_py.outbox.store.OutboxFull`)
    otherwise.
    """

    def __init__(
        self,
        outbox: OutboxStore,
        key: Ed25519PrivateKey,
        *,
        site: str,
        device: str,
        topics: Topics | None = None,
        clock_synced: Callable[[], bool | None] = lambda: None,
        liveness_policy: str = "off",
        timezone: str = "UTC",
        bus: EventBus | None = None,
    ) -> None:
        self.outbox = outbox
        self.key = key
        self.kid = key_id(key)
        self.site = site
        self.device = device
        self.topics = topics or Topics(site, device)
        self.clock_synced = clock_synced
        self.liveness_policy = liveness_policy
        self.timezone = timezone
        self.bus = bus
        # Ids and ts never go backwards, even across a restart after the clock stepped back: start above the last punch.
        self._floor_ms = 0
        last = outbox.stats().last_punch
        if isinstance(last, dict):
            try:
                self._floor_ms = max(int(parse_utc_ms(str(last["ts"])).timestamp() * 1000), uuid7_ms(str(last["id"])))
            except (KeyError, ValueError):
                self._floor_ms = 0
        if self._floor_ms:
            advance_to(self._floor_ms)

    def record(self, decision: Decision, direction: Direction) -> str:
        """Sign and durably store the punch for ``decision``; return its id."""
        punch_id = str(uuid7())
        try:
            synced = self.clock_synced()
        except Exception:
            log.exception("clock-sync probe failed; punch marked clock_synced=null")
            synced = None
        ts_ms = int(decision.ts * 1000)
        if ts_ms < self._floor_ms:
            # The clock is behind an earlier punch: keep the order, and say honestly that the clock is not right.
            log.warning("clock is %.3f s behind the last punch; punch time held at the last one, clock_synced=false", (self._floor_ms - ts_ms) / 1000)
            decision = dataclasses.replace(decision, ts=self._floor_ms / 1000)
            synced = False
        self._floor_ms = max(self._floor_ms, int(decision.ts * 1000))
        holder: dict[str, Any] = {}

        def build(seq: int) -> OutMessage:
            claims = build_claims(
                decision,
                direction,
                punch_id=punch_id,
                site=self.site,
                device=self.device,
                seq=seq,
                clock_synced=synced,
                liveness_policy=self.liveness_policy,
                timezone=self.timezone,
            )
            holder["claims"] = claims
            token = sign(claims, self.key, PUNCH_TYP, self.kid)
            return OutMessage(
                punch_id, self.topics.punch, token.encode("ascii"), "punch", "application/jose", meta={"id": punch_id, "ts": claims["ts"], "seq": seq}
            )

        try:
            self.outbox.enqueue_with(build, counter="punch_seq")
        except ValueError as exc:
            raise PunchError(str(exc)) from None
        claims = holder["claims"]
        if self.bus is not None:
            self.bus.emit_new("punch.recorded", "info", id=punch_id, seq=claims["seq"], direction=direction, ts=claims["ts"])
        return punch_id
