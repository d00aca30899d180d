"""Progress of long work on the terminal: a bar with a count and an ETA, on stderr.

Drawn only when stderr is a terminal and the command was not asked for
``--json`` (the CLI calls :func:`set_quiet`), so pipes, logs and scripts see
nothing.  Any layer may use it: it imports nothing of kaoclock.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence every progress display of this process (``--json``)."""
    global _quiet
    _quiet = quiet


def enabled(stream: TextIO | None = None) -> bool:
    """Whether progress would be drawn on ``stream`` (default stderr)."""
    s = stream or sys.stderr
    return not _quiet and bool(getattr(s, "isatty", lambda: False)())


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def render_line(label: str, done: int, total: int | None, elapsed: float, width: int = 24) -> str:
    """One progress line: ``label [#####.....] 12/100 12% 0:05 left`` (or a count when the total is unknown)."""
    if not total:
        return f"{label}: {done} done, {_clock(elapsed)}"
    frac = min(1.0, done / total)
    bar = "#" * int(frac * width) + "." * (width - int(frac * width))
    eta = _clock(elapsed / done * (total - done)) + " left" if 0 < done < total else _clock(elapsed)
    return f"{label} [{bar}] {done}/{total} {frac:4.0%} {eta}"


class Progress:
    """``with Progress("describing", total=n) as bar: ... bar.advance()``.

    Redraws at most every ``interval`` seconds; ``close`` (or leaving the
    ``with``) ends the line.  Does nothing when :func:`enabled` is false.
    """

    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.on = enabled(self.stream)
        self.interval = interval
        self.t0 = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if not self.on:
            return
        now = time.monotonic()
        if now - self._last >= self.interval or (self.total and done >= self.total):
            self._last = now
            self.stream.write("\r" + render_line(self.label, done, self.total, now - self.t0) + "\x1b[K")
            self.stream.flush()
            self._drawn = True

    def note(self, text: str) -> None:
        """A line of its own (a step name) above the bar."""
        if self.on:
            self.stream.write(("\r\x1b[K" if self._drawn else "") + text + "\n")
            self.stream.flush()
            self._last = 0.0

    def close(self) -> None:
        if self.on and self._drawn:
            self.stream.write("\r" + render_line(self.label, self.done, self.total, time.monotonic() - self.t0) + "\x1b[K\n")
            self.stream.flush()
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
