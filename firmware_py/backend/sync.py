"""Each site's readers get exactly the people assigned to that site, through the signed ``gallery.*`` commands.

For every registered reader of the chosen sites, in parallel:

1. ``gallery.state``: the reader's embedder version and a digest per person
   it holds.  No answer: the reader is offline; nothing is assumed, and the
   next sync (or ``sync --watch`` when its status turns online) catches up.
2. People the reader enrolled itself (``local``, a live enrolment) whose
   templates the backend does not have yet are fetched with
   ``gallery.export`` and kept in the HR master (source ``reader:<site>/<device>``),
   and every other site of theirs is synced too.
3. If the reader runs an embedder the HR master has no templates of for some
   of the site's people, they are re-extracted from the kept photos first
   (only with the backend's own embedder: upgrade the backend before the
   readers); people still without a template of that version are reported
   as ``missing`` and left on the reader untouched.
4. The difference: ``gallery.update`` for each person whose digest differs
   (new or changed), ``gallery.remove`` for each person no longer assigned.
   A reader that holds nobody yet (a new or reset reader) and is owed at
   least ``snapshot_min`` people gets them all as one gallery snapshot
   instead, through the chunked signed transfer (:func:`~firmware_py.backend.transfer.send_file`,
   kind ``gallery.snapshot``): a few chunks rather than one command per
   person, checked against its content hash and applied in one transaction.
   A reader without the transfer commands gets the per-person commands.

Every command and its result are written to ``command_log``; after a
complete sync, ``reader_state`` records whom the reader holds (with the
digest), for the fleet view and audits.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware_py.backend.commands import BrokerUnreachable, CommandSession
from firmware_py.backend.db import Database
from firmware_py.backend.hr import HrError, HrMaster
from firmware_py.backend.transfer import TransferFailed, send_file
from firmware_py.gallery.store import Person, Template, content_hash
from firmware_py.mqtt.link import TlsFiles
from firmware_py.provision.gallery_sync import encode_template, person_digest
from firmware_py.topics import PREFIX

log = logging.getLogger(__name__)


@dataclass
class DeviceResult:
    site: str
    device: str
    status: str = "synced"  # synced | offline | failed
    embedder_version: str | None = None
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    pulled: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    snapshot: bool = False  # the people went as one gallery snapshot (a reader that held nobody)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()} | {"seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Brokers:
    urls: list[str]
    tls: TlsFiles = field(default_factory=TlsFiles)
    username: str | None = None
    password: str | None = None
    prefix: str = PREFIX


Describe = Callable[[bytes], np.ndarray]
Call = Callable[..., dict[str, Any] | None]  # (cmd, args, wait_s=None): the command's result, None without one


class GallerySyncer:
    """Sends each reader its site's people; ``embedders`` maps an embedder version to a photo -> descriptor function."""

    def __init__(
        self,
        db: Database,
        master: HrMaster,
        key: Any,
        brokers: Brokers,
        *,
        embedders: dict[str, Describe] | None = None,
        wait_s: float = 10.0,
        parallel: int = 8,
        snapshot_min: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db, self.master, self.key, self.brokers = db, master, key, brokers
        self.embedders = embedders or {}
        self.wait_s = wait_s
        self.parallel = parallel
        self.snapshot_min = snapshot_min  # 0: never a snapshot, always one command per person
        self.clock = clock
        self._extract_lock = threading.Lock()  # two readers of one site must not re-extract the same people twice

    def devices(self, sites: Sequence[str] | None = None) -> list[tuple[str, str]]:
        rows = self.db.query("SELECT DISTINCT site, device FROM devices ORDER BY site, device")
        return [(s, d) for s, d in rows if sites is None or s in sites]

    def sync(self, sites: Sequence[str] | None = None, devices: Sequence[tuple[str, str]] | None = None) -> list[DeviceResult]:
        """Sync the readers of ``sites`` (all when None), or just ``devices``; then every other site of people pulled from a reader."""
        targets = list(devices) if devices is not None else self.devices(sites)
        results = self._run(targets)
        pulled = {pid for r in results for pid in r.pulled}
        if pulled:
            others: set[str] = set()
            for pid in pulled:
                found = self.master.person(pid)
                others |= set(found[1]) if found else set()
            more = [d for d in self.devices(sorted(others)) if d not in targets]
            results += self._run(more)
        return results

    def _run(self, targets: list[tuple[str, str]]) -> list[DeviceResult]:
        if not targets:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.parallel, len(targets)))) as pool:
            return list(pool.map(lambda sd: self.sync_device(*sd), targets))

    # ------------------------------------------------------------ one reader

    def sync_device(self, site: str, device: str) -> DeviceResult:
        t0 = self.clock()
        res = DeviceResult(site, device)
        session = CommandSession(
            self.brokers.urls,
            site,
            device,
            self.key,
            tls=self.brokers.tls,
            username=self.brokers.username,
            password=self.brokers.password,
            prefix=self.brokers.prefix,
            connect_s=self.wait_s,
        )
        log_rows: list[tuple[Any, ...]] = []

        def call(cmd: str, args: dict[str, Any], wait_s: float | None = None) -> dict[str, Any] | None:
            out = session.call(cmd, args, wait_s or self.wait_s)
            log_rows.append(
                (time.time(), site, device, (out or {}).get("id", ""), cmd, (out or {}).get("status", "no_result"), (out or {}).get("reason"),
                 str((out or {}).get("detail") or "")[:500])
            )  # fmt: skip
            return out

        try:
            with session:
                self._sync(res, call)
        except BrokerUnreachable as exc:
            res.status, res.problems = "failed", [str(exc)]
        finally:
            if log_rows:
                with self.db.tx() as cur:
                    cur.executemany(
                        "INSERT INTO command_log(ts, site, device, command_id, cmd, status, reason, detail) VALUES(?,?,?,?,?,?,?,?)", log_rows
                    )
        res.seconds = self.clock() - t0
        return res

    def _sync(self, res: DeviceResult, call: Call) -> None:
        state = call("gallery.state", {})
        if state is None:
            res.status = "offline"
            return
        if state.get("status") != "done":
            res.status = "failed"
            res.problems.append(f"gallery.state: {state.get('reason')}: {state.get('detail')}")
            return
        info = state["result"]
        version = str(info["embedder_version"])
        held: dict[str, str] = dict(info.get("persons") or {})
        res.embedder_version = version
        with self.db.tx() as cur:
            cur.execute("UPDATE devices SET embedder_version=?, seen=? WHERE site=? AND device=?", (version, time.time(), res.site, res.device))

        target = {p.person_id: p for p in self.master.site_people(res.site, version)}
        # 2. live enrolments at this reader the backend does not have yet
        for pid in info.get("local") or []:
            if pid in target and held.get(pid) == person_digest(target[pid]):
                continue
            if self._pull(res, pid, version, call):
                res.pulled.append(pid)
        # 3. a new embedder: templates from the kept photos
        changed = bool(res.pulled)
        missing = self.master.missing_templates(version, [res.site])
        if missing and version in self.embedders:
            changed = True
            with self._extract_lock:
                missing = self.master.missing_templates(version, [res.site])
                report = self.master.reextract(version, self.embedders[version], missing)
            res.problems += [f"re-extract {f['person_id']} photo {f['photo']}: {f['error']}" for f in report["failed"]]
            missing = self.master.missing_templates(version, [res.site])
        if missing:
            res.missing = missing
            res.problems.append(
                f"{len(missing)} person(s) have no template of embedder {version!r} and no backend embedder of that version to re-extract "
                "from their photos: upgrade the backend to that release, or re-enrol them"
            )
        if changed:
            target = {p.person_id: p for p in self.master.site_people(res.site, version)}
        keep = set(res.missing) | {pid for pid in info.get("local") or [] if self.master.person(pid) is None}
        # 4. the difference: everything at once to a reader that holds nobody, else person by person
        if not held and self.snapshot_min and len(target) >= self.snapshot_min:
            sent = self._snapshot(res, call, target)
            if sent is None:
                return
            if sent:
                res.updated, res.snapshot = len(target), True
                self._record(res, {pid: person_digest(p) for pid, p in target.items()})
                return
        for pid, person in target.items():
            if held.get(pid) == person_digest(person):
                res.unchanged += 1
                continue
            done = _send(res, call, "gallery.update", pid, person_args(person))
            if done is None:
                return
            res.updated += done
        for pid in sorted(set(held) - set(target) - keep):
            done = _send(res, call, "gallery.remove", pid, {"person_id": pid})
            if done is None:
                return
            res.removed += done
        if res.status == "synced":
            self._record(res, {pid: person_digest(p) for pid, p in target.items()})

    def _snapshot(self, res: DeviceResult, call: Call, target: dict[str, Person]) -> bool | None:
        """Send ``target`` as one gallery snapshot.

        True when applied; False when the reader has no transfer commands (send
        person by person instead); None when it failed (noted in ``res``).
        """
        people = [target[pid] for pid in sorted(target)]
        doc = {"persons": [person_args(p) for p in people], "hash": content_hash(people)}
        data = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 6, mtime=0)  # mtime 0: the same people, the same transfer id

        class _Session:  # what send_file needs: call(cmd, args, wait_s), through the logging call
            def call(self, cmd: str, args: dict[str, Any], wait_s: float = 30.0) -> dict[str, Any] | None:
                return call(cmd, args, wait_s)

        try:
            send_file(_Session(), "gallery.snapshot", data, wait_s=self.wait_s)
        except TransferFailed as exc:
            if exc.result is not None and exc.result.get("reason") == "unknown_command":
                return False  # an older reader: one command per person
            res.status = "offline" if exc.result is None else "failed"
            res.problems.append(f"gallery snapshot: {exc}")
            return None
        return True

    def _record(self, res: DeviceResult, digests: dict[str, str]) -> None:
        """What the reader holds now (``reader_state``): which readers have whom, for the fleet view and audits."""
        now = time.time()
        with self.db.tx() as cur:
            cur.execute("DELETE FROM reader_state WHERE site=? AND device=?", (res.site, res.device))
            cur.executemany(
                "INSERT INTO reader_state(site, device, person_id, digest, synced) VALUES(?,?,?,?,?)",
                [(res.site, res.device, pid, d, now) for pid, d in sorted(digests.items())],
            )

    def _pull(self, res: DeviceResult, pid: str, version: str, call: Call) -> bool:
        out = call("gallery.export", {"person_id": pid})
        if out is None or out.get("status") != "done":
            res.problems.append(f"gallery.export {pid}: {(out or {}).get('reason', 'no result')}")
            return False
        templates = []
        for t in out["result"].get("templates") or []:
            raw = base64.b64decode(t["embedding"])
            templates.append(Template(np.frombuffer(raw, "<f4").copy(), str(t["embedder_version"]), "live"))
        try:
            added = self.master.store_reader_templates(pid, templates, f"reader:{res.site}/{res.device}")
        except HrError as exc:
            res.problems.append(str(exc))
            return False
        return added > 0


def person_args(person: Person) -> dict[str, Any]:
    """The ``gallery.update`` arguments for a person (sites sorted, as :func:`person_digest` reads them)."""
    return {
        "person_id": person.person_id,
        "name": person.name,
        "sites": sorted(person.sites),
        "templates": [encode_template(t.descriptor, t.embedder_version) for t in person.templates],
    }


def _send(res: DeviceResult, call: Call, cmd: str, pid: str, args: dict[str, Any]) -> bool | None:
    """One gallery command for ``pid``: True when done, False when refused (noted in ``res``), None when the reader went offline."""
    out = call(cmd, args)
    if out is None:
        res.status = "offline"
        return None
    if out.get("status") == "done":
        return True
    res.status = "failed"
    res.problems.append(f"{cmd} {pid}: {out.get('reason')}: {out.get('detail')}")
    return False
