"""[door]: the lock relay and the door's sensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class DoorConfig(Section):
    """Lock relay pulse, door contact, request-to-exit and tamper (hw/README.md: fail-safe / fail-secure)."""

    relay_active: Literal["high", "low"] = setting(
        "high", doc="Pin level that energises the relay: high for transistor relay boards / HATs, low for the common opto-isolated modules."
    )
    pulse_s: float = setting(3.0, ge=0.2, le=30, doc="How long the lock is released on a grant, in seconds.")
    lock: Literal["fail-secure", "fail-safe"] = setting(
        "fail-secure",
        doc="The lock fitted: fail-secure (electric strike, locked without power; wire it to the relay's NO contact) or "
        "fail-safe (maglock, open without power; wire it to the relay's NC contact). Reported in status.",
    )
    contact: Literal["nc", "no"] = setting(
        "nc", doc="Door contact wiring: nc = closed while the door is shut (a cut wire reads as open); no = closes when the door opens."
    )
    open_grace_s: float = setting(2.0, ge=0, le=30, doc="After the relay relocks, the door may still be opened this long before it counts as forced.")
    held_open_s: float = setting(30.0, ge=1, le=3600, doc="A door open longer than this raises door.held_open and sounds the buzzer until it closes.")
    forced_alarm_s: float = setting(10.0, ge=0, le=600, doc="How long the buzzer sounds when the door is forced open (0 = event only).")
    rex: bool = setting(True, doc="The request-to-exit button releases the lock without recognition.")
    tamper: Literal["nc", "no"] = setting("nc", doc="Tamper switch wiring: nc = closed while the enclosure is shut.")
