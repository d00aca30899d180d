"""Helpers shared by the backend tests: simulated readers that sign real punches (the command side: firmware_py.bench.gates)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.backend.book import import_schedules
from firmware_py.backend.consumer import PunchConsumer
from firmware_py.backend.db import Database
from firmware_py.backend.hr import HrMaster
from firmware_py.backend.registry import DbDeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.decision.outcome import Decision
from firmware_py.keys.jwk import public_jwk
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


SCHEDULE = (
    "who,days,start,end,tz\n"
    "alice,mon-fri,09:00,12:00,Asia/Tokyo\n"
    "alice,mon-fri,13:00,18:00,Asia/Tokyo\n"
    "site:site-a,mon-fri,09:00,17:00,Asia/Tokyo\n"  # bob's group
)


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def seed_book(db: Database, tmp_path: Path) -> Database:
    """December 2026 of alice, bob (site-a, Asia/Tokyo) and carol (site-b, Europe/Lisbon): real signed punches stored by
    the consumer, with one of every anomaly kind (the book tests and the web page's tests share it)."""
    reg = DbDeviceRegistry(db)
    tokyo = Reader(tmp_path, site="site-a", device="gate-1", tz="Asia/Tokyo")
    unsynced = Reader(tmp_path, site="site-a", device="gate-2", tz="Asia/Tokyo")
    unsynced.rec.clock_synced = lambda: False  # the reader's own probe: no NTP sync yet
    tokyo.rec.clock_synced = lambda: True
    lisbon = Reader(tmp_path, site="site-b", device="gate-9", tz="Europe/Lisbon")
    for r in (tokyo, unsynced, lisbon):
        reg.add(r.site, r.device, public_jwk(r.key))
    HrMaster(db).import_people(b"id,name,sites\nalice,Alice,site-a\nbob,Bob,site-a\ncarol,Carol,site-b\n")
    import_schedules(db, SCHEDULE.encode())
    consumer = PunchConsumer(PunchStore(db), reg)
    punches = [
        (tokyo, "bob", "in", "2026-11-30T14:00:00"),  # 23:00 on 11-30 in Tokyo: not December
        # alice, Tue 12-01 Tokyo (UTC+9): 08:30-12:00, 13:00-19:00, a double IN at 13:03
        (tokyo, "alice", "in", "2026-11-30T23:30:00"),
        (tokyo, "alice", "out", "2026-12-01T03:00:00"),
        (tokyo, "alice", "in", "2026-12-01T04:00:00"),
        (tokyo, "alice", "in", "2026-12-01T04:03:00"),
        (tokyo, "alice", "out", "2026-12-01T10:00:00"),
        (tokyo, "alice", "in", "2026-12-02T00:00:00"),  # 09:00 on 12-02, never an OUT
        (unsynced, "alice", "in", "2026-12-03T00:00:00"),  # from a reader without a synchronised clock
        (tokyo, "alice", "out", "2026-12-03T08:00:00"),
        (tokyo, "bob", "out", "2026-12-01T09:00:00"),  # 18:00 on 12-01: OUT without IN (19 h after the IN: not a night shift)
        (lisbon, "bob", "in", "2026-12-04T09:00:00"),  # Fri at site-b, where bob is not assigned
        (lisbon, "bob", "out", "2026-12-04T17:00:00"),
        (lisbon, "carol", "in", "2026-12-01T09:00:00"),  # Lisbon is UTC+0 in December; carol has no schedule
        (lisbon, "carol", "out", "2026-12-01T17:00:00"),
    ]
    for reader, person, direction, ts in punches:
        assert consumer.handle(reader.topic, reader.punch(person, direction, utc(ts))).status == "stored"
    return db
