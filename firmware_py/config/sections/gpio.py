"""[gpio]: which pin back end drives the header and which pin each role uses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Problem, Section, setting


@dataclass(frozen=True)
class GpioConfig(Section):
    """GPIO back end and pin assignment (hw/README.md has the wiring table)."""

    pin_factory: Literal["mock", "lgpio", "rpigpio", "pigpio", "native"] = setting(
        "mock",
        doc="gpiozero pin back end, as GPIOZERO_PIN_FACTORY names them: lgpio on a Pi 5 (and any Pi), "
        "rpigpio / pigpio / native on a Pi 4 or older, mock (simulated pins) for the demo and tests.",
    )
    pinmap: str = setting(
        "rpi4",
        doc="Board pin map: a name from hw/pinmaps/ (rpi4, rpi5) or the path of a .toml pin map.",
        pattern=r"[A-Za-z0-9_.\-/~]+",
    )
    pins: dict[str, int] = setting(
        {},
        doc="Move roles off the pin map's defaults: role = BCM GPIO number, e.g. { relay = 12 }. "
        "Roles: relay, led_green, led_red, led_amber, buzzer, button_in, button_out, door_contact, rex, tamper.",
        ge=0,
        le=63,
    )
    not_fitted: list[str] = setting([], doc='Roles this reader has no hardware for, e.g. ["tamper", "rex"].')
    release: list[int] = setting(
        [],
        doc="Reserved pins to free for roles, e.g. [14, 15] when the console runs on a USB adapter instead of the UART.",
        ge=0,
        le=63,
    )

    def check(self) -> Iterator[Problem]:
        from firmware_py.config.pinmap import PinMapError, load_pinmap, resolve_pins

        try:
            pm = load_pinmap(self.pinmap)
        except PinMapError as exc:
            yield Problem("pinmap", str(exc), "use rpi4 or rpi5, or the path of a pin map shaped like hw/pinmaps/rpi4.toml")
            return
        if self.pin_factory not in pm.pin_factories:
            yield Problem(
                "pin_factory",
                f"{self.pin_factory!r} cannot drive {pm.board}",
                f"use one of {', '.join(repr(f) for f in pm.pin_factories)}",
            )
        _, problems = resolve_pins(pm, self.pins, self.not_fitted, self.release)
        yield from problems


# Header UART device names: a console or card reader on one of these uses GPIO14/15.
UART_DEVICES = ("/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0", "/dev/ttyAMA10")


def check_hardware(cfg: object) -> Iterator[Problem]:
    """Rules that span [gpio], [direction], [console] and [card_reader] (dotted keys from the root)."""
    from firmware_py.config.pinmap import PinMapError, load_pinmap, resolve_pins

    gpio = cfg.gpio  # type: ignore[attr-defined]
    direction = cfg.direction  # type: ignore[attr-defined]
    console = cfg.console  # type: ignore[attr-defined]
    card = cfg.card_reader  # type: ignore[attr-defined]
    try:
        pins, _ = resolve_pins(load_pinmap(gpio.pinmap), gpio.pins, gpio.not_fitted, gpio.release)
    except PinMapError:
        return  # already reported under gpio.pinmap
    if direction.mode == "buttons":
        for role in ("button_in", "button_out"):
            if role not in pins:
                yield Problem(
                    "direction.mode",
                    f"'buttons' needs the {role} button, which gpio.not_fitted removes",
                    "fit the button or use auto / fixed-in / fixed-out",
                )
    for key, device in (("console.device", console.device), ("card_reader.device", card.device)):
        if device in UART_DEVICES:
            freed = sorted(set(gpio.release) & {14, 15})
            if freed:
                yield Problem(
                    key,
                    f"{device} is the header UART on GPIO14/15, but gpio.release frees {freed}",
                    "use a USB-serial adapter or keep 14 and 15 reserved",
                )
    if console.device and console.device == card.device:
        yield Problem("card_reader.device", f"{card.device} is also the console's device", "give the card reader its own serial port")
