"""The backend's punch database (SQLite or PostgreSQL): punches de-duplicated by id, and every reject with its reason."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from firmware_py.backend.db import Cursor, Database
from firmware_py.backend.verify import VerifiedPunch
from firmware_py.timefmt import parse_utc_ms

Status = Literal["stored", "duplicate", "conflict"]
RejectRow = tuple[str, str, str, "bytes | str", "str | None"]  # topic, reason, detail, payload, punch id


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

    def add(self, p: VerifiedPunch, topic: str = "") -> Status:
        """Store a verified punch; "duplicate" if this id is already stored with the same token,
        "conflict" if the id is stored with *different* content (recorded as a reject).  One transaction."""
        return self.add_batch([(p, topic)])[0]

    def add_batch(self, punches: Sequence[tuple[VerifiedPunch, str]], rejects: Sequence[RejectRow] = ()) -> list[Status]:
        """Store many punches (and rejects) in one transaction; the status of each punch, in order.

        One multi-row insert that skips ids already stored; the skipped ones are
        then compared with what is stored: the same token is a ``duplicate``
        (a redelivery), another token with the same id a ``conflict``.
        """
        statuses: list[Status] = []
        with self.db.tx() as cur:
            for r in rejects:
                _reject(cur, *r)
            if not punches:
                return statuses
            rows, now = [], time.time()
            for p, _topic in punches:
                c = p.claims
                ts_ms = int(parse_utc_ms(c["ts"]).timestamp() * 1000)
                synced = None if c.get("clock_synced") is None else int(bool(c["clock_synced"]))
                rows.append((c["id"], c["site"], c["device"], c["seq"], c["person"], c["direction"], c["ts"], ts_ms, c["tz"], synced, p.kid,
                             json.dumps(c, sort_keys=True), p.token, now))  # fmt: skip
            inserted: set[str] = set()
            for k in range(0, len(rows), 500):
                part = rows[k : k + 500]
                values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"] * len(part))
                flat = [v for row in part for v in row]
                found = cur.execute(
                    "INSERT INTO punches(id, site, device, seq, person, direction, ts, ts_ms, tz, clock_synced, kid, claims, jws, received)"
                    f" VALUES {values} ON CONFLICT (id) DO NOTHING RETURNING id",
                    flat,
                ).fetchall()
                inserted |= {r[0] for r in found}
            _note_last_punches(cur, [(r[1], r[2], r[7]) for r in rows if r[0] in inserted])
            others = sorted({p.claims["id"] for p, _ in punches} - inserted)
            stored_jws: dict[str, str] = {}
            for k in range(0, len(others), 500):
                part = others[k : k + 500]
                stored_jws.update(cur.execute(f"SELECT id, jws FROM punches WHERE id IN ({','.join('?' * len(part))})", part).fetchall())
            first_token: dict[str, str] = {}  # the same id twice in one batch: the first is stored, the second compared with it
            for p, topic in punches:
                pid = p.claims["id"]
                if pid in inserted and pid not in first_token:
                    first_token[pid] = p.token
                    statuses.append("stored")
                    continue
                _bump(cur, "duplicates")
                if (first_token.get(pid) or stored_jws.get(pid)) == p.token:
                    statuses.append("duplicate")
                else:
                    c = p.claims
                    _reject(
                        cur, topic or f"{c['site']}/{c['device']}", "id_conflict", "a different punch with this id is already stored", p.token, pid
                    )
                    statuses.append("conflict")
        return statuses

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


def _note_last_punches(cur: Cursor, punches: list[tuple[str, str, int]]) -> None:
    """Keep ``reader_last_punch`` (the fleet view's last punch per reader) in step, in the insert's transaction."""
    latest: dict[tuple[str, str], int] = {}
    for site, device, ts_ms in punches:
        latest[(site, device)] = max(ts_ms, latest.get((site, device), ts_ms))
    for (site, device), ts_ms in sorted(latest.items()):  # a fixed order: two consumers never wait on each other's rows crosswise
        cur.execute(
            "INSERT INTO reader_last_punch(site, device, ts_ms) VALUES(?,?,?)"
            " ON CONFLICT (site, device) DO UPDATE SET ts_ms = excluded.ts_ms WHERE excluded.ts_ms > reader_last_punch.ts_ms",
            (site, device, ts_ms),
        )


def _bump(cur: Cursor, name: str) -> None:
    cur.execute("INSERT INTO counters(name, value) VALUES(?, 1) ON CONFLICT(name) DO UPDATE SET value = counters.value + 1", (name,))


def _reject(cur: Cursor, topic: str, reason: str, detail: str, payload: bytes | str, punch_id: str | None) -> None:
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    cur.execute(
        "INSERT INTO rejects(received, topic, reason, detail, punch_id, payload) VALUES(?,?,?,?,?,?)",
        (time.time(), topic, reason, detail[:1000], punch_id, text[:4096].replace("\x00", "")),
    )
