"""The durable outbox: SQLite in WAL mode, every enqueue synced before it returns.

Why not paho's own queue: it lives in memory and is gone on power loss.
Here a message is on disk (WAL, ``synchronous=FULL``: the commit fsyncs the
log) before :meth:`Outbox.enqueue` returns, so the reader signals success
only for a punch that will survive a power cut or ``kill -9``.

Rows leave the table only when the backend's signed receipt says they are
stored in its database (:meth:`Outbox.remove_ids`; a broker's PUBACK is not
delivery); those deletions run on a second connection with
``synchronous=NORMAL``, batched: losing a deletion to a power cut means a
resend (a duplicate the consumer drops by punch id), never a loss.  A
message waiting longer than the retention bound raises ``outbox.high_water``
(:meth:`Outbox.check_retention`) and stays.

The table is bounded.  Above ``high_water`` of ``capacity`` an
``outbox.high_water`` alarm is emitted (once, until the depth falls below
half of that again: ``outbox.normal``).  When full, new messages are
*refused* (:class:`OutboxFull`, event ``outbox.full``): nothing already
queued is ever dropped to make room, unlike the "cyclic delete" of some
readers.  The gate then treats the punch as not recorded.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_py.errors import ExitCode, KaoclockError
from firmware_py.events import EventBus

if TYPE_CHECKING:
    from firmware_py.config import Config

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- send order; AUTOINCREMENT: never reused
    id TEXT NOT NULL UNIQUE,                -- message id (the punch id)
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    content_type TEXT,
    created REAL NOT NULL,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class OutboxError(KaoclockError):
    """The outbox could not store a message durably (disk full, I/O error, corrupt file)."""

    exit_code = ExitCode.STORAGE


class OutboxFull(OutboxError):
    """The outbox holds ``capacity`` messages; new ones are refused, none is dropped."""


@dataclass(frozen=True)
class OutMessage:
    """A message to be published QoS 1 once the broker is reachable."""

    id: str
    topic: str
    payload: bytes
    kind: str = "punch"
    content_type: str | None = "application/jose"
    meta: dict[str, Any] | None = None  # stored as meta 'last_<kind>' (e.g. last punch id/ts/seq)


@dataclass(frozen=True)
class Pending:
    seq: int
    id: str
    topic: str
    payload: bytes
    kind: str
    content_type: str | None
    created: float


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    capacity: int
    high_water: int
    high_water_active: bool
    oldest_created: float | None
    last_punch: dict[str, Any] | None
    path: str


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class Outbox:
    """A bounded, durable FIFO of messages waiting for their PUBACK.

    Thread-safe: enqueues may come from any thread; one drainer reads and
    deletes through :meth:`pending` / :meth:`mark_delivered`.
    """

    def __init__(self, path: Path | str, *, capacity: int = 100_000, high_water: float = 0.8, bus: EventBus | None = None) -> None:
        self.path = Path(path)
        self.capacity = int(capacity)
        self.high_water = max(1, int(self.capacity * high_water))
        self.bus = bus
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._stale = False  # a message waits longer than the retention bound (check_retention)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._w = _connect(self.path, "FULL")
            self._w.executescript(SCHEMA)
            mode = self._w.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                raise OutboxError(f"outbox {self.path}: the file system refused WAL mode ({mode}); put data_dir on a local disk")
            # Re-derive the depth counter once at start: it is what capacity checks trust.
            self._w.execute("BEGIN IMMEDIATE")
            n = self._w.execute("SELECT count(*) FROM messages").fetchone()[0]
            self._w.execute("INSERT INTO counters(name, value) VALUES('depth', ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value", (n,))
            self._w.execute("COMMIT")
            self._r = _connect(self.path, "NORMAL")
        except sqlite3.DatabaseError as exc:
            raise OutboxError(
                f"outbox {self.path} cannot be opened: {exc}. Nothing was deleted; move the file aside for inspection to start with an empty outbox"
            ) from None
        except OSError as exc:
            raise OutboxError(f"outbox {self.path} cannot be created: {exc}") from None
        self._depth = n
        self._hw_active = False
        self._levels_lock = threading.Lock()
        self._check_levels()

    @classmethod
    def from_config(cls, cfg: Config, bus: EventBus | None = None) -> Outbox:
        """The outbox at ``[outbox] path`` (default ``<data_dir>/outbox.sqlite``)."""
        oc = cfg.outbox
        path = oc.path or (cfg.device.data_dir / "outbox.sqlite")
        return cls(path, capacity=oc.capacity, high_water=oc.high_water, bus=bus)

    # ------------------------------------------------------------ writing

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` after every enqueue (the drainer uses it to wake up)."""
        self._listeners.append(fn)

    def enqueue(self, msg: OutMessage) -> int:
        """Store ``msg`` durably; return its outbox sequence number."""
        _, seq = self.enqueue_with(lambda _n: msg, counter=None)
        return seq

    def enqueue_with(self, build: Callable[[int], OutMessage], counter: str | None = "punch_seq") -> tuple[OutMessage, int]:
        """Allocate the next value of ``counter``, build the message from it and store both in one transaction.

        This is how the per-device punch sequence survives restarts without
        gaps: the number is consumed only if the message is committed.
        Returns the stored message and its outbox sequence number.
        """
        try:
            with self._wlock:
                if self._depth >= self.capacity:
                    full = True
                else:
                    full = False
                    msg, seq = self._store(build, counter)
        except OutboxError:
            raise
        except (sqlite3.Error, OSError) as exc:
            self._emit("outbox.store_failed", "fault", error=str(exc), path=str(self.path))
            raise OutboxError(f"outbox {self.path}: the message could not be stored durably: {exc}") from None
        if full:
            self._emit("outbox.full", "fault", depth=self._depth, capacity=self.capacity)
            raise OutboxFull(
                f"outbox {self.path} is full ({self._depth} of {self.capacity} messages waiting for the broker); "
                "the new message was refused and nothing queued was dropped. Fix the broker link, or raise [outbox] capacity"
            )
        for fn in list(self._listeners):
            try:
                fn()
            except Exception:
                log.exception("outbox listener failed")
        self._check_levels()
        return msg, seq

    def _store(self, build: Callable[[int], OutMessage], counter: str | None) -> tuple[OutMessage, int]:
        w = self._w
        w.execute("BEGIN IMMEDIATE")
        try:
            n = 0
            if counter:
                row = w.execute("SELECT value FROM counters WHERE name=?", (counter,)).fetchone()
                n = (row[0] if row else 0) + 1
            msg = build(n)
            cur = w.execute(
                "INSERT INTO messages(id, kind, topic, payload, content_type, created) VALUES(?,?,?,?,?,?)",
                (msg.id, msg.kind, msg.topic, msg.payload, msg.content_type, time.time()),
            )
            seq = int(cur.lastrowid or 0)
            if counter:
                w.execute("INSERT INTO counters(name, value) VALUES(?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value", (counter, n))
            w.execute("UPDATE counters SET value = value + 1 WHERE name='depth'")
            if msg.meta is not None:
                w.execute(
                    "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (f"last_{msg.kind}", json.dumps(msg.meta)),
                )
            w.execute("COMMIT")
        except BaseException:
            if w.in_transaction:
                w.execute("ROLLBACK")
            raise
        self._depth += 1
        return msg, seq

    def counter(self, name: str = "punch_seq") -> int:
        """The last value handed out by ``counter`` (0 if none)."""
        with self._wlock:
            row = self._w.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------ draining

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[Pending]:
        """Up to ``limit`` waiting messages with ``seq > after_seq``, oldest first."""
        with self._rlock:
            rows = self._r.execute(
                "SELECT seq, id, topic, payload, kind, content_type, created FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [Pending(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6]) for r in rows]

    def mark_delivered(self, seqs: Iterable[int]) -> int:
        """Remove acknowledged messages; returns how many were removed."""
        return self._remove("seq", list(seqs))

    def remove_ids(self, ids: Iterable[str]) -> int:
        """Remove the messages with these ids (the backend's receipt confirmed them); unknown ids are ignored."""
        return self._remove("id", list(ids))

    def _remove(self, column: str, keys: list[int] | list[str]) -> int:
        """Delete the messages whose ``column`` (seq or id) is in ``keys``, in one transaction; keep the depth counter."""
        if not keys:
            return 0
        removed = 0
        with self._rlock:
            r = self._r
            r.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    cur = r.execute(f"DELETE FROM messages WHERE {column} IN ({','.join('?' * len(chunk))})", chunk)
                    removed += cur.rowcount
                r.execute("UPDATE counters SET value = value - ? WHERE name='depth'", (removed,))
                r.execute("COMMIT")
            except BaseException:
                if r.in_transaction:
                    r.execute("ROLLBACK")
                raise
        with self._wlock:
            self._depth -= removed
        self._check_levels()
        return removed

    def oldest_created(self) -> float | None:
        """When the oldest waiting message was stored (epoch s), None when empty."""
        with self._rlock:
            row = self._r.execute("SELECT created FROM messages ORDER BY seq LIMIT 1").fetchone()
        return float(row[0]) if row else None

    def check_retention(self, retention_s: float, now: float | None = None) -> float | None:
        """Raise ``outbox.high_water`` (reason "retention") once while the oldest message has waited
        longer than ``retention_s`` for its receipt; nothing is deleted.  Returns since when punches
        are unconfirmed (the oldest one's time), or None while within the bound."""
        oldest = self.oldest_created()
        now = time.time() if now is None else now
        stale = oldest is not None and now - oldest > retention_s
        with self._levels_lock:
            change = stale != self._stale
            self._stale = stale
        if change and stale:
            self._emit(
                "outbox.high_water", "alarm", depth=self._depth, capacity=self.capacity, high_water=self.high_water,
                reason="retention", unconfirmed_since=oldest, retention_s=retention_s,
            )  # fmt: skip
        elif change:
            self._emit("outbox.normal", "info", depth=self._depth, capacity=self.capacity, reason="retention")
        return oldest if stale else None

    def note_error(self, seq: int, error: str) -> None:
        """Remember why the broker refused a message (shown by ``stats`` and telemetry)."""
        with self._rlock:
            self._r.execute("UPDATE messages SET last_error=? WHERE seq=?", (error[:500], seq))

    # ------------------------------------------------------------ reading

    def depth(self) -> int:
        return self._depth

    def stats(self) -> OutboxStats:
        with self._rlock:
            oldest = self._r.execute("SELECT created FROM messages ORDER BY seq LIMIT 1").fetchone()
            last = self._r.execute("SELECT value FROM meta WHERE key='last_punch'").fetchone()
        return OutboxStats(
            depth=self._depth,
            capacity=self.capacity,
            high_water=self.high_water,
            high_water_active=self._hw_active,
            oldest_created=oldest[0] if oldest else None,
            last_punch=json.loads(last[0]) if last else None,
            path=str(self.path),
        )

    def close(self) -> None:
        with self._wlock, self._rlock:
            self._w.close()
            self._r.close()

    # ------------------------------------------------------------ levels

    def _check_levels(self) -> None:
        with self._levels_lock:
            depth = self._depth
            change = None
            if not self._hw_active and depth >= self.high_water:
                self._hw_active = True
                change = "high"
            elif self._hw_active and depth < self.high_water // 2:
                self._hw_active = False
                change = "normal"
        if change == "high":
            self._emit("outbox.high_water", "alarm", depth=depth, capacity=self.capacity, high_water=self.high_water)
        elif change == "normal":
            self._emit("outbox.normal", "info", depth=depth, capacity=self.capacity)

    def _emit(self, type: str, severity: Any, **data: Any) -> None:
        if self.bus is not None:
            self.bus.emit_new(type, severity, **data)
