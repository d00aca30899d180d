"""The backend's punch database (SQLite): punches de-duplicated by id, and every reject with its reason."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from firmware_py.backend.verify import VerifiedPunch
from firmware_py.punch.claims import parse_utc_ms

SCHEMA = """
CREATE TABLE IF NOT EXISTS punches (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    person TEXT NOT NULL,
    direction TEXT NOT NULL,
    ts TEXT NOT NULL,          -- RFC 3339 UTC, as signed
    ts_ms INTEGER NOT NULL,    -- the same, epoch milliseconds (for ranges)
    tz TEXT NOT NULL,
    clock_synced INTEGER,      -- 1, 0 or NULL (unknown)
    kid TEXT NOT NULL,
    claims TEXT NOT NULL,
    jws TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS punches_ts ON punches(ts_ms);
CREATE INDEX IF NOT EXISTS punches_device_seq ON punches(site, device, seq);
CREATE TABLE IF NOT EXISTS rejects (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    punch_id TEXT,
    payload TEXT NOT NULL     -- first 4 KiB, for investigation
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class StoredPunch:
    id: str
    site: str
    device: str
    seq: int
    person: str
    direction: str
    ts: datetime
    tz: str
    clock_synced: bool | None


class PunchStore:
    """Thread-safe; every write is synced before the consumer acknowledges the message."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several :meth:`add` / :meth:`add_reject` calls into one commit (one sync for a batch)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with self._lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise
        with self._lock:
            self._db.execute("COMMIT")

    def add(self, p: VerifiedPunch, topic: str = "") -> Literal["stored", "duplicate", "conflict"]:
        """Store a verified punch; "duplicate" if this id is already stored with the same token,
        "conflict" if the id is stored with *different* content (recorded as a reject)."""
        c = p.claims
        ts_ms = int(parse_utc_ms(c["ts"]).timestamp() * 1000)
        synced = None if c.get("clock_synced") is None else int(bool(c["clock_synced"]))
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO punches(id, site, device, seq, person, direction, ts, ts_ms, tz, clock_synced, kid, claims, jws, received)"
                " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (c["id"], c["site"], c["device"], c["seq"], c["person"], c["direction"], c["ts"], ts_ms, c["tz"], synced, p.kid,
                 json.dumps(c, sort_keys=True), p.token, time.time()),
            )  # fmt: skip
            if cur.rowcount == 1:
                return "stored"
            row = self._db.execute("SELECT jws FROM punches WHERE id=?", (c["id"],)).fetchone()
            self._bump("duplicates")
        if row and row[0] == p.token:
            return "duplicate"
        self.add_reject(topic or f"{c['site']}/{c['device']}", "id_conflict", "a different punch with this id is already stored", p.token, c["id"])
        return "conflict"

    def add_reject(self, topic: str, reason: str, detail: str, payload: bytes | str, punch_id: str | None = None) -> None:
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        with self._lock:
            self._db.execute(
                "INSERT INTO rejects(received, topic, reason, detail, punch_id, payload) VALUES(?,?,?,?,?,?)",
                (time.time(), topic, reason, detail[:1000], punch_id, text[:4096]),
            )

    def _bump(self, name: str) -> None:
        self._db.execute("INSERT INTO counters(name, value) VALUES(?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1", (name,))

    def punches_between(self, start_ms: int, end_ms: int) -> list[StoredPunch]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, site, device, seq, person, direction, ts, tz, clock_synced FROM punches"
                " WHERE ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms, seq",
                (start_ms, end_ms),
            ).fetchall()
        return [StoredPunch(r[0], r[1], r[2], r[3], r[4], r[5], parse_utc_ms(r[6]), r[7], None if r[8] is None else bool(r[8])) for r in rows]

    def ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM punches")]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM punches").fetchone()[0])

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def rejects(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT n, received, topic, reason, detail, punch_id FROM rejects ORDER BY n DESC LIMIT ?", (limit,)).fetchall()
        return [{"n": r[0], "received": r[1], "topic": r[2], "reason": r[3], "detail": r[4], "punch_id": r[5]} for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
