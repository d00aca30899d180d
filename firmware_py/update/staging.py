"""Receiving a file in chunks: the one transfer facility for signed MQTT transfers.

:class:`Staging` keeps each transfer under ``<data dir>/update/incoming`` as a
sparse ``<id>.part`` file and a ``<id>.json`` record of the chunks received,
so a transfer survives a dropped link or a restart of the daemon and is
resumed where it stopped. :meth:`Staging.begin` announces the total size and
sha256 (begun again with the same figures it resumes, with others it starts
over), :meth:`Staging.stage_chunk` writes one chunk after checking its own
sha256 (in any order, resends harmless), :meth:`Staging.assemble` checks the
whole file's sha256.

Firmware bundles go on to :meth:`Staging.hand_over`, which writes ``READY``.
On a reader, ``kaoclock-update.path`` watches for that file and starts
``kaoclock-update.service``, which runs ``kaoclock update --staged``: the
network-facing daemon never writes code or restarts itself. The updater then
verifies the bundle's own Ed25519 signature like any other; the chunk hashes
only guard the transfer. (The MQTT transfer commands live in
:mod:`firmware_py.update.transfer`.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from firmware_py.fsutil import atomic_write_bytes, atomic_write_json, fsync_dir
from firmware_py.update.errors import BundleError

TRANSFER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
READY = "READY"
MIN_CHUNK, MAX_CHUNK = 1 << 10, 4 << 20


class Staging:
    """Chunked transfers under one directory (on a reader ``<data dir>/update/incoming``)."""

    def __init__(self, directory: Path, max_bytes: int = 512 << 20) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes

    def _paths(self, transfer_id: str) -> tuple[Path, Path]:
        if not isinstance(transfer_id, str) or not TRANSFER_ID.fullmatch(transfer_id):
            raise BundleError(f"transfer id {transfer_id!r} is not 1-64 letters, digits, '-' or '_'")
        return self.dir / f"{transfer_id}.part", self.dir / f"{transfer_id}.json"

    def _info(self, transfer_id: str) -> dict[str, Any]:
        _part, meta = self._paths(transfer_id)
        try:
            return json.loads(meta.read_text())
        except FileNotFoundError:
            raise BundleError(f"no transfer {transfer_id!r} was begun (send the begin message first)") from None

    def exists(self, transfer_id: str) -> bool:
        return self._paths(transfer_id)[1].exists()

    def info(self, transfer_id: str) -> dict[str, Any]:
        """The transfer's record: size, sha256, chunk_size, chunks, received (indices), kind, meta, started."""
        return self._info(transfer_id)

    def transfers(self) -> list[str]:
        """Ids of the transfers begun and not yet assembled or aborted."""
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if TRANSFER_ID.fullmatch(p.stem))

    def begin(self, transfer_id: str, size: int, sha256: str, chunk_size: int, *, kind: str = "firmware", meta: dict[str, Any] | None = None) -> bool:
        """Start a transfer of ``size`` bytes; returns True when it resumes one begun with the same figures.

        A transfer begun again with the same size, sha256, chunk size and
        kind keeps the chunks already received (a backend that lost the link
        just begins again and sends what ``missing`` lists); otherwise it
        starts from scratch.
        """
        part, record = self._paths(transfer_id)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= self.max_bytes:
            raise BundleError(f"size {size!r} is not between 1 and {self.max_bytes} bytes")
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise BundleError("sha256 is not 64 lowercase hex digits")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
            raise BundleError(f"chunk size {chunk_size!r} is not between {MIN_CHUNK} and {MAX_CHUNK} bytes")
        with contextlib.suppress(BundleError, ValueError, OSError):
            old = self._info(transfer_id)
            same = (old["size"], old["sha256"], old["chunk_size"], old.get("kind", "firmware")) == (size, sha256, chunk_size, kind)
            if same and part.exists() and part.stat().st_size == size:
                return True
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(part, "wb") as fh:
            fh.truncate(size)
        chunks = (size + chunk_size - 1) // chunk_size
        atomic_write_json(
            record,
            {
                "size": size,
                "sha256": sha256,
                "chunk_size": chunk_size,
                "chunks": chunks,
                "received": [],
                "kind": kind,
                "meta": meta or {},
                "started": time.time(),
            },
        )
        return False

    def stage_chunk(self, transfer_id: str, index: int, data: bytes, sha256: str) -> list[int]:
        """Write chunk ``index`` after checking its hash; returns the chunks still missing."""
        info = self._info(transfer_id)
        part, record = self._paths(transfer_id)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < info["chunks"]:
            raise BundleError(f"chunk index {index!r} is outside 0..{info['chunks'] - 1}")
        expected = min(info["chunk_size"], info["size"] - index * info["chunk_size"])
        if len(data) != expected:
            raise BundleError(f"chunk {index} is {len(data)} bytes, expected {expected}")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BundleError(f"chunk {index} does not match its sha256 (corrupted in transfer); send it again")
        fd = os.open(part, os.O_WRONLY)
        try:
            os.pwrite(fd, data, index * info["chunk_size"])
            os.fsync(fd)
        finally:
            os.close(fd)
        # The record is written after the data is synced: a chunk listed as received is on disk.
        if index not in info["received"]:
            info["received"] = sorted([*info["received"], index])
            atomic_write_json(record, info)
        return self._missing(info)

    @staticmethod
    def _missing(info: dict[str, Any]) -> list[int]:
        got = set(info["received"])
        return [i for i in range(info["chunks"]) if i not in got]

    def missing(self, transfer_id: str) -> list[int]:
        return self._missing(self._info(transfer_id))

    def assemble(self, transfer_id: str, suffix: str = ".assembled") -> Path:
        """Check the complete file's sha256 and return it renamed ``<id><suffix>`` (the transfer record is gone).

        A file whose chunks all matched but whose whole hash does not is
        discarded: the announcement itself was wrong, the transfer must start again.
        """
        info = self._info(transfer_id)
        part, record = self._paths(transfer_id)
        missing = self._missing(info)
        if missing:
            raise BundleError(f"transfer {transfer_id} still lacks {len(missing)} chunk(s), first {missing[0]}")
        h = hashlib.sha256()
        with part.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        if h.hexdigest() != info["sha256"]:
            self.abort(transfer_id)
            raise BundleError(f"assembled file has sha256 {h.hexdigest()}, expected {info['sha256']}: transfer refused and discarded, start it again")
        done = self.dir / f"{transfer_id}{suffix}"
        os.replace(part, done)
        record.unlink()
        fsync_dir(self.dir)
        return done

    def hand_over(self, assembled: Path, transfer_id: str) -> Path:
        """Name an assembled bundle ``<id>.bundle`` and write ``READY`` for the privileged updater."""
        self._paths(transfer_id)
        if (self.dir / READY).exists():
            raise BundleError("another staged bundle is waiting for the updater; try again once it has been installed")
        bundle = self.dir / f"{transfer_id}.bundle"
        os.replace(assembled, bundle)
        fsync_dir(self.dir)
        atomic_write_bytes(self.dir / READY, f"{bundle.name}\n".encode())
        return bundle

    def complete(self, transfer_id: str) -> Path:
        """Check the assembled bundle's sha256 and mark it ready for the updater (assemble + hand over)."""
        return self.hand_over(self.assemble(transfer_id), transfer_id)

    def abort(self, transfer_id: str) -> bool:
        """Forget a transfer and its data; True if there was one."""
        found = False
        for p in self._paths(transfer_id):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                found = True
        return found

    def take_ready(self) -> Path | None:
        """The bundle named by READY (and remove READY), for ``kaoclock update --staged``."""
        ready = self.dir / READY
        try:
            name = ready.read_text().strip()
        except FileNotFoundError:
            return None
        ready.unlink()
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}\.bundle", name):
            raise BundleError(f"{ready} names {name!r}, which is not a staged bundle")
        bundle = self.dir / name
        if not bundle.is_file() or bundle.is_symlink():
            raise BundleError(f"staged bundle {bundle} is missing")
        return bundle
