"""Files larger than one command, sent as signed chunks: firmware bundles and gallery snapshots.

One facility for every kind of file. Each message is an ordinary signed
command (signature, audience, expiry and nonce checked by the processor), so
a forged, stale or replayed chunk never reaches these handlers:

``transfer.begin``   transfer_id, kind, size, sha256, chunk_size, meta?  announce a file (same figures again: resume)
``transfer.chunk``   transfer_id, index, data (base64), sha256            one chunk, checked against its own sha256
``transfer.status``  transfer_id?                                        what is held and what is missing (to resume)
``transfer.commit``  transfer_id                                         whole-file sha256, then the kind's receiver
``transfer.abort``   transfer_id                                         forget the transfer and its data

A *receiver* per kind decides what a complete, hash-checked file becomes:
``firmware`` (:class:`firmware_py.update.remote.FirmwareReceiver`) checks the
bundle's Ed25519 signature and hands it to the privileged updater;
``gallery.snapshot`` (:class:`firmware_py.provision.gallery_sync.SnapshotReceiver`)
replaces the gallery in one transaction. A receiver refuses with
:class:`~firmware_py.mqtt.commands.registry.CommandRefused`; whatever it
refuses is deleted and nothing already stored changes.

Events: ``transfer.started``, ``transfer.progress`` (at 25, 50 and 75 %),
``transfer.completed``, ``transfer.refused``, ``transfer.aborted``.
"""

from __future__ import annotations

import base64
import binascii
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Protocol

from firmware_py.events import EventBus
from firmware_py.mqtt.commands.registry import CommandContext, CommandRefused, CommandRegistry
from firmware_py.update.errors import BundleError
from firmware_py.update.staging import MIN_CHUNK, TRANSFER_ID, Staging

KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
# JSON and JWS framing around a chunk's base64: claims, header, signature, hashes.
COMMAND_OVERHEAD = 2048
# Free space kept on the data partition beyond a transfer (punches and the gallery need room too).
RESERVE_BYTES = 32 << 20
MAX_LISTED_RANGES = 64


