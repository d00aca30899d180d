"""The gpiozero devices of one reader, built from the config's pin map."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpiozero import LED, Buzzer, DigitalInputDevice, OutputDevice

from firmware_py.config import Config, ConfigError
from firmware_py.config.pinmap import PinMap, load_pinmap, resolve_pins
from firmware_py.gpio.factory import make_pin_factory

# Inputs are debounced by the pin back end (lgpio does it in the kernel driver).
BOUNCE_S = 0.05

# Output roles that are status lamps, by colour name.
LED_ROLES = {"green": "led_green", "red": "led_red", "amber": "led_amber"}


@dataclass
class GateDevices:
    """Relay, LEDs, buzzer and inputs; a role that is not fitted is ``None``.

    Every input is a :class:`gpiozero.DigitalInputDevice` with the internal
    pull-up, so a switch wired between the GPIO and GND reads *active* while
    closed.  (Not :class:`gpiozero.Button`: its hold-time thread polls ten
    times a second per input, which a door contact does not need.)
    """

    factory: Any
    pinmap: PinMap
    pins: dict[str, int]
    relay: OutputDevice | None = None
    leds: dict[str, LED] = field(default_factory=dict)
    buzzer: Buzzer | None = None
    button_in: DigitalInputDevice | None = None
    button_out: DigitalInputDevice | None = None
    door_contact: DigitalInputDevice | None = None
    rex: DigitalInputDevice | None = None
    tamper: DigitalInputDevice | None = None

    @classmethod
    def from_config(cls, cfg: Config, factory: Any = None) -> GateDevices:
        """Build every fitted device; ``factory`` overrides ``gpio.pin_factory`` (tests pass a MockFactory)."""
        pm = load_pinmap(cfg.gpio.pinmap)
        pins, problems = resolve_pins(pm, cfg.gpio.pins, cfg.gpio.not_fitted, cfg.gpio.release)
        if problems:  # a validated Config never gets here; a hand-built one might
            raise ConfigError([type(p)(f"gpio.{p.key}", p.message, p.fix) for p in problems])
        if factory is None:
            factory = make_pin_factory(cfg.gpio.pin_factory, pm)
        dev = cls(factory=factory, pinmap=pm, pins=pins)
        try:
            if "relay" in pins:
                # initial_value=False: the lock stays locked from the moment the pin is claimed.
                dev.relay = OutputDevice(pins["relay"], active_high=cfg.door.relay_active == "high", initial_value=False, pin_factory=factory)
            for colour, role in LED_ROLES.items():
                if role in pins:
                    dev.leds[colour] = LED(pins[role], pin_factory=factory)
            if "buzzer" in pins:
                dev.buzzer = Buzzer(pins["buzzer"], pin_factory=factory)
            for role in ("button_in", "button_out", "door_contact", "rex", "tamper"):
                if role in pins:
                    setattr(dev, role, DigitalInputDevice(pins[role], pull_up=True, bounce_time=BOUNCE_S, pin_factory=factory))
        except Exception:
            dev.close()
            raise
        if type(factory).__name__ == "MockFactory":
            dev._rest_mock_inputs(cfg)
        return dev

    def _rest_mock_inputs(self, cfg: Config) -> None:
        """Simulated pins start like a quiet site: door and lid shut (the pull-ups alone would read them open)."""
        for dev, wiring in ((self.door_contact, cfg.door.contact), (self.tamper, cfg.door.tamper)):
            if dev is not None:
                dev.pin.drive_low() if wiring == "nc" else dev.pin.drive_high()

    def outputs(self) -> dict[str, Any]:
        """Feedback outputs by name: ``green``, ``red``, ``amber``, ``buzzer``."""
        out: dict[str, Any] = dict(self.leds)
        if self.buzzer is not None:
            out["buzzer"] = self.buzzer
        return out

    def device(self, role: str) -> Any:
        """The gpiozero device of a role (``led_green`` ... ``tamper``), or None."""
        for colour, r in LED_ROLES.items():
            if r == role:
                return self.leds.get(colour)
        return getattr(self, role, None)

    def close(self) -> None:
        """Release every pin: the relay is switched off first, then all pins return to inputs."""
        if self.relay is not None and not self.relay.closed:
            self.relay.off()
        for d in [self.relay, *self.leds.values(), self.buzzer, self.button_in, self.button_out, self.door_contact, self.rex, self.tamper]:
            if d is not None:
                d.close()


def detach(*devices: Any) -> None:
    """Remove the callbacks of input devices (on purpose: no CallbackSetToNone warning)."""
    import warnings

    from gpiozero.exc import CallbackSetToNone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CallbackSetToNone)
        for dev in devices:
            if dev is not None and not dev.closed:
                dev.when_activated = dev.when_deactivated = None


def stop_worker(cond: threading.Condition, thread: threading.Thread | None, stop: Callable[[], None]) -> None:
    """Tell a device's worker thread to stop (``stop`` sets its flag, under ``cond``), wake it and join it."""
    with cond:
        stop()
        cond.notify_all()
    if thread is not None:
        thread.join(timeout=2)
