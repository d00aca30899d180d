"""The update's state file: what is in progress, so an interruption is resolved deterministically.

``<data dir>/update/state.json`` is small, rewritten atomically (temp file,
fsync, rename, fsync of the directory) at every step. The slot links are the
truth for what boots; this file says why: an update half done, how many times
a trial release has been started, what was decided and the recent history.

A corrupt or missing file is not fatal: the links still say what runs, and the
file is rebuilt from them (the damaged copy is kept aside for diagnosis).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firmware_py.fsutil import atomic_write_json
from firmware_py.service.proc import is_alive, this_process

__all__ = ["Pending", "StateFile", "UpdateState", "is_alive", "this_process"]

HISTORY_LENGTH = 30


@dataclass
class Pending:
    """An update that has started and not yet been committed or rolled back.

    ``phase``: ``installing`` (files being written to ``slot``), ``installed``
    (complete, not yet switched to), ``trial`` (``current`` may point at
    ``slot``; it must pass the health check or be rolled back).
    """

    slot: str
    version: str
    from_slot: str | None
    from_version: str | None
    phase: str
    started: float
    updater: dict[str, Any]
    bundle_sha256: str = ""
    boots: int = 0
    deadline: float | None = None
    verdict: str | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Pending:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in doc.items() if k in names})


@dataclass
class UpdateState:
    pending: Pending | None = None
    slots: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def note(self, event: str, **detail: Any) -> None:
        self.history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **detail})
        del self.history[:-HISTORY_LENGTH]

    def slot_status(self, slot: str) -> dict[str, Any]:
        return self.slots.setdefault(slot, {})

    def to_json(self) -> dict[str, Any]:
        return {"format": 1, "pending": asdict(self.pending) if self.pending else None, "slots": self.slots, "history": self.history}


class StateFile:
    """Load, save and lock ``state.json`` in the update state directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "state.json"
        self.lock_path = self.dir / "lock"

    def load(self) -> UpdateState:
        try:
            doc = json.loads(self.path.read_text("utf-8"))
            pending = Pending.from_json(doc["pending"]) if doc.get("pending") else None
            return UpdateState(pending, dict(doc.get("slots", {})), list(doc.get("history", [])))
        except FileNotFoundError:
            return UpdateState()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_name(f"state.json.corrupt-{int(time.time())}"))
            st = UpdateState()
            st.note("state-file-corrupt", detail="state.json was unreadable; rebuilt from the slot links")
            return st

    def save(self, state: UpdateState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, state.to_json())

    @contextlib.contextmanager
    def locked(self, blocking: bool = True, timeout: float = 60.0) -> Iterator[bool]:
        """Hold the update lock (flock: released by the kernel even on SIGKILL).

        Yields False when ``blocking`` is False and another process holds it,
        or when ``timeout`` passes.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            end = time.monotonic() + (timeout if blocking else 0)
            got = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= end:
                        break
                    time.sleep(0.1)
            yield got
        finally:
            os.close(fd)
