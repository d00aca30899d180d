"""The backend's database: SQLite (the embedded default) or PostgreSQL (a city's server), one interface.

``Database.open(target)`` takes a file path (SQLite) or a ``postgresql://``
URL (psycopg 3, only imported then: a reader never needs it).  Both run the
same versioned migrations (:mod:`firmware_py.backend.migrations`) on open,
so every consumer process of a deployment can start at once: on PostgreSQL
the migrations run under an advisory lock, on SQLite inside ``BEGIN
IMMEDIATE``.

Queries are written once with ``?`` placeholders and translated for psycopg.
A database that is down, unreachable, read-only or locked raises
:class:`StoreUnavailable`: the consumer then leaves the message
unacknowledged so the broker delivers it again.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from firmware_py.errors import ExitCode, KaoclockError

Dialect = Literal["sqlite", "postgresql"]
URL_RE = re.compile(r"^postgres(ql)?://", re.IGNORECASE)


class StoreUnavailable(KaoclockError):
    """The database cannot take writes now (down, unreachable, read-only, locked); retry later."""

    exit_code = ExitCode.STORAGE


class DatabaseError(KaoclockError):
    """The database target is wrong (bad URL, driver missing, newer schema than this program knows)."""


def is_url(target: str | Path) -> bool:
    return isinstance(target, str) and bool(URL_RE.match(target))


def redact(target: str | Path) -> str:
    """The target without a password, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", str(target))


class Cursor:
    """What a transaction hands out: ``execute`` with ``?`` placeholders on either database."""

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw = raw
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self.raw.execute(self._sql(sql), tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Cursor:
        if rows:
            self.raw.executemany(self._sql(sql), [tuple(r) for r in rows])
        return self

    def fetchone(self) -> Any:
        return self.raw.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self.raw.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self.raw.rowcount)


class Database:
    """One connection, used by one thread at a time (a lock), every write inside :meth:`tx`."""

    def __init__(self, target: str | Path, *, migrate: bool = True) -> None:
        self.target = target
        self.dialect: Dialect = "postgresql" if is_url(target) else "sqlite"
        self._lock = threading.RLock()
        self._conn: Any = None
        self._connect()
        if migrate:
            from firmware_py.backend.migrations import migrate as run

            run(self)

    @classmethod
    def open(cls, target: str | Path) -> Database:
        return cls(target)

    def __repr__(self) -> str:
        return f"Database({redact(self.target)!r})"

    # ------------------------------------------------------------ connection

    def _connect(self) -> None:
        if self.dialect == "sqlite":
            path = Path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"cannot open {path}: {exc}") from None
            self._conn = conn
            return
        try:
            import psycopg
        except ImportError:
            raise DatabaseError(
                "a postgresql:// database needs psycopg 3: pip install 'kaoclock[backend]' (or the dev set-up, device/bootstrap.sh --dev)"
            ) from None
        try:
            self._conn = psycopg.connect(str(self.target), autocommit=True, connect_timeout=10, application_name="kaoclock-backend")
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot connect to {redact(self.target)}: {str(exc).strip()}") from None
        except psycopg.ProgrammingError as exc:
            raise DatabaseError(f"bad database URL {redact(self.target)}: {exc}") from None

    def _unavailable_errors(self) -> tuple[type[BaseException], ...]:
        if self.dialect == "sqlite":
            return (sqlite3.OperationalError,)
        import psycopg

        # OperationalError: down / connection lost; InternalError covers read-only transactions and shutdowns in progress.
        return (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.AdminShutdown)

    @contextlib.contextmanager
    def tx(self) -> Iterator[Cursor]:
        """One transaction: committed when the block ends, rolled back on an exception."""
        unavailable = self._unavailable_errors()
        with self._lock:
            try:
                if self._conn is None or (self.dialect == "postgresql" and self._conn.closed):
                    self._connect()
                if self.dialect == "sqlite":
                    self._conn.execute("BEGIN IMMEDIATE")
                    cur = self._conn.cursor()
                    try:
                        yield Cursor(cur, "sqlite")
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
                else:
                    with self._conn.transaction(), self._conn.cursor() as cur:
                        yield Cursor(cur, "postgresql")
            except unavailable as exc:
                if self.dialect == "postgresql":
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
                raise StoreUnavailable(
                    f"{redact(self.target)}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                ) from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read; tried a second time on a fresh connection when the first found it lost (a server restart)."""
        for attempt in (1, 2):
            try:
                with self.tx() as cur:
                    return cur.execute(sql, params).fetchall()
            except StoreUnavailable:
                if attempt == 2 or self.dialect == "sqlite":
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
