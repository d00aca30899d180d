"""The console's "recent log": a logging handler that keeps the last lines in memory."""

from __future__ import annotations

import logging
import threading
from collections import deque


class RingBufferHandler(logging.Handler):
    """Keeps the last ``capacity`` formatted records; old ones fall off the end.

    Install once on the root logger (:func:`install`); the console's ``log``
    command reads :meth:`lines`.
    """

    def __init__(self, capacity: int = 500, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._lines: deque[str] = deque(maxlen=capacity)
        self._lines_lock = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._lines_lock:
            for line in text.splitlines() or [""]:
                self._lines.append(line)

    def lines(self, n: int = 20) -> list[str]:
        with self._lines_lock:
            return list(self._lines)[-n:] if n > 0 else []


def install(capacity: int = 500, level: int = logging.INFO) -> RingBufferHandler:
    """The ring buffer on the root logger (one per process; a second call returns the first)."""
    root = logging.getLogger()
    for h in root.handlers:
        if isinstance(h, RingBufferHandler):
            return h
    handler = RingBufferHandler(capacity, level)
    root.addHandler(handler)  # what reaches it still depends on the root level the daemon sets
    return handler
