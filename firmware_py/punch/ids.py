"""Punch ids: UUIDv7 (RFC 9562), time-ordered and unique without coordination.

The first 48 bits are the Unix time in milliseconds, so ids sort by time; the
12 bits after the version hold a counter that keeps ids from one process
strictly increasing within a millisecond (RFC 9562 section 6.2, method 1);
the remaining 62 bits are random.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = -1
_counter = 0


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A new UUIDv7; strictly greater than the previous one from this process."""
    global _last_ms, _counter
    with _lock:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x1FF  # leave room to count up
        else:
            # Same millisecond, or the clock stepped back: stay on the last timestamp and count.
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | _counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def advance_to(ms: int) -> None:
    """Make every later id of this process greater than any id stamped ``ms`` or earlier (after a restart
    whose clock is behind the last punch: the ids stay ordered)."""
    global _last_ms, _counter
    with _lock:
        if ms + 1 > _last_ms:
            _last_ms, _counter = ms + 1, 0


def uuid7_ms(u: uuid.UUID | str) -> int:
    """The Unix millisecond timestamp inside a UUIDv7."""
    return (uuid.UUID(str(u)).int >> 80) & ((1 << 48) - 1)
