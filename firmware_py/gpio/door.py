"""The door: lock relay pulse, door contact, request-to-exit and tamper.

:class:`GpioDoor` implements the :class:`~firmware_py.decision.ports.Door`
port.  ``grant()`` energises the relay for ``door.pulse_s`` (a second grant
during the pulse extends it).  The door contact tells an opening after a
grant (normal) from one without (``door.forced_open``); a door left open
longer than ``door.held_open_s`` raises ``door.held_open`` and sounds the
buzzer until it closes.  The request-to-exit button grants without
recognition (``door.rex``); the tamper switch raises ``tamper`` /
``tamper.cleared``.

Fail-safe and fail-secure (hw/README.md has the wiring): the relay is
energised *only* during a grant.  Whatever goes wrong on the board (daemon
stopped, pins released, board unpowered) de-energises it, and the lock falls
back to its own unpowered state: a fail-secure strike on the NO contact stays
locked, a fail-safe maglock on the NC contact stays powered, i.e. locked.
Only loss of the *lock's* supply differs: the strike stays locked, the maglock
opens (as fire codes require for it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from firmware_py.config import Config
from firmware_py.events import EventBus
from firmware_py.gpio.devices import GateDevices, detach, stop_worker

if TYPE_CHECKING:
    from gpiozero import DigitalInputDevice, OutputDevice

    from firmware_py.gpio.feedback import GpioFeedback

log = logging.getLogger(__name__)


class GpioDoor:
    """Door hardware over gpiozero devices; any of them may be ``None`` (not fitted)."""

    def __init__(
        self,
        bus: EventBus,
        *,
        relay: OutputDevice | None = None,
        contact: DigitalInputDevice | None = None,
        rex: DigitalInputDevice | None = None,
        tamper: DigitalInputDevice | None = None,
        feedback: GpioFeedback | None = None,
        pulse_s: float = 3.0,
        contact_wiring: str = "nc",
        open_grace_s: float = 2.0,
        held_open_s: float = 30.0,
        forced_alarm_s: float = 10.0,
        rex_enabled: bool = True,
        tamper_wiring: str = "nc",
        lock: str = "fail-secure",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._relay = relay
        self._contact = contact
        self._rex = rex
        self._tamper = tamper
        self._feedback = feedback
        self.pulse_s = pulse_s
        self._contact_nc = contact_wiring == "nc"
        self._tamper_nc = tamper_wiring == "nc"
        self._grace = open_grace_s
        self._held_open_s = held_open_s
        self._forced_alarm_s = forced_alarm_s
        self._rex_enabled = rex_enabled
        self.lock = lock
        self._clock = clock
        self._cond = threading.Condition()
        self._relay_off_at: float | None = None
        self._grant_until = float("-inf")
        self._open: bool | None = None
        self._opened_at = 0.0
        self._held_at: float | None = None
        self._held_alarm = False
        self._forced_off_at: float | None = None
        self._tampered: bool | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.grants = 0

    @classmethod
    def from_config(cls, cfg: Config, bus: EventBus, devices: GateDevices, feedback: GpioFeedback | None = None) -> GpioDoor:
        d = cfg.door
        return cls(
            bus,
            relay=devices.relay,
            contact=devices.door_contact,
            rex=devices.rex,
            tamper=devices.tamper,
            feedback=feedback,
            pulse_s=d.pulse_s,
            contact_wiring=d.contact,
            open_grace_s=d.open_grace_s,
            held_open_s=d.held_open_s,
            forced_alarm_s=d.forced_alarm_s,
            rex_enabled=d.rex,
            tamper_wiring=d.tamper,
            lock=d.lock,
        )

    # ------------------------------------------------------------ the port

    def grant(self, reason: str, seconds: float | None = None) -> None:
        """Release the lock for ``seconds`` (default ``door.pulse_s``); emits ``door.granted``."""
        pulse = self.pulse_s if seconds is None else seconds
        with self._cond:
            now = self._clock()
            self._relay_off_at = max(self._relay_off_at or now, now + pulse)
            self._grant_until = self._relay_off_at
            self.grants += 1
            if self._relay is not None:
                self._relay.on()
            self._cond.notify_all()
        self._bus.emit_new("door.granted", reason=reason, pulse_s=pulse, relay=self._relay is not None)

    # ------------------------------------------------------------ state

    @property
    def is_open(self) -> bool | None:
        """True / False from the door contact; None without one."""
        return self._open

    @property
    def released(self) -> bool:
        return self._relay_off_at is not None

    def status(self) -> dict[str, Any]:
        return {
            "lock": self.lock,
            "relay": "released" if self.released else "locked",
            "door": {True: "open", False: "closed", None: "no contact"}[self._open],
            "tamper": {True: "open", False: "closed", None: "no switch"}[self._tampered],
            "alarm": self._held_alarm or self._forced_off_at is not None,
        }

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        if self._contact is not None:
            on_closed, on_opened = (self._door_closed, self._door_opened) if self._contact_nc else (self._door_opened, self._door_closed)
            self._contact.when_activated = on_closed
            self._contact.when_deactivated = on_opened
            is_open = self._contact.is_active != self._contact_nc
            if is_open:  # open at start: nobody can say whether it was forced; watch how long it stays open
                with self._cond:
                    self._open = True
                    self._opened_at = self._clock()
                    self._held_at = self._opened_at + self._held_open_s
                self._bus.emit_new("door.opened", "warning", at_start=True)
            else:
                self._open = False
        if self._rex is not None:
            self._rex.when_activated = self._rex_pressed
        if self._tamper is not None:
            on_shut, on_open = (self._tamper_shut, self._tamper_opened) if self._tamper_nc else (self._tamper_opened, self._tamper_shut)
            self._tamper.when_activated = on_shut
            self._tamper.when_deactivated = on_open
            if self._tamper.is_active != self._tamper_nc:
                self._tamper_opened()
            else:
                self._tampered = False
        self._thread = threading.Thread(target=self._run, name="door", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Relock at once and detach from the inputs."""
        stop_worker(self._cond, self._thread, self._set_stopping)
        self._thread = None
        detach(self._contact, self._rex, self._tamper)
        if self._relay is not None and not self._relay.closed:
            self._relay.off()
        self._relay_off_at = None

    # ------------------------------------------------------------ inputs (gpiozero callback threads)

    def _door_opened(self) -> None:
        with self._cond:
            now = self._clock()
            if self._open:
                return
            self._open = True
            self._opened_at = now
            self._held_at = now + self._held_open_s
            forced = self._relay_off_at is None and now > self._grant_until + self._grace
            if forced and self._forced_alarm_s > 0:
                self._forced_off_at = now + self._forced_alarm_s
            self._cond.notify_all()
        if forced:
            self._bus.emit_new("door.forced_open", "alarm")
            if self._forced_alarm_s > 0 and self._feedback is not None:
                self._feedback.alarm("forced_open", True)
        else:
            self._bus.emit_new("door.opened")

    def _door_closed(self) -> None:
        with self._cond:
            if self._open is False:
                return
            now = self._clock()
            open_s = now - self._opened_at
            self._open = False
            self._held_at = None
            was_held = self._held_alarm
            self._held_alarm = False
            self._cond.notify_all()
        if was_held and self._feedback is not None:
            self._feedback.alarm("held_open", False)
        self._bus.emit_new("door.closed", open_s=round(open_s, 3), was_held_open=was_held)

    def _rex_pressed(self) -> None:
        self._bus.emit_new("door.rex", granted=self._rex_enabled)
        if self._rex_enabled:
            self.grant("rex")

    def _tamper_opened(self) -> None:
        self._tampered = True
        self._bus.emit_new("tamper", "alarm", state="open")

    def _tamper_shut(self) -> None:
        if self._tampered:
            self._bus.emit_new("tamper.cleared", state="closed")
        self._tampered = False

    # ------------------------------------------------------------ timer thread

    def _set_stopping(self) -> None:
        self._stopping = True

    def _run(self) -> None:
        while True:
            fire_held = stop_forced = False
            with self._cond:
                if self._stopping:
                    return
                now = self._clock()
                if self._relay_off_at is not None and now >= self._relay_off_at:
                    if self._relay is not None:
                        self._relay.off()
                    self._relay_off_at = None
                if self._held_at is not None and now >= self._held_at:
                    self._held_at = None
                    self._held_alarm = fire_held = True
                    open_s = now - self._opened_at
                if self._forced_off_at is not None and now >= self._forced_off_at:
                    self._forced_off_at = None
                    stop_forced = True
                deadlines = [t for t in (self._relay_off_at, self._held_at, self._forced_off_at) if t is not None]
                if not (fire_held or stop_forced):
                    self._cond.wait(timeout=max(min(deadlines) - now, 0.001) if deadlines else None)
                    continue
            # Outside the lock: listeners may call back into the door.
            if fire_held:
                self._bus.emit_new("door.held_open", "alarm", open_s=round(open_s, 3), limit_s=self._held_open_s)
                if self._feedback is not None:
                    self._feedback.alarm("held_open", True)
            if stop_forced and self._feedback is not None:
                self._feedback.alarm("forced_open", False)
