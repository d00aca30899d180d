"""The status LEDs and buzzer: a small state machine driving gpiozero outputs.

:class:`GpioFeedback` implements the :class:`~firmware_py.decision.ports.Feedback`
port.  States come in two kinds (patterns in :mod:`firmware_py.gpio.patterns`):

* *conditions* (``offline``, ``fault``) persist until cleared; the most
  serious active one is the background (fault > offline > idle);
* *moments* (``looking``, ``choose_direction``, ``present_card``,
  ``accepted``, ``rejected_*``) show for a while, then the background returns.

``show("idle")`` ends the current moment; it does not clear conditions
(the pipeline says idle when a face leaves; that must not hide "offline").
A condition is raised by ``show("offline")`` / ``show("fault", detail)`` and
lowered by :meth:`GpioFeedback.clear`; each fault detail is tracked apart, so
clearing "tamper" leaves "punch not stored" showing.

Door alarms (held open, forced) are laid over every state with
:meth:`GpioFeedback.alarm`.

One thread plays the patterns from a monotonic clock, waking only when an
output has to change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from firmware_py.config import Config
from firmware_py.decision.ports import FeedbackState
from firmware_py.events import EventBus
from firmware_py.gpio.devices import stop_worker
from firmware_py.gpio.patterns import ALARM, PATTERNS, Pattern

log = logging.getLogger(__name__)

# Moments that wait for a person have no natural end; they fall back after this long.
WAIT_LIMIT_S = 60.0


class GpioFeedback:
    """Drives ``outputs`` (name -> gpiozero output device: ``green``, ``red``, ``amber``, ``buzzer``).

    Missing outputs are simply not driven: a reader with only a green and a
    red LED still shows every pattern's rhythm on what it has.
    """

    def __init__(
        self,
        outputs: dict[str, Any],
        *,
        result_s: float = 2.0,
        looking_timeout_s: float = 10.0,
        buzzer: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outputs = outputs
        self._clock = clock
        self._patterns = dict(PATTERNS) if buzzer else {k: p.without("buzzer") for k, p in PATTERNS.items()}
        self._hold = {"looking": looking_timeout_s, "choose_direction": WAIT_LIMIT_S, "present_card": WAIT_LIMIT_S}
        self._result_s = result_s
        self._cond = threading.Condition()
        self._conditions: dict[str, set[str]] = {"offline": set(), "fault": set()}
        self._moment: str | None = None
        self._moment_until = 0.0
        self._t0 = clock()
        self._background = "idle"
        self._alarms: set[str] = set()
        self._a0 = 0.0
        self._applied: dict[str, bool] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    @classmethod
    def from_config(cls, cfg: Config, bus: EventBus | None, outputs: dict[str, Any]) -> GpioFeedback:
        fb = cls(outputs, result_s=cfg.feedback.result_s, looking_timeout_s=cfg.feedback.looking_timeout_s, buzzer=cfg.feedback.buzzer)
        if bus is not None:
            # The reader's own faults show without anyone wiring them.
            bus.subscribe(fb._on_tamper_event, "tamper")
        return fb

    def _on_tamper_event(self, event: Any) -> None:
        if event.type == "tamper":
            self.show("fault", "tamper")
        elif event.type == "tamper.cleared":
            self.clear("fault", "tamper")

    # ------------------------------------------------------------ the port

    def show(self, state: FeedbackState, detail: str = "") -> None:
        """Show ``state`` (see the module doc for moments and conditions)."""
        if state not in PATTERNS:
            raise ValueError(f"unknown feedback state {state!r}")
        with self._cond:
            now = self._clock()
            if state in ("offline", "fault"):
                self._conditions[state].add(detail or state)
                self._set_background(now)
                if state == "fault" and self._moment is not None:  # a new fault is shown at once, over any moment
                    self._moment = None
                    self._t0 = now
            elif state == "idle":
                self._moment = None
                self._t0 = now
            else:
                self._moment = state
                self._moment_until = now + self._hold.get(state, self._result_s)
                self._t0 = now
            self._cond.notify_all()
        log.debug("feedback: %s %s", state, detail)

    def preview(self, name: str, seconds: float) -> None:
        """Show any pattern (conditions too) for ``seconds`` without changing any state: the LED test."""
        if name not in PATTERNS:
            raise ValueError(f"unknown pattern {name!r}")
        with self._cond:
            now = self._clock()
            self._moment, self._moment_until, self._t0 = name, now + seconds, now
            self._cond.notify_all()

    def clear(self, state: str, detail: str | None = None) -> None:
        """Lower a condition (``offline`` / ``fault``); ``detail=None`` lowers every cause of it."""
        with self._cond:
            causes = self._conditions.get(state)
            if causes is None:
                raise ValueError(f"{state!r} is not a condition (offline, fault)")
            if detail is None:
                causes.clear()
            else:
                causes.discard(detail)
            self._set_background(self._clock())
            self._cond.notify_all()

    def alarm(self, name: str, active: bool) -> None:
        """Start / stop an alarm overlay (red + buzzer pulsing); several names may be active."""
        with self._cond:
            if active and not self._alarms:
                self._a0 = self._clock()
            (self._alarms.add if active else self._alarms.discard)(name)
            self._cond.notify_all()

    @property
    def state(self) -> str:
        """The state being shown now."""
        with self._cond:
            return self._moment or self._background

    @property
    def conditions(self) -> dict[str, list[str]]:
        with self._cond:
            return {k: sorted(v) for k, v in self._conditions.items() if v}

    @property
    def alarms(self) -> list[str]:
        with self._cond:
            return sorted(self._alarms)

    # ------------------------------------------------------------ engine

    def _set_background(self, now: float) -> None:
        new = "fault" if self._conditions["fault"] else "offline" if self._conditions["offline"] else "idle"
        if new != self._background:
            self._background = new
            if self._moment is None:
                self._t0 = now

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        stop_worker(self._cond, self._thread, self._set_stopping)
        self._thread = None
        self._apply(frozenset())

    def _set_stopping(self) -> None:
        self._stopping = True

    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                now = self._clock()
                if self._moment is not None and now >= self._moment_until:
                    self._moment = None
                    self._t0 = now
                pattern: Pattern = self._patterns[self._moment or self._background]
                on, wait = pattern.at(now - self._t0)
                if self._moment is not None:
                    wait = min(wait, self._moment_until - now)
                if self._alarms:
                    a_on, a_wait = ALARM.at(now - self._a0)
                    on = on | a_on
                    wait = min(wait, a_wait)
                try:
                    self._apply(on)
                except Exception:  # a closed device must not kill the thread that shows faults
                    log.exception("feedback: cannot drive outputs")
                self._cond.wait(timeout=max(wait, 0.001))

    def _apply(self, on: frozenset[str]) -> None:
        for name, device in self._outputs.items():
            want = name in on
            if self._applied.get(name) != want:
                device.on() if want else device.off()
                self._applied[name] = want
