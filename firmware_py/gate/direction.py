"""In or out: the punch direction from the reader's role, the IN / OUT buttons, or automatic.

Each source implements :class:`~firmware_py.decision.ports.DirectionSource`
plus ``confirm()``, which the gate calls only after the punch is durable, so
a punch that failed to store never advances the automatic toggle.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from firmware_py.config import Config
from firmware_py.decision.outcome import Decision, Direction
from firmware_py.events import EventBus

log = logging.getLogger(__name__)

DIRECTION_DB = "direction.sqlite"


class FixedDirection:
    """An entrance-only (``in``) or exit-only (``out``) reader."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction

    def direction_for(self, decision: Decision, timeout_s: float) -> Direction | None:
        return self.direction

    def confirm(self, decision: Decision, direction: Direction) -> None:
        pass


class AutoDirection:
    """A person's first punch of the local day is ``in``, the next ``out``, then ``in`` again ...

    The last direction per person and attendance day lives in SQLite in the
    device's data directory, so a restart does not turn an ``out`` into a
    second ``in``.  The day is the site's local day (``device.timezone``),
    starting at ``direction.day_start_hour``.
    """

    def __init__(self, db_path: Path, timezone: str = "Asia/Tokyo", day_start_hour: int = 0) -> None:
        self.db_path = Path(db_path)
        self.tz = ZoneInfo(timezone)
        self.day_start_hour = day_start_hour
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS last_direction "
                "(person_id TEXT NOT NULL, day TEXT NOT NULL, direction TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY (person_id, day))"
            )

    def _db(self) -> sqlite3.Connection:
        # A connection per call: the gate worker and the console may ask from different threads.
        db = sqlite3.connect(self.db_path, timeout=5)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def day_of(self, ts: float) -> str:
        """The attendance day (ISO date) of a UTC epoch time at this site."""
        local = dt.datetime.fromtimestamp(ts, self.tz) - dt.timedelta(hours=self.day_start_hour)
        return local.date().isoformat()

    def direction_for(self, decision: Decision, timeout_s: float = 0.0) -> Direction | None:
        day = self.day_of(decision.ts)
        db = self._db()
        try:
            row = db.execute("SELECT direction FROM last_direction WHERE person_id = ? AND day = ?", (decision.person_id or "", day)).fetchone()
        finally:
            db.close()
        return "out" if row and row[0] == "in" else "in"

    def confirm(self, decision: Decision, direction: Direction) -> None:
        day = self.day_of(decision.ts)
        db = self._db()
        try:
            with db:
                db.execute("INSERT OR REPLACE INTO last_direction VALUES (?, ?, ?, ?)", (decision.person_id or "", day, direction, decision.ts))
                # Only today matters; a week of history helps a technician reading the file.
                cutoff = (dt.date.fromisoformat(day) - dt.timedelta(days=7)).isoformat()
                db.execute("DELETE FROM last_direction WHERE day < ?", (cutoff,))
        finally:
            db.close()


class ButtonDirection:
    """IN / OUT buttons: a press up to ``press_before_s`` before recognition, or up to ``timeout_s`` after.

    Without a press, ``no_press`` decides: ``auto`` (the automatic toggle),
    ``in``, ``out``, or ``reject`` (``None``: no punch, no door).  While it
    waits, the feedback shows ``choose_direction``.
    """

    def __init__(
        self,
        button_in: Any,
        button_out: Any,
        *,
        press_before_s: float = 5.0,
        no_press: str = "auto",
        auto: AutoDirection | None = None,
        feedback: Any = None,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if no_press == "auto" and auto is None:
            raise ValueError("no_press='auto' needs an AutoDirection")
        self._buttons = (button_in, button_out)
        self._before = press_before_s
        self._no_press = no_press
        self._auto = auto
        self._feedback = feedback
        self._bus = bus
        self._clock = clock
        self._cond = threading.Condition()
        self._last: tuple[Direction, float] | None = None

    def start(self) -> None:
        self._buttons[0].when_activated = lambda: self._pressed("in")
        self._buttons[1].when_activated = lambda: self._pressed("out")

    def stop(self) -> None:
        from firmware_py.gpio.devices import detach

        detach(*self._buttons)

    def _pressed(self, direction: Direction) -> None:
        with self._cond:
            self._last = (direction, self._clock())
            self._cond.notify_all()
        if self._bus is not None:
            self._bus.emit_new("direction.pressed", direction=direction)

    def _take(self, since: float) -> Direction | None:
        if self._last is not None and self._last[1] >= since:
            d = self._last[0]
            self._last = None
            return d
        return None

    def direction_for(self, decision: Decision, timeout_s: float) -> Direction | None:
        since = decision.ts - self._before
        with self._cond:
            chosen = self._take(since)
        if chosen is None:
            if self._feedback is not None:
                self._feedback.show("choose_direction")
            if self._bus is not None:
                self._bus.emit_new("gate.choose_direction", person_id=decision.person_id, timeout_s=timeout_s)
            deadline = time.monotonic() + timeout_s
            with self._cond:
                while (chosen := self._take(since)) is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
        if chosen is not None:
            return chosen
        if self._no_press == "auto":
            assert self._auto is not None
            return self._auto.direction_for(decision)
        if self._no_press in ("in", "out"):
            return self._no_press  # type: ignore[return-value]
        return None

    def confirm(self, decision: Decision, direction: Direction) -> None:
        # Keep the automatic toggle in step with what people pressed, so a missed press later guesses right.
        if self._auto is not None:
            self._auto.confirm(decision, direction)


def direction_from_config(cfg: Config, devices: Any = None, feedback: Any = None, bus: EventBus | None = None) -> Any:
    """The direction source ``direction.mode`` asks for."""
    d = cfg.direction
    if d.mode == "fixed-in":
        return FixedDirection("in")
    if d.mode == "fixed-out":
        return FixedDirection("out")
    auto = AutoDirection(cfg.device.data_dir / DIRECTION_DB, cfg.device.timezone, d.day_start_hour)
    if d.mode == "auto":
        return auto
    return ButtonDirection(
        devices.button_in, devices.button_out, press_before_s=d.press_before_s, no_press=d.no_press, auto=auto, feedback=feedback, bus=bus
    )
