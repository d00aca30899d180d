"""A small file the running daemon rewrites every few seconds: is it processing frames?

``kaoclock health`` reads it when the daemon runs (the daemon holds the camera,
so the health check cannot open it) and opens the camera itself otherwise.
It lives in ``$RUNTIME_DIRECTORY`` (``/run/kaoclock`` from the unit's
``RuntimeDirectory=``, a tmpfs: no SD-card wear), else ``<data_dir>/run``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from firmware_py.service.proc import is_alive, this_process

NAME = "heartbeat.json"
SYSTEM_RUNTIME_DIR = Path("/run/kaoclock")


def heartbeat_path(data_dir: Path) -> Path:
    env = os.environ.get("RUNTIME_DIRECTORY")
    if env:
        return Path(env.split(":")[0]) / NAME
    if (SYSTEM_RUNTIME_DIR / NAME).exists():
        return SYSTEM_RUNTIME_DIR / NAME
    return Path(data_dir) / "run" / NAME


class Heartbeat:
    """Writes the heartbeat file atomically (temp file + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.identity = this_process()

    def write(self, *, frames: int, last_frame_age: float, stalled: bool, status: str) -> None:
        doc = {**self.identity, "updated": time.time(), "frames": frames, "last_frame_age": round(last_frame_age, 3)}
        doc.update(stalled=stalled, status=status)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{NAME}.{os.getpid()}")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_live(path: Path) -> dict[str, Any] | None:
    """The heartbeat of a daemon that still runs, or None (no file, unreadable, or its process is gone)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and is_alive(doc) else None
