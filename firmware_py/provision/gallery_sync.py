"""Gallery sync from the backend through signed MQTT commands.

The command processor has already checked the signature, audience, expiry and
nonce (a forged, stale or replayed command never reaches these handlers);
here the arguments are checked and applied to the encrypted store:

``gallery.add``       person_id, name, sites, templates: adds the templates to the person (created if new)
``gallery.update``    same arguments: replaces the person's name, sites and all their templates
``gallery.remove``    person_id: removes the person and purges their templates (idempotent)
``gallery.snapshot``  persons (list of the above), hash: the whole gallery, applied in one transaction
                      only when its content hash (:func:`firmware_py.gallery.store.content_hash`) matches
``gallery.state``     no arguments: this reader's embedder version and a short digest per person
                      (:func:`person_digest`), so the backend sends only the difference; people with
                      templates enrolled here (live or from photos) are listed under ``local``
``gallery.export``    person_id: that person's templates, so the backend can take a live enrolment
                      and distribute it to the person's other sites

A template is ``{"embedding": base64 of 128 little-endian float32, "embedder_version": str}``.
Templates made by another embedder than the one this reader runs are refused
(reason ``model_mismatch``): they would never match (Suprema's lesson) and
the backend must re-enrol or send templates of this reader's embedder.
Every result carries the gallery's new ``version``, ``size`` and ``hash``;
after a change the running pipeline is handed the new matrix, so the
telemetry's gallery section reports it too.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import re
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_py.gallery.store import DESCRIPTOR_DIM, GalleryError, GalleryMatrix, GalleryStore, Person, Template, default_paths
from firmware_py.mqtt.commands.registry import CommandContext, CommandRefused, CommandRegistry

if TYPE_CHECKING:
    from firmware_py.config import Config

PERSON_ARGS = ("person_id", "name", "sites", "templates")
SITE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
MAX_TEMPLATES_PER_PERSON = 32


def _bad(message: str) -> CommandRefused:
    return CommandRefused("bad_args", message)


def decode_template(obj: Any, where: str, embedder_version: str) -> Template:
    """One template from its JSON form; refuses a malformed one (bad_args) or another embedder's (model_mismatch)."""
    if not isinstance(obj, dict) or set(obj) - {"embedding", "embedder_version"}:
        raise _bad(f"{where} must be an object with 'embedding' and 'embedder_version'")
    version = obj.get("embedder_version")
    if not isinstance(version, str) or not version:
        raise _bad(f"{where}.embedder_version must be a non-empty string")
    if version != embedder_version:
        raise CommandRefused(
            "model_mismatch",
            f"{where} was made by embedder {version!r}; this reader runs {embedder_version!r}. "
            "Nothing was changed: send templates of this reader's embedder (re-enrol those people)",
            {"reader_embedder": embedder_version, "template_embedder": version},
        )
    text = obj.get("embedding")
    try:
        raw = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except (binascii.Error, ValueError):
        raise _bad(f"{where}.embedding is not base64") from None
    if len(raw) != DESCRIPTOR_DIM * 4:
        raise _bad(f"{where}.embedding holds {len(raw)} bytes; a template is {DESCRIPTOR_DIM} float32 ({DESCRIPTOR_DIM * 4} bytes)")
    desc = np.frombuffer(raw, "<f4").astype(np.float32)
    if not np.all(np.isfinite(desc)):
        raise _bad(f"{where}.embedding holds NaN or infinite values")
    return Template(desc, version, source="sync")


def encode_template(descriptor: np.ndarray, embedder_version: str) -> dict[str, str]:
    """The JSON form :func:`decode_template` reads (for the backend and the tests)."""
    blob = np.asarray(descriptor, "<f4").reshape(DESCRIPTOR_DIM).tobytes()
    return {"embedding": base64.b64encode(blob).decode("ascii"), "embedder_version": embedder_version}


