"""Which card belongs to whom: a small SQLite table in the device's data directory."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from firmware_py.errors import UsageError

CARD_DB = "cards.sqlite"
PERSON_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"


def normalise_card(text: str) -> str:
    """Card numbers compare trimmed and upper-cased (readers differ in hex case)."""
    return text.strip().upper()


def mask_card(card: str) -> str:
    """A card number for logs and events: only the last four characters show."""
    return "*" * max(len(card) - 4, 0) + card[-4:]


class CardStore:
    """Card number -> person id, one card per row, several cards per person allowed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS cards (card TEXT PRIMARY KEY, person_id TEXT NOT NULL, added REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS cards_person ON cards (person_id)")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        db = self._db()
        try:
            with db:
                return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def add(self, card: str, person_id: str, *, pattern: str | None = None, replace: bool = False) -> None:
        """Map ``card`` to ``person_id``; a card already held by someone else needs ``replace``."""
        card = normalise_card(card)
        if not card or (pattern and not re.fullmatch(pattern, card)):
            raise UsageError(f"card number {card!r} is not valid here (card_reader.card_pattern = {pattern})")
        if not re.fullmatch(PERSON_PATTERN, person_id):
            raise UsageError(f"person id {person_id!r} is not valid (letters, digits, . _ : @ -)")
        holder = self.person_for(card)
        if holder is not None and holder != person_id and not replace:
            raise UsageError(f"card {mask_card(card)} already belongs to {holder}; remove it first or pass --replace")
        self._run("INSERT OR REPLACE INTO cards VALUES (?, ?, ?)", (card, person_id, time.time()))

    def remove(self, card: str) -> bool:
        return bool(self._run("DELETE FROM cards WHERE card = ? RETURNING card", (normalise_card(card),)))

    def remove_person(self, person_id: str) -> int:
        """Forget every card of a person (when they leave the gallery)."""
        return len(self._run("DELETE FROM cards WHERE person_id = ? RETURNING card", (person_id,)))

    def person_for(self, card: str) -> str | None:
        rows = self._run("SELECT person_id FROM cards WHERE card = ?", (normalise_card(card),))
        return rows[0][0] if rows else None

    def list(self) -> list[tuple[str, str, float]]:
        return [(c, p, t) for c, p, t in self._run("SELECT card, person_id, added FROM cards ORDER BY person_id, card")]

    def count(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM cards")[0][0])
