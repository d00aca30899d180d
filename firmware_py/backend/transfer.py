"""Sending a file to a reader in signed chunks (firmware bundle, gallery snapshot), resuming after a dropped link.

The backend's half of :mod:`firmware_py.update.transfer`:

    with CommandSession(brokers, site, device, backend_key) as s:  # firmware_py.backend.commands
        result = send_file(s, "firmware", bundle_bytes, meta={"version": "1.3.0"})

:func:`send_file` begins the transfer (a reader that already holds part of it
answers with what is missing), sends only the missing chunks, asks for the
status to catch any chunk whose result was lost, and commits. Run it again
after an interruption with the same ``transfer_id``: it resumes.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from typing import Any

from firmware_py.errors import KaoclockError

DEFAULT_CHUNK = 128 << 10


class TransferFailed(KaoclockError):
    """The reader refused a transfer step, or did not answer."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


def _done(result: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if result is None:
        raise TransferFailed(f"{what}: no answer from the reader")
    if result.get("status") != "done":
        raise TransferFailed(f"{what}: {result.get('status')} ({result.get('reason')}): {result.get('detail')}", result)
    return result["result"] or {}


def _expand(missing: list[list[int]]) -> list[int]:
    return [i for a, b in missing for i in range(a, b + 1)]


def send_file(
    session: Any,
    kind: str,
    data: bytes,
    *,
    transfer_id: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop_after: int | None = None,
    wait_s: float = 30.0,
) -> dict[str, Any]:
    """Send ``data`` as a ``kind`` transfer and commit it; returns the commit's result.

    ``session`` has ``call(cmd, args, wait_s)`` (a :class:`~firmware_py.backend.commands.CommandSession`).
    ``stop_after`` sends at most that many chunks and returns the status
    without committing (to test and demonstrate resuming).
    """
    digest = hashlib.sha256(data).hexdigest()
    tid = transfer_id or f"{kind.replace('.', '-')}-{digest[:16]}"
    args = {"transfer_id": tid, "kind": kind, "size": len(data), "sha256": digest, "chunk_size": chunk_size}
    if meta:
        args["meta"] = meta
    begun = _done(session.call("transfer.begin", args, wait_s), "transfer.begin")
    sent = 0
    todo = _expand(begun["missing"])
    for _round in range(5):  # a chunk whose result was lost (or beyond a truncated list) shows up in the status
        for index in todo:
            if stop_after is not None and sent >= stop_after:
                return _done(session.call("transfer.status", {"transfer_id": tid}, wait_s), "transfer.status")
            part = data[index * chunk_size : (index + 1) * chunk_size]
            chunk_args = {
                "transfer_id": tid,
                "index": index,
                "data": base64.b64encode(part).decode("ascii"),
                "sha256": hashlib.sha256(part).hexdigest(),
            }
            for _attempt in range(5):
                result = session.call("transfer.chunk", chunk_args, wait_s)
                if result is None or result.get("reason") != "busy":
                    break
                time.sleep(0.5)
            got = _done(result, f"transfer.chunk {index}")
            sent += 1
            if progress is not None:
                progress(got["received"], got["chunks"])
        status = _done(session.call("transfer.status", {"transfer_id": tid}, wait_s), "transfer.status")
        if status["missing_count"] == 0:
            break
        todo = _expand(status["missing"])
    else:
        raise TransferFailed(f"transfer {tid}: chunks still missing after 5 rounds", status)
    return _done(session.call("transfer.commit", {"transfer_id": tid}, max(wait_s, 120.0)), "transfer.commit")
