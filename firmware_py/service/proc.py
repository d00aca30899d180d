"""Process identities that survive PID reuse and reboots (pid + start time + boot id)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Count fields after the ")" that closes the command name (which may hold spaces).
    return int(stat.rsplit(")", 1)[1].split()[19])


def this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "start": start_ticks(pid), "boot_id": boot_id()}


def is_alive(ident: dict[str, Any] | None) -> bool:
    """Whether the process ``ident`` names still runs (same boot, same start time)."""
    if not ident or not ident.get("pid"):
        return False
    if ident.get("boot_id") != boot_id():
        return False
    return start_ticks(int(ident["pid"])) == ident.get("start")