def person_digest(person: Person) -> str:
    """A short digest of what the backend sends for a person (name, sites, templates); equal digests need no update."""
    h = hashlib.sha256()
    h.update(json.dumps([person.person_id, person.name, sorted(person.sites)]).encode())
    for version, blob in sorted((t.embedder_version, np.asarray(t.descriptor, "<f4").tobytes()) for t in person.templates):
        h.update(b"\0" + version.encode() + b"\0" + blob)
    return h.hexdigest()[:24]


def decode_person(args: Any, where: str, embedder_version: str) -> Person:
    if not isinstance(args, dict):
        raise _bad(f"{where} must be an object")
    missing = [k for k in PERSON_ARGS if k not in args]
    if missing:
        raise _bad(f"{where} misses {', '.join(missing)}")
    extra = sorted(set(args) - set(PERSON_ARGS))
    if extra:
        raise _bad(f"{where} has unknown key(s) {', '.join(extra)}")
    pid, name, sites, templates = (args[k] for k in PERSON_ARGS)
    if not isinstance(pid, str) or not isinstance(name, str) or len(name) > 200:
        raise _bad(f"{where}: person_id and name must be strings (name at most 200 characters)")
    if not isinstance(sites, list) or not sites or not all(isinstance(s, str) and SITE_RE.fullmatch(s) for s in sites):
        raise _bad(f"{where}.sites must be a non-empty list of site ids (lowercase letters, digits, '-')")
    if not isinstance(templates, list) or not 1 <= len(templates) <= MAX_TEMPLATES_PER_PERSON:
        raise _bad(f"{where}.templates must be a list of 1 to {MAX_TEMPLATES_PER_PERSON} templates")
    tpl = tuple(decode_template(t, f"{where}.templates[{i}]", embedder_version) for i, t in enumerate(templates))
    return Person(pid, name, tuple(dict.fromkeys(sites)), tpl)


