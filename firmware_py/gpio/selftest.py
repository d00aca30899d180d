"""The gate hardware without the gate: for `kaoclock hw test` and the standalone console.

A technician at the board (daemon stopped) checks each part: the relay
clicks, every LED pattern shows, the buzzer sounds, each input reports.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from firmware_py.config import Config
from firmware_py.events import EventBus
from firmware_py.gpio.devices import GateDevices
from firmware_py.gpio.door import GpioDoor
from firmware_py.gpio.feedback import GpioFeedback
from firmware_py.gpio.patterns import PATTERNS


def led_test(feedback: GpioFeedback, seconds: float = 2.0) -> Iterator[str]:
    """Show every pattern for ``seconds``, saying which is which; conditions are left as they were."""
    for name, p in PATTERNS.items():
        yield f"{name}: {p.colour}, {p.rhythm}, beeps: {p.beeps}"
        feedback.preview(name, seconds)
        time.sleep(seconds)
    feedback.show("idle")  # ends the last preview; conditions (offline, fault) stay as they were
    yield f"done: back to {feedback.state}"


def buzzer_test(feedback: GpioFeedback, seconds: float = 1.0) -> None:
    feedback.alarm("test", True)
    time.sleep(seconds)
    feedback.alarm("test", False)


class HardwareBench:
    """Devices, feedback and door of one reader, started and closed as a context manager."""

    def __init__(self, cfg: Config, bus: EventBus | None = None, pin_factory: Any = None) -> None:
        self.cfg = cfg
        self.bus = bus or EventBus()
        self._factory = pin_factory
        self.devices: GateDevices | None = None
        self.feedback: GpioFeedback | None = None
        self.door: GpioDoor | None = None

    def __enter__(self) -> HardwareBench:
        self.devices = GateDevices.from_config(self.cfg, self._factory)
        self.feedback = GpioFeedback.from_config(self.cfg, self.bus, self.devices.outputs())
        self.door = GpioDoor.from_config(self.cfg, self.bus, self.devices, self.feedback)
        self.feedback.start()
        self.door.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.door is not None:
            self.door.stop()
        if self.feedback is not None:
            self.feedback.stop()
        if self.devices is not None:
            self.devices.close()

    def relay_test(self, seconds: float) -> None:
        """Release the lock for ``seconds`` and wait until it relocks."""
        assert self.door is not None
        self.door.grant("test", seconds)
        deadline = time.monotonic() + seconds + 2
        while self.door.released and time.monotonic() < deadline:
            time.sleep(0.05)
