"""Everything at the gate, built from the config and started / stopped together.

>>> edge = GateEdge.from_config(cfg, bus, recorder)   # doctest: +SKIP
>>> edge.start(); pipeline.add_sink(edge.controller)   # doctest: +SKIP

The daemon hands the controller to the recognition pipeline as its
:class:`~firmware_py.decision.ports.DecisionSink` and gives the console
:meth:`GateEdge.console_hooks`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from firmware_py.config import Config
from firmware_py.decision.ports import PunchRecorder
from firmware_py.events import EventBus
from firmware_py.gate.card_store import CARD_DB, CardStore
from firmware_py.gate.controller import GateController
from firmware_py.gate.direction import direction_from_config
from firmware_py.gpio.devices import GateDevices
from firmware_py.gpio.door import GpioDoor
from firmware_py.gpio.feedback import GpioFeedback
from firmware_py.gpio.selftest import buzzer_test, led_test

# How long `test leds` shows each pattern.
LED_TEST_S = 2.0


class GateEdge:
    """Pins, feedback, door, direction, gate controller and (optional) card reader of one reader."""

    def __init__(
        self,
        cfg: Config,
        bus: EventBus,
        devices: GateDevices,
        feedback: GpioFeedback,
        door: GpioDoor,
        direction: Any,
        controller: GateController,
        card_reader: Any = None,
    ) -> None:
        self.cfg = cfg
        self.bus = bus
        self.devices = devices
        self.feedback = feedback
        self.door = door
        self.direction = direction
        self.controller = controller
        self.card_reader = card_reader
        self._started = False

    @classmethod
    def from_config(cls, cfg: Config, bus: EventBus, recorder: PunchRecorder, *, pin_factory: Any = None, card_reader: bool = True) -> GateEdge:
        """Build it all; ``pin_factory`` overrides ``gpio.pin_factory``; ``card_reader=False`` skips the serial reader."""
        devices = GateDevices.from_config(cfg, pin_factory)
        try:
            feedback = GpioFeedback.from_config(cfg, bus, devices.outputs())
            door = GpioDoor.from_config(cfg, bus, devices, feedback)
            direction = direction_from_config(cfg, devices, feedback, bus)
            cr = cfg.card_reader
            cards = CardStore(cfg.device.data_dir / CARD_DB) if cr.device else None
            controller = GateController(
                recorder=recorder,
                direction=direction,
                door=door,
                feedback=feedback,
                bus=bus,
                policy=cr.policy,
                cards=cards,
                fallback_after=cr.fallback_after,
                fallback_window_s=cr.fallback_window_s,
                two_factor_s=cr.two_factor_s,
                card_cooldown_s=cr.cooldown_s,
                direction_timeout_s=cfg.direction.press_after_s,
            )
            reader = None
            if cr.device and card_reader:
                from firmware_py.serial.card_reader import SerialCardReader

                reader = SerialCardReader.from_config(cfg, bus, controller.on_card)
        except Exception:
            devices.close()
            raise
        return cls(cfg, bus, devices, feedback, door, direction, controller, reader)

    def start(self) -> None:
        self.feedback.start()
        self.door.start()
        if hasattr(self.direction, "start"):
            self.direction.start()
        self.controller.start()
        if self.card_reader is not None:
            self.card_reader.start()
        self._started = True

    def stop(self) -> None:
        """Stop taking input, finish the punch in progress, relock, release the pins."""
        if self.card_reader is not None:
            self.card_reader.stop()
        self.controller.stop()
        if hasattr(self.direction, "stop"):
            self.direction.stop()
        self.door.stop()
        self.feedback.stop()
        self.devices.close()
        self._started = False

    # ------------------------------------------------------------ console hooks

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "gpio": {"pin_factory": self.cfg.gpio.pin_factory, "pinmap": self.devices.pinmap.name, "board": self.devices.pinmap.board},
            "door": self.door.status(),
            "feedback": {"state": self.feedback.state, "conditions": self.feedback.conditions, "alarms": self.feedback.alarms},
            "gate": {"policy": self.controller.policy, "direction": self.cfg.direction.mode, **self.controller.counts},
        }
        if self.card_reader is not None:
            out["card_reader"] = self.card_reader.status()
        return out

    def relay_test(self, seconds: float) -> None:
        self.door.grant("test", seconds)

    def led_test(self) -> Iterator[str]:
        """Show every pattern for a moment, saying which is which."""
        return led_test(self.feedback, LED_TEST_S)

    def buzzer_test(self) -> None:
        buzzer_test(self.feedback)

    def console_hooks(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~firmware_py.serial.commands.ConsoleContext`."""
        return {"status": self.status, "relay_test": self.relay_test, "led_test": self.led_test, "buzzer_test": self.buzzer_test}
