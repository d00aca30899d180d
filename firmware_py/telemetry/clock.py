"""Is the system clock synchronised?  Asked of the kernel (adjtimex), as timedatectl does.

``adjtimex`` with ``modes = 0`` only reads; it needs no privilege.  Like
systemd's ``timedatectl`` (NTPSynchronized) the clock counts as synchronised
when the kernel's maximum error estimate is below 16 s and its state is not
TIME_ERROR.  Where the call is unavailable the answer is ``None`` (unknown),
never a guess.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from typing import Any

TIME_ERROR = 5
MAX_ERROR_US_SYNCED = 16_000_000


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (Linux; glibc and musl share the layout).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def read_adjtimex() -> dict[str, Any] | None:
    """The kernel's clock state, or None where adjtimex cannot be called."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.adjtimex
    except (OSError, AttributeError):
        return None
    tx = _Timex()
    state = fn(ctypes.byref(tx))
    if state < 0:
        return None
    return {"state": int(state), "maxerror_us": int(tx.maxerror), "esterror_us": int(tx.esterror), "status": int(tx.status)}


class ClockSync:
    """Cached answer to "is the clock synchronised?" (re-read at most every ``ttl_s``)."""

    def __init__(self, ttl_s: float = 10.0) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._at = -1e9
        self._snap: dict[str, Any] = {}

    def snapshot(self) -> dict[str, Any]:
        """``{"synced": bool | None, "source": ..., "max_error_ms": ..., "detail": ...}``."""
        with self._lock:
            now = time.monotonic()
            if now - self._at > self.ttl_s:
                self._snap = self._read()
                self._at = now
            return dict(self._snap)

    def synced(self) -> bool | None:
        return self.snapshot()["synced"]

    @staticmethod
    def _read() -> dict[str, Any]:
        tx = read_adjtimex()
        if tx is None:
            return {"synced": None, "source": "unknown", "max_error_ms": None, "detail": "adjtimex is not available on this system"}
        synced = tx["state"] != TIME_ERROR and tx["maxerror_us"] < MAX_ERROR_US_SYNCED
        detail = "kernel reports the clock synchronised" if synced else "kernel reports the clock unsynchronised (no NTP/PTP discipline)"
        return {"synced": synced, "source": "adjtimex", "max_error_ms": round(tx["maxerror_us"] / 1000, 3), "detail": detail}