class GallerySync:
    """The four gallery commands over one store, serialised, telling ``on_change`` the new matrix."""

    def __init__(
        self,
        open_store: Callable[[], GalleryStore],
        site: str,
        embedder_version: str,
        on_change: Callable[[GalleryMatrix], None] | None = None,
    ) -> None:
        self.open_store = open_store
        self.site = site
        self.embedder_version = embedder_version
        self.on_change = on_change
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Config, embedder_version: str, on_change: Callable[[GalleryMatrix], None] | None = None) -> GallerySync:
        db, key = default_paths(cfg)
        return cls(lambda: GalleryStore.open(db, key, create=True), cfg.device.site, embedder_version, on_change)

    def register(self, registry: CommandRegistry) -> None:
        registry.register("gallery.add", self.add, doc="Add a person's templates (creates the person).", args=PERSON_ARGS)
        registry.register("gallery.update", self.update, doc="Replace a person's name, sites and templates.", args=PERSON_ARGS)
        registry.register("gallery.remove", self.remove, doc="Remove a person and purge their templates.", args=["person_id"])
        registry.register(
            "gallery.snapshot", self.snapshot, doc="Replace the whole gallery, only if its content hash matches.", args=["persons", "hash"]
        )
        registry.register("gallery.state", self.state, doc="Embedder version and a digest per person (for a differential sync).", args=[])
        registry.register("gallery.export", self.export, doc="One person's templates (to distribute a live enrolment).", args=["person_id"])

    def state(self, ctx: CommandContext) -> dict[str, Any]:
        with self._lock, self.open_store() as store:
            snap = store.export_snapshot()
        return {
            "embedder_version": self.embedder_version,
            "version": snap.version,
            "hash": snap.content_hash,
            "persons": {p.person_id: person_digest(p) for p in snap.persons},
            "local": sorted(p.person_id for p in snap.persons if any(t.source != "sync" for t in p.templates)),
        }

    def export(self, ctx: CommandContext) -> dict[str, Any]:
        pid = ctx.args.get("person_id")
        if not isinstance(pid, str) or not pid:
            raise _bad("args.person_id must be a non-empty string")
        with self._lock, self.open_store() as store:
            person = store.get_person(pid)
        if person is None:
            raise CommandRefused("not_found", f"no person {pid!r} in this reader's gallery")
        return {
            "person_id": person.person_id,
            "name": person.name,
            "sites": list(person.sites),
            "templates": [encode_template(t.descriptor, t.embedder_version) | {"source": t.source} for t in person.templates],
        }

    def _apply(self, change: Callable[[GalleryStore], Any]) -> dict[str, Any]:
        with self._lock, self.open_store() as store:
            try:
                extra = change(store)
            except GalleryError as exc:
                raise CommandRefused("gallery_refused", f"{exc}") from None
            matrix = store.load_matrix(self.site, self.embedder_version)
            out = {"version": store.version, "size": len(store.list_persons()), "hash": store.content_hash, "site_size": matrix.persons}
        if self.on_change is not None:
            self.on_change(matrix)
        return out | (extra or {})

    def add(self, ctx: CommandContext, replace: bool = False) -> dict[str, Any]:
        person = decode_person(ctx.args, "args", self.embedder_version)

        def upsert(store: GalleryStore) -> dict[str, Any]:
            store.upsert_person(person, replace_templates=replace)
            return {"person_id": person.person_id, "templates_added": len(person.templates)}

        return self._apply(upsert)

    def update(self, ctx: CommandContext) -> dict[str, Any]:
        return self.add(ctx, replace=True)

    def remove(self, ctx: CommandContext) -> dict[str, Any]:
        pid = ctx.args.get("person_id")
        if not isinstance(pid, str) or not pid:
            raise _bad("args.person_id must be a non-empty string")
        return self._apply(lambda s: {"person_id": pid, "removed": s.remove_person(pid)})

    def snapshot(self, ctx: CommandContext) -> dict[str, Any]:
        return self.apply_snapshot(ctx.args.get("persons"), ctx.args.get("hash"))

    def apply_snapshot(self, persons: Any, expected: Any, where: str = "args") -> dict[str, Any]:
        """Replace the whole gallery with ``persons`` in one transaction, only if their content hash is ``expected``."""
        if not isinstance(persons, list):
            raise _bad(f"{where}.persons must be a list of persons")
        if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise _bad(f"{where}.hash must be the snapshot's sha256 content hash (64 hex digits)")
        decoded = [decode_person(p, f"{where}.persons[{i}]", self.embedder_version) for i, p in enumerate(persons)]

        def replace(store: GalleryStore) -> dict[str, Any]:
            try:
                store.replace_all(decoded, expected)
            except GalleryError as exc:
                reason = "hash_mismatch" if "hashes to" in str(exc) else "gallery_refused"
                raise CommandRefused(reason, str(exc)) from None
            return {"persons": len(decoded)}

        return self._apply(replace)


class SnapshotReceiver:
    """The ``gallery.snapshot`` receiver of the chunked transfer: a snapshot larger than one command.

    The file is the JSON of ``gallery.snapshot``'s arguments,
    ``{"persons": [...], "hash": "..."}``, optionally gzip-compressed. It is
    checked exactly like the command (every template, the embedder version,
    the content hash) and applied in one transaction: on any refusal the
    stored gallery is unchanged.
    """

    kind = "gallery.snapshot"

    def __init__(self, sync: GallerySync, max_bytes: int = 64 << 20) -> None:
        self.sync = sync
        self.max_bytes = max_bytes

    def check_begin(self, size: int, meta: dict[str, Any]) -> None:
        if meta:
            raise _bad("a gallery.snapshot transfer takes no meta")

    def accept(self, path: Path, transfer_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            try:
                with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                    raw = gz.read(self.max_bytes + 1)
            except (OSError, EOFError, zlib.error) as exc:
                raise _bad(f"the snapshot is not valid gzip: {exc}") from None
            if len(raw) > self.max_bytes:
                raise _bad(f"the snapshot unpacks to more than {self.max_bytes} bytes")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(f"the snapshot is not JSON: {exc}") from None
        if not isinstance(doc, dict) or set(doc) != {"persons", "hash"}:
            raise _bad('the snapshot must be a JSON object {"persons": [...], "hash": "..."}')
        return self.sync.apply_snapshot(doc["persons"], doc["hash"], where="snapshot")
