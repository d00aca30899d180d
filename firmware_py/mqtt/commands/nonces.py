"""Nonces of executed commands, remembered on disk until the command expires (replay protection)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path


class NonceStore:
    """A durable set of (nonce, expiry); a nonce is accepted once while its command can still be valid."""

    def __init__(self, path: Path | str, *, skew_s: float = 60.0) -> None:
        self.path = Path(path)
        self.skew_s = skew_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, exp REAL NOT NULL)")

    def remember(self, nonce: str, exp: float, now: float | None = None) -> bool:
        """Store ``nonce``; False if it was seen before (a replay). Synced before returning."""
        now = time.time() if now is None else now
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM nonces WHERE exp < ?", (now - self.skew_s,))
                cur = db.execute("INSERT OR IGNORE INTO nonces(nonce, exp) VALUES(?, ?)", (nonce, exp))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return cur.rowcount == 1

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM nonces").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
