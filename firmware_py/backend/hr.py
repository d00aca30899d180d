"""The HR master: sites, people and their site assignments, and each person's photos and templates.

Staff come from HR as a CSV (``id,name,sites``, sites separated by ``;``):
:func:`parse_staff_csv` checks every row and names each bad one (bad
encoding, duplicate id, empty name, unknown site ...); :meth:`HrMaster.import_people`
applies a good file in one transaction, so a bad file changes nothing.

Photos and templates are sealed with AES-256-GCM under the backend's template
key (``<home>/templates.key``, mode 0600, kept outside the database, the
same key format as the reader's gallery key); the additional data binds each
blob to its person (and a template to its embedder version), so a row moved
to another person fails to open.  Photos are kept so that templates can be
extracted again when the embedder changes (:meth:`HrMaster.reextract`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from firmware_py.backend.csvfile import csv_rows
from firmware_py.backend.db import Cursor, Database
from firmware_py.errors import ExitCode, KaoclockError
from firmware_py.gallery.store import DESCRIPTOR_DIM, ID_PATTERN, Person, Template, load_or_create_key

ID_RE = re.compile(ID_PATTERN)  # the reader gallery's own rule
SITE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
MAX_NAME = 200


class HrError(KaoclockError):
    """A refused HR master change; nothing was changed."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class StaffRow:
    line: int
    person_id: str
    name: str
    sites: tuple[str, ...]


def parse_staff_csv(data: bytes, known_sites: Iterable[str], where: str = "staff CSV") -> list[StaffRow]:
    """The rows of a staff CSV, or :class:`HrError` naming every bad row (line numbers as an editor shows them)."""
    known = set(known_sites)
    problems: list[str] = []
    rows: list[StaffRow] = []
    seen: dict[str, int] = {}
    hint = " - quote a name that contains a comma"
    for line, (pid, name, sites_text) in csv_rows(data, ("id", "name", "sites"), where, problems, HrError, hint):
        bad = []
        if not ID_RE.fullmatch(pid):
            bad.append(f"id {pid!r} must be 1-64 letters, digits, '.', '_' or '-'")
        elif pid in seen:
            bad.append(f"id {pid} is a duplicate of line {seen[pid]}")
        if not name:
            bad.append("the name is empty")
        elif len(name) > MAX_NAME:
            bad.append(f"the name is longer than {MAX_NAME} characters")
        sites = tuple(dict.fromkeys(s.strip() for s in sites_text.split(";") if s.strip()))
        if not sites:
            bad.append("no site; list the person's sites separated by ';'")
        for s in sites:
            if not SITE_RE.fullmatch(s):
                bad.append(f"site {s!r} is not a site id (lowercase letters, digits, '-')")
            elif s not in known:
                bad.append(f"unknown site {s!r} (add it with `kaoclock backend sites add {s}` or register its readers)")
        if bad:
            problems.append(f"line {line}: " + "; ".join(bad))
        else:
            seen[pid] = line
            rows.append(StaffRow(line, pid, name, sites))
    if problems:
        shown = problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        raise HrError(f"{where}: {len(problems)} bad row(s); nothing was imported:\n  " + "\n  ".join(shown))
    return rows


@dataclass(frozen=True)
class ImportReport:
    added: int
    updated: int
    unchanged: int
    removed: int

    def as_dict(self) -> dict[str, int]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged, "removed": self.removed}


