"""Choosing the gpiozero pin factory from the config.

``[gpio] pin_factory`` names a back end the way gpiozero's own
``GPIOZERO_PIN_FACTORY`` does (``lgpio``, ``rpigpio``, ``pigpio``,
``native``, ``mock``).  Every device is built with an explicit
``pin_factory=`` so nothing depends on gpiozero's process-wide default.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from firmware_py.config.pinmap import PinMap
from firmware_py.errors import ExitCode, KaoclockError

# What a back end needs on the board, for the error message when it will not load.
_NEEDS = {
    "lgpio": "the lgpio library (apt install python3-lgpio on Raspberry Pi OS, or pip install lgpio)",
    "rpigpio": "RPi.GPIO (apt install python3-rpi.gpio); not on a Pi 5",
    "pigpio": "the pigpio daemon running (sudo systemctl enable --now pigpiod) and pip install pigpio",
    "native": "/dev/gpiomem on a Pi 4 or older",
}


class PinFactoryError(KaoclockError):
    """The configured pin back end cannot be started on this machine."""

    exit_code = ExitCode.UNAVAILABLE


def make_pin_factory(name: str, pinmap: PinMap) -> Any:
    """A gpiozero pin factory for ``name``; ``mock`` pretends to be ``pinmap``'s board."""
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory(revision=pinmap.mock_revision)
    eps = {ep.name: ep for ep in entry_points(group="gpiozero_pin_factories")}
    if name not in eps:
        raise PinFactoryError(f"gpio.pin_factory {name!r}: gpiozero has no such pin factory (installed: {', '.join(sorted(eps))})")
    try:
        return eps[name].load()()
    except Exception as exc:  # each back end fails in its own way (ImportError, OSError, its own errors)
        raise PinFactoryError(
            f"gpio.pin_factory {name!r} cannot start here: {type(exc).__name__}: {exc} (needs {_NEEDS.get(name, 'its library')}; "
            "use pin_factory = 'mock' on a machine without GPIO)"
        ) from exc
