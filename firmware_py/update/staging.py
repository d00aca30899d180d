"""Receiving a bundle in chunks (for the signed MQTT update command).

The command layer (the punch room's MQTT commands) checks each command's
signature, then feeds this class: :meth:`Staging.begin` with the bundle's total
size and sha256, :meth:`Staging.stage_chunk` for every chunk with the chunk's
own sha256 (in any order, resends harmless), and :meth:`Staging.complete`, which
checks the whole file's sha256 and hands the bundle to the privileged updater
by writing ``READY``. On a reader, ``kaoclock-update.path`` watches for that file
and starts ``kaoclock-update.service``, which runs ``kaoclock update --staged``:
the network-facing daemon never writes code or restarts itself. The updater
then verifies the bundle's own Ed25519 signature like any other; the chunk
hashes only guard the transfer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path

from firmware_py.fsutil import atomic_write_bytes, atomic_write_json, fsync_dir
from firmware_py.update.errors import BundleError

TRANSFER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
READY = "READY"
MIN_CHUNK, MAX_CHUNK = 1 << 10, 4 << 20


class Staging:
    """Chunked transfers under ``<data dir>/update/incoming``."""

    def __init__(self, directory: Path, max_bytes: int = 512 << 20) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes

    def _paths(self, transfer_id: str) -> tuple[Path, Path]:
        if not isinstance(transfer_id, str) or not TRANSFER_ID.fullmatch(transfer_id):
            raise BundleError(f"transfer id {transfer_id!r} is not 1-64 letters, digits, '-' or '_'")
        return self.dir / f"{transfer_id}.part", self.dir / f"{transfer_id}.json"

    def _info(self, transfer_id: str) -> dict:
        _part, meta = self._paths(transfer_id)
        try:
            return json.loads(meta.read_text())
        except FileNotFoundError:
            raise BundleError(f"no transfer {transfer_id!r} was begun (send the begin message first)") from None

    def begin(self, transfer_id: str, size: int, sha256: str, chunk_size: int) -> None:
        """Start (or restart from scratch) a transfer of ``size`` bytes."""
        part, meta = self._paths(transfer_id)
        if not isinstance(size, int) or not 0 < size <= self.max_bytes:
            raise BundleError(f"bundle size {size!r} is not between 1 and {self.max_bytes} bytes")
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise BundleError("bundle sha256 is not 64 lowercase hex digits")
        if not isinstance(chunk_size, int) or not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
            raise BundleError(f"chunk size {chunk_size!r} is not between {MIN_CHUNK} and {MAX_CHUNK} bytes")
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(part, "wb") as fh:
            fh.truncate(size)
        chunks = (size + chunk_size - 1) // chunk_size
        atomic_write_json(meta, {"size": size, "sha256": sha256, "chunk_size": chunk_size, "chunks": chunks, "received": []})

    def stage_chunk(self, transfer_id: str, index: int, data: bytes, sha256: str) -> list[int]:
        """Write chunk ``index`` after checking its hash; returns the chunks still missing."""
        info = self._info(transfer_id)
        part, meta = self._paths(transfer_id)
        if not isinstance(index, int) or not 0 <= index < info["chunks"]:
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
        if index not in info["received"]:
            info["received"] = sorted([*info["received"], index])
            atomic_write_json(meta, info)
        return self.missing(transfer_id)

    def missing(self, transfer_id: str) -> list[int]:
        info = self._info(transfer_id)
        got = set(info["received"])
        return [i for i in range(info["chunks"]) if i not in got]

    def complete(self, transfer_id: str) -> Path:
        """Check the assembled file's sha256 and mark it ready for the updater."""
        info = self._info(transfer_id)
        part, meta = self._paths(transfer_id)
        missing = self.missing(transfer_id)
        if missing:
            raise BundleError(f"transfer {transfer_id} still lacks {len(missing)} chunk(s), first {missing[0]}")
        h = hashlib.sha256()
        with part.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        if h.hexdigest() != info["sha256"]:
            raise BundleError(f"assembled bundle has sha256 {h.hexdigest()}, expected {info['sha256']}: transfer refused, start it again")
        bundle = self.dir / f"{transfer_id}.bundle"
        os.replace(part, bundle)
        meta.unlink()
        fsync_dir(self.dir)
        atomic_write_bytes(self.dir / READY, f"{bundle.name}\n".encode())
        return bundle

    def abort(self, transfer_id: str) -> None:
        for p in self._paths(transfer_id):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

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
