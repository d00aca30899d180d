"""[direction]: how a punch gets in (出勤) or out (退勤)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class DirectionConfig(Section):
    """Punch direction: fixed by the reader's role, chosen with the IN / OUT buttons, or automatic."""

    mode: Literal["fixed-in", "fixed-out", "buttons", "auto"] = setting(
        "auto",
        doc="fixed-in / fixed-out: an entrance-only or exit-only reader; buttons: IN / OUT pressed before or "
        "after recognition; auto: a person's first punch of the day is in, then out, in, ...",
    )
    press_before_s: float = setting(5.0, ge=0, le=60, doc="buttons: a press this long before recognition still counts.")
    press_after_s: float = setting(4.0, ge=0.5, le=30, doc="buttons: how long the reader waits for a press after recognition.")
    no_press: Literal["auto", "in", "out", "reject"] = setting(
        "auto", doc="buttons: what a recognition without a press becomes (reject = no punch, no door)."
    )
    day_start_hour: int = setting(
        0, ge=0, le=23, doc="auto: the attendance day starts at this local hour (4 keeps a night shift that ends at 3:00 on one day)."
    )
