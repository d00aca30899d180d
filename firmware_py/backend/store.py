"""The backend's punch database (SQLite or PostgreSQL): punches de-duplicated by id, and every reject with its reason."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from firmware_py.backend.db import Cursor, Database
from firmware_py.backend.verify import VerifiedPunch
from firmware_py.timefmt import parse_utc_ms


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
    """Punches and rejects in a :class:`~firmware_py.backend.db.Database` (SQLite file or PostgreSQL URL).

    Thread-safe; every write is committed (and on SQLite synced) before
    :meth:`add` returns, so the consumer acknowledges only what is stored.
    """

    def __init__(self, target: Path | str | Database) -> None:
        self.db = target if isinstance(target, Database) else Database.open(target)
        self.path = self.db.target

    def add(self, p: VerifiedPunch, topic: str = "") -> Literal["stored", "duplicate", "conflict"]:
        """Store a verified punch; "duplicate" if this id is already stored with the same token,
        "conflict" if the id is stored with *different* content (recorded as a reject).  One transaction."""
        c = p.claims
        ts_ms = int(parse_utc_ms(c["ts"]).timestamp() * 1000)
        synced = None if c.get("clock_synced") is None else int(bool(c["clock_synced"]))
        with self.db.tx() as cur:
            cur.execute(
                "INSERT INTO punches(id, site, device, seq, person, direction, ts, ts_ms, tz, clock_synced, kid, claims, jws, received)"
                " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
                (c["id"], c["site"], c["device"], c["seq"], c["person"], c["direction"], c["ts"], ts_ms, c["tz"], synced, p.kid,
                 json.dumps(c, sort_keys=True), p.token, time.time()),
            )  # fmt: skip
            if cur.rowcount == 1:
                return "stored"
            row = cur.execute("SELECT jws FROM punches WHERE id=?", (c["id"],)).fetchone()
            _bump(cur, "duplicates")
            if row and row[0] == p.token:
                return "duplicate"
            _reject(cur, topic or f"{c['site']}/{c['device']}", "id_conflict", "a different punch with this id is already stored", p.token, c["id"])
        return "conflict"

    def add_reject(self, topic: str, reason: str, detail: str, payload: bytes | str, punch_id: str | None = None) -> None:
        with self.db.tx() as cur:
            _reject(cur, topic, reason, detail, payload, punch_id)

    def punches_between(self, start_ms: int, end_ms: int) -> list[StoredPunch]:
        rows = self.db.query(
            "SELECT id, site, device, seq, person, direction, ts, tz, clock_synced FROM punches WHERE ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms, seq",
            (start_ms, end_ms),
        )
        return [StoredPunch(r[0], r[1], r[2], r[3], r[4], r[5], parse_utc_ms(r[6]), r[7], None if r[8] is None else bool(r[8])) for r in rows]

    def ids(self) -> list[str]:
        return [r[0] for r in self.db.query("SELECT id FROM punches")]

    def count(self) -> int:
        return int(self.db.query("SELECT count(*) FROM punches")[0][0])

    def counter(self, name: str) -> int:
        rows = self.db.query("SELECT value FROM counters WHERE name=?", (name,))
        return int(rows[0][0]) if rows else 0

    def rejects(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.query("SELECT n, received, topic, reason, detail, punch_id FROM rejects ORDER BY n DESC LIMIT ?", (limit,))
        return [{"n": r[0], "received": r[1], "topic": r[2], "reason": r[3], "detail": r[4], "punch_id": r[5]} for r in rows]

    def close(self) -> None:
        self.db.close()


def _bump(cur: Cursor, name: str) -> None:
    cur.execute("INSERT INTO counters(name, value) VALUES(?, 1) ON CONFLICT(name) DO UPDATE SET value = counters.value + 1", (name,))


def _reject(cur: Cursor, topic: str, reason: str, detail: str, payload: bytes | str, punch_id: str | None) -> None:
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    cur.execute(
        "INSERT INTO rejects(received, topic, reason, detail, punch_id, payload) VALUES(?,?,?,?,?,?)",
        (time.time(), topic, reason, detail[:1000], punch_id, text[:4096].replace("\x00", "")),
    )