class Receiver(Protocol):
    """What a kind of transfer becomes once its file is complete and hash-checked."""

    kind: str
    max_bytes: int

    def check_begin(self, size: int, meta: dict[str, Any]) -> None:
        """Refuse a transfer early (CommandRefused), before any chunk is sent."""

    def accept(self, path: Path, transfer_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        """Consume the assembled file at ``path`` (move or delete it); the result of ``transfer.commit``."""


def max_chunk_size(command_max_bytes: int) -> int:
    """The largest chunk whose command fits in ``command_max_bytes``.

    A chunk's bytes are base64 in the claims (4/3), and the claims are
    base64url in the JWS (4/3 again): 16/9 of the chunk plus the framing.
    """
    raw = (command_max_bytes - COMMAND_OVERHEAD) * 9 // 16
    return max(MIN_CHUNK, raw // 1024 * 1024)


def ranges(indices: list[int]) -> list[list[int]]:
    """[0, 1, 2, 5, 7, 8] -> [[0, 2], [5, 5], [7, 8]] (inclusive)."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def _str_arg(args: dict[str, Any], key: str) -> str:
    v = args.get(key)
    if not isinstance(v, str) or not v:
        raise CommandRefused("bad_args", f"args.{key} must be a non-empty string")
    return v


def _int_arg(args: dict[str, Any], key: str) -> int:
    v = args.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise CommandRefused("bad_args", f"args.{key} must be an integer")
    return v


class TransferCommands:
    """The ``transfer.*`` commands over one :class:`Staging` directory, with a receiver per kind.

    At most one transfer per kind is kept: beginning another one of the same
    kind (another id) discards the older one, so an abandoned transfer never
    fills the disk.
    """

    def __init__(self, staging: Staging, receivers: list[Receiver], *, bus: EventBus | None = None, command_max_bytes: int = 256 * 1024) -> None:
        self.staging = staging
        self.receivers = {r.kind: r for r in receivers}
        self.bus = bus or EventBus()
        self.command_max_bytes = command_max_bytes
        self._reported: dict[str, int] = {}  # transfer id -> last progress quarter announced
        self._lock = threading.Lock()
        # A file assembled when the daemon died before its receiver took it: its transfer is gone, so is it.
        for stale in staging.dir.glob("*.assembled") if staging.dir.is_dir() else ():
            stale.unlink(missing_ok=True)

    @property
    def max_chunk(self) -> int:
        return max_chunk_size(self.command_max_bytes)

    def register(self, registry: CommandRegistry) -> None:
        registry.register(
            "transfer.begin",
            self.begin,
            doc="Announce a file sent in chunks (kind: " + ", ".join(sorted(self.receivers)) + "); the same figures again resume it.",
            args=["transfer_id", "kind", "size", "sha256", "chunk_size", "meta"],
        )
        registry.register(
            "transfer.chunk", self.chunk, doc="One chunk: index, base64 data, its sha256.", args=["transfer_id", "index", "data", "sha256"]
        )
        registry.register("transfer.status", self.status, doc="Chunks held and missing (no transfer_id: all).", args=["transfer_id"])
        registry.register("transfer.commit", self.commit, doc="Check the whole file's sha256 and hand it to its receiver.", args=["transfer_id"])
        registry.register("transfer.abort", self.abort, doc="Forget a transfer and its data.", args=["transfer_id"])

    # ------------------------------------------------------------ helpers

    def _summary(self, transfer_id: str) -> dict[str, Any]:
        info = self.staging.info(transfer_id)
        missing = Staging._missing(info)
        listed = ranges(missing)
        return {
            "transfer_id": transfer_id,
            "kind": info.get("kind"),
            "size": info["size"],
            "sha256": info["sha256"],
            "chunk_size": info["chunk_size"],
            "chunks": info["chunks"],
            "received": len(info["received"]),
            "missing_count": len(missing),
            "missing": listed[:MAX_LISTED_RANGES],
            "missing_truncated": len(listed) > MAX_LISTED_RANGES,
        }

    def _refuse(self, transfer_id: str | None, kind: str | None, reason: str, detail: str, extra: dict[str, Any] | None = None) -> CommandRefused:
        self.bus.emit_new("transfer.refused", "warning", transfer_id=transfer_id, kind=kind, reason=reason, detail=detail[:500])
        return CommandRefused(reason, detail, extra)

    def _existing(self, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        tid = _str_arg(args, "transfer_id")
        try:
            return tid, self.staging.info(tid)
        except BundleError as exc:
            raise CommandRefused("unknown_transfer", str(exc)) from None

    # ------------------------------------------------------------ commands

    def begin(self, ctx: CommandContext) -> dict[str, Any]:
        a = ctx.args
        tid, kind = _str_arg(a, "transfer_id"), _str_arg(a, "kind")
        size, chunk_size, sha = _int_arg(a, "size"), _int_arg(a, "chunk_size"), _str_arg(a, "sha256")
        meta = a.get("meta", {})
        if not isinstance(meta, dict):
            raise CommandRefused("bad_args", "args.meta must be an object")
        receiver = self.receivers.get(kind)
        if receiver is None:
            raise CommandRefused("bad_args", f"kind {kind!r} is not one this reader takes: {', '.join(sorted(self.receivers))}")
        if chunk_size > self.max_chunk:
            raise CommandRefused(
                "bad_args",
                f"chunk_size {chunk_size} does not fit in one command ([mqtt] command_max_bytes {self.command_max_bytes}); at most {self.max_chunk}",
                {"max_chunk_size": self.max_chunk},
            )
        if not isinstance(size, int) or size > receiver.max_bytes:
            raise self._refuse(tid, kind, "too_large", f"a {kind} transfer is at most {receiver.max_bytes} bytes, this one is {size}")
        with self._lock:
            receiver.check_begin(size, meta)
            resuming = self.staging.exists(tid) if _valid_id(tid) else False
            if not resuming:
                self._check_space(tid, kind, size)
            try:
                resumed = self.staging.begin(tid, size, sha, chunk_size, kind=kind, meta=meta)
            except BundleError as exc:
                raise CommandRefused("bad_args", str(exc)) from None
            for other in self.staging.transfers():  # one transfer per kind
                if other != tid and self.staging.info(other).get("kind") == kind:
                    self.staging.abort(other)
                    self.bus.emit_new("transfer.aborted", "info", transfer_id=other, kind=kind, why=f"replaced by transfer {tid}")
            out = self._summary(tid)
        if not resumed:
            self._reported[tid] = 0
        self.bus.emit_new("transfer.started", "info", transfer_id=tid, kind=kind, size=size, chunks=out["chunks"], resumed=resumed)
        return out | {"resumed": resumed, "max_chunk_size": self.max_chunk}

    def _check_space(self, tid: str, kind: str, size: int) -> None:
        self.staging.dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.staging.dir).free
        # Twice the size: the receiver may unpack or copy what it gets.
        if free < 2 * size + RESERVE_BYTES:
            raise self._refuse(tid, kind, "no_space", f"{free} bytes free on the data partition; this transfer needs {2 * size + RESERVE_BYTES}")

    def chunk(self, ctx: CommandContext) -> dict[str, Any]:
        a = ctx.args
        tid, info = self._existing(a)
        index, sha, text = _int_arg(a, "index"), _str_arg(a, "sha256"), a.get("data")
        if not isinstance(text, str):
            raise CommandRefused("bad_args", "args.data must be the chunk's bytes in base64")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise CommandRefused("bad_args", "args.data is not base64") from None
        with self._lock:
            try:
                missing = self.staging.stage_chunk(tid, index, data, sha)
            except BundleError as exc:
                reason = "chunk_hash_mismatch" if "sha256" in str(exc) else "bad_chunk"
                raise self._refuse(tid, info.get("kind"), reason, str(exc)) from None
        received = info["chunks"] - len(missing)
        quarter = received * 4 // info["chunks"]
        if 0 < quarter < 4 and quarter > self._reported.get(tid, 0):
            self._reported[tid] = quarter
            self.bus.emit_new(
                "transfer.progress", "info", transfer_id=tid, kind=info.get("kind"), received=received, chunks=info["chunks"], percent=25 * quarter
            )
        return {"transfer_id": tid, "index": index, "received": received, "chunks": info["chunks"], "missing_count": len(missing)}

    def status(self, ctx: CommandContext) -> dict[str, Any]:
        if ctx.args.get("transfer_id") is None:
            return {"transfers": [self._summary(t) for t in self.staging.transfers()], "max_chunk_size": self.max_chunk}
        tid, _info = self._existing(ctx.args)
        return self._summary(tid) | {"max_chunk_size": self.max_chunk}

    def commit(self, ctx: CommandContext) -> dict[str, Any]:
        tid, info = self._existing(ctx.args)
        kind = info.get("kind", "firmware")
        receiver = self.receivers.get(kind)
        if receiver is None:
            self.staging.abort(tid)
            raise self._refuse(tid, kind, "bad_args", f"kind {kind!r} is no longer taken by this reader; transfer discarded")
        with self._lock:
            missing = Staging._missing(info)
            if missing:
                raise CommandRefused(
                    "incomplete", f"transfer {tid} still lacks {len(missing)} chunk(s); send them (see transfer.status)", self._summary(tid)
                )
            try:
                path = self.staging.assemble(tid)
            except BundleError as exc:
                raise self._refuse(tid, kind, "hash_mismatch", str(exc)) from None
            try:
                out = receiver.accept(path, tid, dict(info.get("meta") or {}))
            except CommandRefused as exc:
                self.bus.emit_new("transfer.refused", "warning", transfer_id=tid, kind=kind, reason=exc.reason, detail=str(exc)[:500])
                raise
            finally:
                path.unlink(missing_ok=True)  # a receiver that kept the file moved it away
        self._reported.pop(tid, None)
        self.bus.emit_new("transfer.completed", "info", transfer_id=tid, kind=kind, size=info["size"], sha256=info["sha256"])
        return {"transfer_id": tid, "kind": kind, "size": info["size"], "sha256": info["sha256"], **out}

    def abort(self, ctx: CommandContext) -> dict[str, Any]:
        tid = _str_arg(ctx.args, "transfer_id")
        if not _valid_id(tid):
            raise CommandRefused("bad_args", "args.transfer_id is not 1-64 letters, digits, '-' or '_'")
        with self._lock:
            kind = self.staging.info(tid).get("kind") if self.staging.exists(tid) else None
            found = self.staging.abort(tid)
        self._reported.pop(tid, None)
        if found:
            self.bus.emit_new("transfer.aborted", "info", transfer_id=tid, kind=kind, why="aborted by command")
        return {"transfer_id": tid, "aborted": found}


def _valid_id(tid: str) -> bool:
    return bool(TRANSFER_ID.fullmatch(tid))
