"""The gallery: enrolled people and their face templates, encrypted at rest.

One SQLite file in ``device.data_dir``.  People (id, name, sites) are rows;
each template (a 128-D float32 descriptor) is sealed with AES-256-GCM under a
key kept in a separate 0600 file, with the person id and the embedder version
as associated data, so a template cannot be moved to another person or passed
off as another model's without the decryption failing.

Every change runs in one transaction, bumps the gallery ``version`` and
recomputes the ``content_hash`` (sha256 over the decrypted content in a
canonical order), so a backend that sends a snapshot with its hash can check
the reader holds exactly that.  ``secure_delete`` makes SQLite overwrite freed
pages, so removing a person leaves neither their name nor their sealed
templates in the file.

A corrupt database or a wrong key raises :class:`GalleryError` naming the file
and the fix; the store never wipes or recreates an existing file by itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from firmware_py.errors import ExitCode, KaoclockError
from firmware_py.vision.embedder import DESCRIPTOR_DIM

if TYPE_CHECKING:
    from firmware_py.config import Config

SCHEMA_VERSION = 1
_KEY_CHECK = b"kaoclock-gallery-key-check-v1"
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


class GalleryError(KaoclockError):
    """The gallery cannot be opened or changed (corrupt file, wrong key, bad input)."""

    exit_code = ExitCode.STORAGE


@dataclass(frozen=True)
class Template:
    """One enrolled descriptor with the embedder version that made it."""

    descriptor: np.ndarray  # (128,) float32, dlib scale
    embedder_version: str
    source: str = ""  # where it came from: a photo name, "live", "sync"
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Person:
    """An enrolled person and the sites whose readers recognise them."""

    person_id: str
    name: str
    sites: tuple[str, ...]
    templates: tuple[Template, ...] = ()


@dataclass(frozen=True)
class PersonSummary:
    person_id: str
    name: str
    sites: tuple[str, ...]
    templates: int
    embedder_versions: tuple[str, ...]
    updated_at: float


@dataclass(frozen=True)
class Snapshot:
    """The whole decrypted gallery content, for sync and backups."""

    version: int
    content_hash: str
    persons: tuple[Person, ...]


@dataclass(frozen=True)
class Calibration:
    """A site threshold estimated by `kaoclock gallery calibrate`."""

    threshold: float
    target_fpir: float
    embedder_version: str
    persons: int
    impostor_pairs: int
    method: str
    content_hash: str  # the gallery content it was computed on
    ts: float

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def content_hash(persons: Iterable[Person]) -> str:
    """sha256 over the decrypted content, independent of insertion order and storage."""
    h = hashlib.sha256(b"kaoclock-gallery-v1\n")
    for p in sorted(persons, key=lambda p: p.person_id):
        head = json.dumps({"id": p.person_id, "name": p.name, "sites": sorted(p.sites)}, sort_keys=True, ensure_ascii=False)
        h.update(head.encode("utf-8") + b"\n")
        rows = sorted((t.embedder_version, np.asarray(t.descriptor, "<f4").tobytes()) for t in p.templates)
        for version, blob in rows:
            h.update(version.encode("utf-8") + b"\0" + blob + b"\n")
    return h.hexdigest()


def _check_person(p: Person) -> None:
    import re

    if not re.fullmatch(ID_PATTERN, p.person_id):
        raise GalleryError(f"person id {p.person_id!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)")
    if not p.name.strip():
        raise GalleryError(f"person {p.person_id}: the name is empty; give --name")
    if not p.sites:
        raise GalleryError(f"person {p.person_id}: no site given; a person belongs to at least one site")
    for t in p.templates:
        d = np.asarray(t.descriptor)
        if d.shape != (DESCRIPTOR_DIM,) or not np.all(np.isfinite(d)):
            raise GalleryError(f"person {p.person_id}: a template is not a finite {DESCRIPTOR_DIM}-D descriptor (shape {d.shape})")
        if not t.embedder_version:
            raise GalleryError(f"person {p.person_id}: a template has no embedder version")


def load_or_create_key(path: Path, create: bool) -> bytes:
    """The 32-byte AES key at ``path``; created (0600) only when ``create``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if not create:
            raise GalleryError(
                f"gallery key {path} is missing while the gallery database exists; restore the key file "
                "(without it the templates cannot be read), or move the database aside and re-enrol / re-sync"
            ) from None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = AESGCM.generate_key(bit_length=256)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        return key
    if st.st_mode & 0o077:
        raise GalleryError(f"gallery key {path} is readable by other users (mode {st.st_mode & 0o777:o}); fix it: chmod 600 {path}")
    key = path.read_bytes()
    if len(key) != 32:
        raise GalleryError(f"gallery key {path} holds {len(key)} bytes, not a 32-byte AES-256 key; restore the right key file")
    return key


