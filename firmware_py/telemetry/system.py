"""Readings from the operating system: CPU temperature and load, memory, disk, uptime."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

_PROCESS_START = time.time()


def cpu_temp_c(thermal: Path = Path("/sys/class/thermal")) -> float | None:
    """The CPU's temperature in degrees C (the 'cpu'/'soc' zone, else the first one); None when there is no sensor."""
    zones = sorted(thermal.glob("thermal_zone*"))
    best: float | None = None
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip().lower()
            value = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        if any(k in kind for k in ("cpu", "soc", "x86_pkg")):
            return round(value, 1)
        if best is None:
            best = round(value, 1)
    return best


def meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, float | None]:
    """Total and available memory in MB, and this process's resident size."""
    vals: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                vals[key] = int(rest.split()[0])  # kB
    except (OSError, ValueError):
        pass
    rss = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return {
        "total_mb": round(vals["MemTotal"] / 1024, 1) if "MemTotal" in vals else None,
        "available_mb": round(vals["MemAvailable"] / 1024, 1) if "MemAvailable" in vals else None,
        "process_rss_mb": round(rss, 1) if rss is not None else None,
    }


def disk(path: Path) -> dict[str, Any]:
    """Size and free space of the file system holding ``path`` (the data dir)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        du = shutil.disk_usage(probe)
    except OSError:
        return {"path": str(path), "total_mb": None, "free_mb": None}
    return {"path": str(path), "total_mb": round(du.total / 2**20, 1), "free_mb": round(du.free / 2**20, 1)}


def load() -> dict[str, Any]:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return {"load": None, "count": os.cpu_count()}
    return {"load": [round(one, 2), round(five, 2), round(fifteen, 2)], "count": os.cpu_count()}


def uptime() -> dict[str, float | None]:
    system = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        system = round(float(Path("/proc/uptime").read_text().split()[0]), 1)
    return {"system_s": system, "process_s": round(time.time() - _PROCESS_START, 1)}
