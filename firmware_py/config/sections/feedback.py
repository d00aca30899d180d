"""[feedback]: status LEDs and buzzer (patterns: hw/README.md)."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class FeedbackConfig(Section):
    """How long results show and whether the buzzer speaks."""

    buzzer: bool = setting(True, doc="Beep on results; false = quiet office mode (alarms such as door held open still sound).")
    result_s: float = setting(2.0, ge=0.5, le=10, doc="How long accepted / rejected shows before the reader returns to idle.")
    looking_timeout_s: float = setting(10.0, ge=1, le=120, doc="'looking' falls back to idle after this long without a decision.")