class GalleryStore:
    """The encrypted SQLite gallery.

    >>> store = GalleryStore.open(data_dir / "gallery.sqlite", data_dir / "keys" / "gallery.key")
    >>> store.upsert_person(Person("e1001", "Hana Sato", ("site-a",), (Template(desc, "dlib-int8-v1"),)))
    >>> store.load_matrix(site="site-a", embedder_version="dlib-int8-v1")
    """

    def __init__(self, db_path: Path, key: bytes, conn: sqlite3.Connection) -> None:
        self.path = db_path
        self._aead = AESGCM(key)
        self._db = conn

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, db_path: Path, key_path: Path, create: bool = True) -> GalleryStore:
        """Open (or, when the file does not exist and ``create``, make) the gallery."""
        db_path = Path(db_path)
        exists = db_path.exists() and db_path.stat().st_size > 0
        if not exists and not create:
            raise GalleryError(f"no gallery at {db_path}; enrol someone first (`kaoclock enroll`) or check [gallery] path")
        key = load_or_create_key(Path(key_path), create=not exists)
        db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not exists:
            # Names are stored in clear (templates are sealed): the file is for this user only.
            os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA secure_delete = ON")
            # Rollback journal, not WAL: old page images must not linger in a -wal file after a removal.
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            store = cls(db_path, key, conn)
            if exists:
                store._check_existing(key_path)
            else:
                store._create_schema()
        except sqlite3.DatabaseError as exc:
            raise GalleryError(
                f"gallery database {db_path} is unreadable ({exc}); it was left untouched: restore it from a backup "
                "or move it aside and re-sync / re-enrol"
            ) from None
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_schema(self) -> None:
        # DDL first (idempotent), then the meta rows in one transaction.
        self._db.executescript(
            """
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS persons (
                    person_id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    sites TEXT NOT NULL,
                    updated_at REAL NOT NULL
                );
                CREATE TABLE IF NOT EXISTS templates (
                    id INTEGER PRIMARY KEY,
                    person_id TEXT NOT NULL REFERENCES persons(person_id) ON DELETE CASCADE,
                    embedder_version TEXT NOT NULL,
                    nonce BLOB NOT NULL,
                    sealed BLOB NOT NULL,
                    source TEXT NOT NULL,
                    created_at REAL NOT NULL
                );
                CREATE INDEX IF NOT EXISTS templates_person ON templates(person_id);
                """
        )
        with self._tx() as db:
            nonce = secrets.token_bytes(12)
            check = nonce + self._aead.encrypt(nonce, _KEY_CHECK, b"key-check")
            self._set_meta(db, "schema", str(SCHEMA_VERSION))
            self._set_meta(db, "key_check", check.hex())
            self._set_meta(db, "version", "0")
            self._set_meta(db, "content_hash", content_hash([]))

    def _check_existing(self, key_path: Path) -> None:
        rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if rows.get("schema") != str(SCHEMA_VERSION) or "key_check" not in rows:
            raise GalleryError(f"{self.path} is not a kaoclock gallery (schema {rows.get('schema')!r}); it was left untouched")
        blob = bytes.fromhex(rows["key_check"])
        try:
            ok = self._aead.decrypt(blob[:12], blob[12:], b"key-check") == _KEY_CHECK
        except InvalidTag:
            ok = False
        if not ok:
            raise GalleryError(
                f"gallery key {key_path} does not open {self.path} (wrong key); nothing was changed: restore the key "
                "that belongs to this gallery, or move the database aside and re-sync / re-enrol"
            )

    # ------------------------------------------------------------ helpers

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: everything in it lands, or nothing does."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    @staticmethod
    def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _seal(self, person_id: str, t: Template) -> tuple[bytes, bytes]:
        nonce = secrets.token_bytes(12)
        aad = f"{person_id}\0{t.embedder_version}".encode()
        return nonce, self._aead.encrypt(nonce, np.asarray(t.descriptor, "<f4").tobytes(), aad)

    def _open(self, person_id: str, version: str, nonce: bytes, sealed: bytes) -> np.ndarray:
        try:
            raw = self._aead.decrypt(nonce, sealed, f"{person_id}\0{version}".encode())
        except InvalidTag:
            raise GalleryError(
                f"a template of person {person_id} in {self.path} fails its integrity check (tampered or corrupt); "
                "remove the person and re-enrol / re-sync them"
            ) from None
        return np.frombuffer(raw, "<f4").astype(np.float32)

    def _insert(self, db: sqlite3.Connection, p: Person, now: float) -> None:
        db.execute(
            "INSERT INTO persons(person_id, name, sites, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(person_id) DO UPDATE SET name = excluded.name, sites = excluded.sites, updated_at = excluded.updated_at",
            (p.person_id, p.name, json.dumps(sorted(set(p.sites))), now),
        )
        for t in p.templates:
            nonce, sealed = self._seal(p.person_id, t)
            db.execute(
                "INSERT INTO templates(person_id, embedder_version, nonce, sealed, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (p.person_id, t.embedder_version, nonce, sealed, t.source, t.created_at),
            )

    def _bump(self, db: sqlite3.Connection) -> None:
        version = int(self._meta("version") or 0) + 1
        self._set_meta(db, "version", str(version))
        self._set_meta(db, "content_hash", content_hash(self._persons(db)))

    def _persons(self, db: sqlite3.Connection, person_ids: Sequence[str] | None = None) -> list[Person]:
        q = "SELECT person_id, name, sites FROM persons"
        rows = db.execute(q + " ORDER BY person_id").fetchall()
        if person_ids is not None:
            wanted = set(person_ids)
            rows = [r for r in rows if r[0] in wanted]
        templates: dict[str, list[Template]] = {r[0]: [] for r in rows}
        for pid, version, nonce, sealed, source, created in db.execute(
            "SELECT person_id, embedder_version, nonce, sealed, source, created_at FROM templates ORDER BY id"
        ):
            if pid in templates:
                templates[pid].append(Template(self._open(pid, version, nonce, sealed), version, source, created))
        return [Person(pid, name, tuple(json.loads(sites)), tuple(templates[pid])) for pid, name, sites in rows]

    # ------------------------------------------------------------ reading

    @property
    def version(self) -> int:
        """Increases by one with every change."""
        return int(self._meta("version") or 0)

    @property
    def content_hash(self) -> str:
        """sha256 of the decrypted content (see :func:`content_hash`)."""
        return self._meta("content_hash") or ""

    def list_persons(self) -> list[PersonSummary]:
        out = []
        for pid, name, sites, updated in self._db.execute("SELECT person_id, name, sites, updated_at FROM persons ORDER BY person_id"):
            q = "SELECT embedder_version, COUNT(*) FROM templates WHERE person_id = ? GROUP BY embedder_version"
            rows = self._db.execute(q, (pid,)).fetchall()
            out.append(PersonSummary(pid, name, tuple(json.loads(sites)), sum(n for _, n in rows), tuple(v for v, _ in rows), updated))
        return out

    def get_person(self, person_id: str) -> Person | None:
        found = self._persons(self._db, [person_id])
        return found[0] if found else None

    def export_snapshot(self) -> Snapshot:
        """Everything, decrypted, with the version and hash it corresponds to (read in one transaction)."""
        self._db.execute("BEGIN")
        try:
            persons = self._persons(self._db)
            return Snapshot(self.version, self.content_hash, tuple(persons))
        finally:
            self._db.execute("COMMIT")

    def template_versions(self) -> dict[str, int]:
        """Template count per embedder version."""
        return dict(self._db.execute("SELECT embedder_version, COUNT(*) FROM templates GROUP BY embedder_version").fetchall())

    def load_matrix(self, site: str | None, embedder_version: str) -> GalleryMatrix:
        """The templates a reader at ``site`` matches against (``None``: every site), as one matrix.

        Templates of another embedder version are left out and counted in
        ``GalleryMatrix.mismatched`` (they need re-enrolment or re-sync).
        """
        ids, names, rows = [], {}, []
        mismatched = 0
        for p in self._persons(self._db):
            if site is not None and site not in p.sites:
                continue
            names[p.person_id] = p.name
            for t in p.templates:
                if t.embedder_version != embedder_version:
                    mismatched += 1
                    continue
                ids.append(p.person_id)
                rows.append(t.descriptor)
        matrix = np.asarray(rows, np.float32).reshape(-1, DESCRIPTOR_DIM)
        return GalleryMatrix(matrix, np.asarray(ids, dtype=object), names, embedder_version, self.version, self.content_hash, mismatched)

    # ------------------------------------------------------------ changing (each one transaction)

    def upsert_person(self, person: Person, replace_templates: bool = False) -> int:
        """Add or update a person with templates; returns the new gallery version.

        ``replace_templates`` drops the person's existing templates first (a
        sync "update"); otherwise the new templates are added to theirs.
        """
        _check_person(person)
        with self._tx() as db:
            if replace_templates:
                db.execute("DELETE FROM templates WHERE person_id = ?", (person.person_id,))
            self._insert(db, person, time.time())
            self._bump(db)
        return self.version

    def remove_person(self, person_id: str) -> bool:
        """Remove a person and purge their templates; False when unknown."""
        with self._tx() as db:
            db.execute("DELETE FROM templates WHERE person_id = ?", (person_id,))
            gone = db.execute("DELETE FROM persons WHERE person_id = ?", (person_id,)).rowcount > 0
            if gone:
                self._bump(db)
        if gone:
            # Give freed pages back so nothing of the person survives in the file's free list either.
            self._db.execute("VACUUM")
        return gone

    def replace_all(self, persons: Sequence[Person], expected_hash: str | None = None) -> int:
        """Make the gallery exactly ``persons`` in one transaction (a sync "snapshot").

        With ``expected_hash`` the result must hash to it, or nothing changes.
        """
        for p in persons:
            _check_person(p)
        dupes = {p.person_id for p in persons if sum(q.person_id == p.person_id for q in persons) > 1}
        if dupes:
            raise GalleryError(f"snapshot lists person(s) {', '.join(sorted(dupes))} more than once; nothing was changed")
        if expected_hash is not None and content_hash(persons) != expected_hash:
            raise GalleryError(f"snapshot content hashes to {content_hash(persons)}, not the announced {expected_hash}; nothing was changed")
        with self._tx() as db:
            db.execute("DELETE FROM templates")
            db.execute("DELETE FROM persons")
            now = time.time()
            for p in persons:
                self._insert(db, p, now)
            self._bump(db)
        self._db.execute("VACUUM")
        return self.version

    # ------------------------------------------------------------ calibration

    def calibration(self) -> Calibration | None:
        raw = self._meta("calibration")
        return Calibration(**json.loads(raw)) if raw else None

    def set_calibration(self, cal: Calibration | None) -> None:
        """Store (or clear) the site threshold; it is local, not part of the synced content or its hash."""
        with self._tx() as db:
            if cal is None:
                db.execute("DELETE FROM meta WHERE key = 'calibration'")
            else:
                self._set_meta(db, "calibration", json.dumps(cal.as_dict()))


@dataclass(frozen=True)
class GalleryMatrix:
    """The in-scope templates of one embedder version as a float32 matrix, one row per template."""

    matrix: np.ndarray  # (T, 128) float32
    person_ids: np.ndarray  # (T,) object: the person of each row
    names: dict[str, str]
    embedder_version: str
    gallery_version: int
    content_hash: str
    mismatched: int = 0  # in-scope templates of another embedder version (not matched)

    @property
    def persons(self) -> int:
        return len(set(self.person_ids.tolist()))

    def __len__(self) -> int:
        return len(self.matrix)


def default_paths(cfg: Config) -> tuple[Path, Path]:
    """(database, key file) for a :class:`~firmware_py.config.Config`."""
    data_dir = Path(cfg.device.data_dir)
    db = cfg.gallery.path or data_dir / "gallery.sqlite"
    key = cfg.gallery.key_file or data_dir / "keys" / "gallery.key"
    return Path(db), Path(key)


def open_from_config(cfg: Config, create: bool = True) -> GalleryStore:
    db, key = default_paths(cfg)
    return GalleryStore.open(db, key, create=create)
