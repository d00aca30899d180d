"""Helpers shared by the backend tests: simulated readers that sign real punches (the command side: firmware_py.bench.gates)."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.decision.outcome import Decision
from firmware_py.outbox.store import Outbox
from firmware_py.punch.recorder import SignedPunchRecorder


class Reader:
    """A device key and recorder producing real signed punch tokens."""

    def __init__(self, tmp: Path, site: str = "site-a", device: str = "reader-1", tz: str = "Asia/Tokyo") -> None:
        self.key = Ed25519PrivateKey.generate()
        self.site, self.device = site, device
        self.outbox = Outbox(tmp / f"{site}-{device}.sqlite")
        self.rec = SignedPunchRecorder(self.outbox, self.key, site=site, device=device, timezone=tz)
        self.topic = f"kaoclock/v1/{site}/{device}/punch"

    def punch(self, person: str = "emp-1", direction: str = "in", ts: float | None = None) -> bytes:
        d = Decision(True, "match", 1, person_id=person, distance=0.4, threshold=0.55, ts=ts or time.time())
        if ts is not None:
            # A month is built here by back-dating punches in any order; a real reader's punch times only move
            # forward (the recorder holds a backward step at the last punch), so that floor is lifted for the helper.
            self.rec._floor_ms = 0
        pid = self.rec.record(d, direction)  # type: ignore[arg-type]
        msg = next(m for m in self.outbox.pending(0, 10**6) if m.id == pid)
        return msg.payload

    def punches(self, n: int) -> list[bytes]:
        """``n`` punches, signed and stored in the outbox in one go (faster than :meth:`punch` one by one)."""
        before = {m.id for m in self.outbox.pending(0, 10**7)}
        for i in range(n):
            d = Decision(True, "match", 1, person_id=f"emp-{i % 50}", distance=0.4, threshold=0.55, ts=time.time())
            self.rec.record(d, "in" if i % 2 == 0 else "out")
        return [m.payload for m in self.outbox.pending(0, 10**7) if m.id not in before]