class HrMaster:
    """Sites, people, assignments, photos and templates in the backend database."""

    def __init__(self, db: Database, key: bytes | None = None) -> None:
        self.db = db
        self._aead = AESGCM(key) if key is not None else None

    @classmethod
    def open(cls, db: Database, key_path: Path, create: bool = True) -> HrMaster:
        return cls(db, load_or_create_key(key_path, create))

    @property
    def aead(self) -> AESGCM:
        if self._aead is None:
            raise HrError("this needs the backend's template key (<home>/templates.key)")
        return self._aead

    # ------------------------------------------------------------ sites and people

    def add_site(self, site: str) -> bool:
        if not SITE_RE.fullmatch(site):
            raise HrError(f"site {site!r} must be lowercase letters, digits and '-' (as in the readers' device.site)")
        with self.db.tx() as cur:
            return cur.execute("INSERT INTO sites(site, added) VALUES(?,?) ON CONFLICT (site) DO NOTHING", (site, time.time())).rowcount == 1

    def sites(self) -> list[str]:
        return [r[0] for r in self.db.query("SELECT site FROM sites ORDER BY site")]

    def import_people(self, data: bytes, *, full: bool = False, where: str = "staff CSV") -> ImportReport:
        """Add or update the people of a staff CSV in one transaction; with ``full`` also remove everyone not in it."""
        rows = parse_staff_csv(data, self.sites(), where)
        now = time.time()
        added = updated = unchanged = removed = 0
        with self.db.tx() as cur:
            current = {r[0]: r[1] for r in cur.execute("SELECT person_id, name FROM people").fetchall()}
            assigned: dict[str, set[str]] = {}
            for pid, site in cur.execute("SELECT person_id, site FROM person_sites").fetchall():
                assigned.setdefault(pid, set()).add(site)
            for r in rows:
                if r.person_id not in current:
                    cur.execute("INSERT INTO people(person_id, name, updated) VALUES(?,?,?)", (r.person_id, r.name, now))
                    added += 1
                elif current[r.person_id] != r.name or assigned.get(r.person_id, set()) != set(r.sites):
                    cur.execute("UPDATE people SET name=?, updated=? WHERE person_id=?", (r.name, now, r.person_id))
                    cur.execute("DELETE FROM person_sites WHERE person_id=?", (r.person_id,))
                    updated += 1
                else:
                    unchanged += 1
                    continue
                cur.executemany("INSERT INTO person_sites(person_id, site) VALUES(?,?)", [(r.person_id, s) for s in r.sites])
            if full:
                gone = sorted(set(current) - {r.person_id for r in rows})
                for pid in gone:
                    _delete_person(cur, pid)
                removed = len(gone)
        return ImportReport(added, updated, unchanged, removed)

    def remove_person(self, person_id: str) -> bool:
        """Remove a person with their photos and templates; the next sync purges them from every reader."""
        with self.db.tx() as cur:
            return _delete_person(cur, person_id)

    def change_mark(self) -> tuple[Any, ...]:
        """Changes whenever people, assignments or templates change (``sync --watch`` polls it)."""
        people = self.db.query("SELECT count(*), max(updated) FROM people")[0]
        assigned = self.db.query("SELECT count(*) FROM person_sites")[0]
        templates = self.db.query("SELECT count(*), max(id) FROM templates")[0]
        return (*people, *assigned, *templates)

    def person(self, person_id: str) -> tuple[str, tuple[str, ...]] | None:
        rows = self.db.query("SELECT name FROM people WHERE person_id=?", (person_id,))
        if not rows:
            return None
        sites = tuple(r[0] for r in self.db.query("SELECT site FROM person_sites WHERE person_id=? ORDER BY site", (person_id,)))
        return rows[0][0], sites

    def people(self) -> list[dict[str, Any]]:
        sites: dict[str, list[str]] = {}
        for pid, s in self.db.query("SELECT person_id, site FROM person_sites ORDER BY site"):
            sites.setdefault(pid, []).append(s)
        counts: dict[tuple[str, str], int] = {
            (r[0], r[1]): int(r[2])
            for r in self.db.query("SELECT person_id, embedder_version, count(*) FROM templates GROUP BY person_id, embedder_version")
        }
        photos = dict(self.db.query("SELECT person_id, count(*) FROM photos GROUP BY person_id"))
        out = []
        for pid, name in self.db.query("SELECT person_id, name FROM people ORDER BY person_id"):
            out.append(
                {
                    "id": pid,
                    "name": name,
                    "sites": sites.get(pid, []),
                    "photos": int(photos.get(pid, 0)),
                    "templates": {v: n for (p, v), n in counts.items() if p == pid},
                }
            )
        return out

    # ------------------------------------------------------------ photos and templates

    def _seal(self, data: bytes, aad: str) -> tuple[bytes, bytes]:
        nonce = secrets.token_bytes(12)
        return nonce, self.aead.encrypt(nonce, data, aad.encode())

    def _open(self, nonce: bytes, sealed: bytes, aad: str, what: str) -> bytes:
        try:
            return self.aead.decrypt(bytes(nonce), bytes(sealed), aad.encode())
        except InvalidTag:
            raise HrError(f"{what} fails its integrity check (wrong templates.key, tampered or moved); enrol the person again") from None

    def store_enrolment(
        self, person_id: str, photos: Sequence[bytes], descriptors: Sequence[np.ndarray], embedder_version: str, *, replace: bool = False
    ) -> int:
        """Keep the photos (sealed) and their templates (sealed), one transaction; returns the templates stored."""
        if len(photos) != len(descriptors):
            raise ValueError("one descriptor per photo")
        now = time.time()
        with self.db.tx() as cur:
            if cur.execute("SELECT 1 FROM people WHERE person_id=?", (person_id,)).fetchone() is None:
                raise HrError(f"no person {person_id!r} in the HR master; import them first (`kaoclock backend people import`)")
            if replace:
                cur.execute("DELETE FROM templates WHERE person_id=?", (person_id,))
                cur.execute("DELETE FROM photos WHERE person_id=?", (person_id,))
            for data, desc in zip(photos, descriptors, strict=True):
                sha = hashlib.sha256(data).hexdigest()
                row = cur.execute("SELECT id FROM photos WHERE person_id=? AND sha256=?", (person_id, sha)).fetchone()
                if row is not None:  # the same photo again: its template is replaced, not doubled
                    photo_id = int(row[0])
                    cur.execute("DELETE FROM templates WHERE photo_id=? AND embedder_version=?", (photo_id, embedder_version))
                else:
                    nonce, sealed = self._seal(data, f"photo\0{person_id}\0{sha}")
                    cur.execute("INSERT INTO photos(person_id, sha256, nonce, sealed, added) VALUES(?,?,?,?,?)", (person_id, sha, nonce, sealed, now))
                    photo_id = int(cur.execute("SELECT id FROM photos WHERE person_id=? AND sha256=?", (person_id, sha)).fetchone()[0])
                _insert_template(self, cur, person_id, desc, embedder_version, f"photo:{sha[:12]}", photo_id, now)
            cur.execute("UPDATE people SET updated=? WHERE person_id=?", (now, person_id))
        return len(descriptors)

    def store_reader_templates(self, person_id: str, templates: Sequence[Template], source: str) -> int:
        """Templates enrolled live at a reader (no photo: they cannot be re-extracted); new ones only, returns how many."""
        now = time.time()
        have = {(t.embedder_version, np.asarray(t.descriptor, "<f4").tobytes()) for t in self.templates([person_id], None).get(person_id, [])}
        added = 0
        with self.db.tx() as cur:
            if cur.execute("SELECT 1 FROM people WHERE person_id=?", (person_id,)).fetchone() is None:
                raise HrError(f"{source} enrolled {person_id!r}, who is not in the HR master; import them first, then sync again")
            for t in templates:
                if (t.embedder_version, np.asarray(t.descriptor, "<f4").tobytes()) in have:
                    continue
                _insert_template(self, cur, person_id, t.descriptor, t.embedder_version, source, None, now)
                added += 1
            if added:
                cur.execute("UPDATE people SET updated=? WHERE person_id=?", (now, person_id))
        return added

    def templates(self, person_ids: Sequence[str] | None, embedder_version: str | None) -> dict[str, list[Template]]:
        """Decrypted templates by person (all people when ``person_ids`` is None; every version when ``embedder_version`` is None)."""
        sql = "SELECT person_id, embedder_version, nonce, sealed, source FROM templates"
        params: list[Any] = []
        where = []
        if embedder_version is not None:
            where.append("embedder_version = ?")
            params.append(embedder_version)
        if person_ids is not None:
            if not person_ids:
                return {}
            where.append(f"person_id IN ({','.join('?' * len(person_ids))})")
            params += list(person_ids)
        if where:
            sql += " WHERE " + " AND ".join(where)
        out: dict[str, list[Template]] = {}
        for pid, version, nonce, sealed, source in self.db.query(sql + " ORDER BY id", params):
            raw = self._open(nonce, sealed, f"template\0{pid}\0{version}", f"a template of {pid}")
            out.setdefault(pid, []).append(Template(np.frombuffer(raw, "<f4").copy(), version, source))
        return out

    def photos(self, person_id: str) -> list[tuple[int, bytes]]:
        rows = self.db.query("SELECT id, sha256, nonce, sealed FROM photos WHERE person_id=? ORDER BY id", (person_id,))
        return [(int(i), self._open(n, s, f"photo\0{person_id}\0{sha}", f"a photo of {person_id}")) for i, sha, n, s in rows]

    def missing_templates(self, embedder_version: str, sites: Sequence[str] | None = None) -> list[str]:
        """People (of ``sites``) with kept photos but no template of ``embedder_version``."""
        rows = self.db.query(
            "SELECT DISTINCT ph.person_id FROM photos ph WHERE NOT EXISTS "
            "(SELECT 1 FROM templates t WHERE t.person_id = ph.person_id AND t.embedder_version = ?) ORDER BY ph.person_id",
            (embedder_version,),
        )
        pids = [r[0] for r in rows]
        if sites is None:
            return pids
        at = {r[0] for r in self.db.query(f"SELECT person_id FROM person_sites WHERE site IN ({','.join('?' * len(sites))})", list(sites))}
        return [p for p in pids if p in at]

    def reextract(self, embedder_version: str, describe: Callable[[bytes], np.ndarray], person_ids: Sequence[str]) -> dict[str, Any]:
        """Templates of ``embedder_version`` from each kept photo of ``person_ids`` (``describe`` turns photo bytes into a descriptor).

        A photo that no longer passes (``describe`` raises) is reported, not fatal: that person keeps their other templates.
        """
        done, failed = 0, []
        for pid in person_ids:
            now = time.time()
            results = []
            for photo_id, data in self.photos(pid):
                try:
                    results.append((photo_id, describe(data)))
                except KaoclockError as exc:
                    failed.append({"person_id": pid, "photo": photo_id, "error": str(exc)})
            with self.db.tx() as cur:
                for photo_id, desc in results:
                    cur.execute("DELETE FROM templates WHERE photo_id=? AND embedder_version=?", (photo_id, embedder_version))
                    _insert_template(self, cur, pid, desc, embedder_version, f"reextract:{photo_id}", photo_id, now)
                    done += 1
        return {"embedder_version": embedder_version, "people": len(person_ids), "templates": done, "failed": failed}

    def site_people(self, site: str, embedder_version: str) -> list[Person]:
        """The people assigned to ``site`` who have templates of ``embedder_version``, as a reader of that site should hold them."""
        rows = self.db.query(
            "SELECT p.person_id, p.name FROM people p JOIN person_sites s ON s.person_id = p.person_id WHERE s.site = ? ORDER BY p.person_id",
            (site,),
        )
        if not rows:
            return []
        pids = [r[0] for r in rows]
        sites: dict[str, list[str]] = {}
        for chunk in range(0, len(pids), 500):
            part = pids[chunk : chunk + 500]
            for pid, s in self.db.query(f"SELECT person_id, site FROM person_sites WHERE person_id IN ({','.join('?' * len(part))})", part):
                sites.setdefault(pid, []).append(s)
        templates: dict[str, list[Template]] = {}
        for chunk in range(0, len(pids), 500):
            templates.update(self.templates(pids[chunk : chunk + 500], embedder_version))
        return [
            Person(pid, name, tuple(sorted(sites[pid])), tuple(Template(t.descriptor, t.embedder_version, "sync") for t in templates[pid]))
            for pid, name in rows
            if templates.get(pid)
        ]


def _insert_template(
    master: HrMaster, cur: Cursor, person_id: str, desc: np.ndarray, version: str, source: str, photo_id: int | None, now: float
) -> None:
    blob = np.asarray(desc, "<f4").reshape(DESCRIPTOR_DIM).tobytes()
    nonce, sealed = master._seal(blob, f"template\0{person_id}\0{version}")
    cur.execute(
        "INSERT INTO templates(person_id, embedder_version, photo_id, source, nonce, sealed, added) VALUES(?,?,?,?,?,?,?)",
        (person_id, version, photo_id, source, nonce, sealed, now),
    )


def _delete_person(cur: Cursor, person_id: str) -> bool:
    for table in ("templates", "photos", "person_sites"):
        cur.execute(f"DELETE FROM {table} WHERE person_id=?", (person_id,))
    return cur.execute("DELETE FROM people WHERE person_id=?", (person_id,)).rowcount == 1
