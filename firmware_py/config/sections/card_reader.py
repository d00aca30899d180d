"""[card_reader]: an optional serial card reader and the card policy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Problem, Section, setting
from firmware_py.config.sections.console import FRAMING_PATTERN


@dataclass(frozen=True)
class CardReaderConfig(Section):
    """A reader that sends each card number as an ASCII line (Wiegand-to-serial converters and the like)."""

    device: str = setting("", doc="Serial device or pyserial URL, e.g. /dev/ttyUSB0; '' = no card reader.")
    baudrate: int = setting(9600, ge=1200, le=4000000, doc="Line speed.")
    framing: str = setting("8N1", pattern=FRAMING_PATTERN, doc="Data bits, parity (N/E/O/M/S), stop bits.")
    card_pattern: str = setting(
        "[0-9A-F]{4,20}", doc="A valid card number (after trimming and upper-casing); other frames are counted as bad and ignored."
    )
    max_frame_bytes: int = setting(64, ge=8, le=1024, doc="Longer frames are bad frames.")
    repeat_s: float = setting(1.5, ge=0, le=10, doc="The same card again within this time is one read (readers repeat while a card is held).")
    policy: Literal["face-only", "card-fallback", "face+card"] = setting(
        "face-only",
        doc="face-only: cards are ignored; card-fallback: after fallback_after failed face attempts a card alone opens; "
        "face+card: the face and the same person's card within two_factor_s.",
    )
    fallback_after: int = setting(3, ge=1, le=20, doc="card-fallback: failed face attempts (unknown, unclear) that allow a card alone.")
    fallback_window_s: float = setting(60.0, ge=5, le=600, doc="card-fallback: face failures older than this are forgotten.")
    two_factor_s: float = setting(10.0, ge=2, le=60, doc="face+card: both must come within this many seconds of each other.")
    cooldown_s: float = setting(10.0, ge=0, le=600, doc="A card-only punch by the same person again within this time is refused as cooldown.")

    def check(self) -> Iterator[Problem]:
        try:
            re.compile(self.card_pattern)
        except re.error as exc:
            yield Problem("card_pattern", f"not a regular expression: {exc}", "write a Python regular expression such as [0-9]{8,10}")
        if self.policy != "face-only" and not self.device:
            yield Problem("policy", f"{self.policy!r} needs a card reader but card_reader.device is empty", "set card_reader.device or use face-only")
