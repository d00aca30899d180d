"""A serial card reader that sends each card number as an ASCII line.

This is what Wiegand-to-RS232/USB converters and most 125 kHz / 13.56 MHz
desk readers in "serial ASCII" mode send: the number in decimal or hex,
ended by CR, LF or CRLF, sometimes framed by STX (0x02) ... ETX (0x03).
hw/README.md has the protocol.

A frame is trimmed, its STX / ETX dropped, upper-cased and matched against
``card_reader.card_pattern``.  Anything else (line noise, a wrong baud rate,
an over-long line, a number of the wrong shape) is a *bad frame*: counted,
reported as ``card.bad_frame`` at most once a second, and ignored.  A card
held on the reader repeats; the same number within ``repeat_s`` is one read.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from firmware_py.config import Config
from firmware_py.events import EventBus
from firmware_py.gate.card_store import mask_card, normalise_card
from firmware_py.serial.lines import Binary, Line, LineAssembler, TooLong
from firmware_py.serial.port import open_port
from firmware_py.serial.port_reader import SerialService

log = logging.getLogger(__name__)

BAD_FRAME_EVENT_EVERY_S = 1.0


class CardFrames:
    """Framing and validation, independent of the port: bytes in, card numbers out through ``on_card``."""

    def __init__(
        self,
        on_card: Callable[[str], None],
        *,
        pattern: str = "[0-9A-F]{4,20}",
        max_frame_bytes: int = 64,
        repeat_s: float = 1.5,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_card = on_card
        self._pattern = re.compile(pattern)
        self._lines = LineAssembler(max_frame_bytes)
        self._repeat_s = repeat_s
        self._bus = bus
        self._clock = clock
        self._last: tuple[str, float] | None = None
        self._last_bad_event = float("-inf")
        self.good = 0
        self.bad = 0

    def feed(self, data: bytes) -> None:
        # STX / ETX are control bytes the line assembler would call binary: take them off first.
        data = data.replace(b"\x02", b"").replace(b"\x03", b"")
        for item in self._lines.feed(data):
            if isinstance(item, Line):
                self._frame(item.text)
            elif isinstance(item, TooLong):
                self._bad("too_long", f"{item.length} bytes")
            elif isinstance(item, Binary):
                self._bad("binary", item.sample.hex())

    def _frame(self, text: str) -> None:
        card = normalise_card(text)
        if not card:
            return  # a bare CR/LF: some readers send one between frames
        if not self._pattern.fullmatch(card):
            self._bad("pattern", card[:24])
            return
        now = self._clock()
        if self._last is not None and self._last[0] == card and now - self._last[1] < self._repeat_s:
            self._last = (card, now)
            return
        self._last = (card, now)
        self.good += 1
        log.info("card read: %s", mask_card(card))
        self._on_card(card)

    def _bad(self, kind: str, sample: str) -> None:
        self.bad += 1
        now = self._clock()
        if now - self._last_bad_event >= BAD_FRAME_EVENT_EVERY_S:
            self._last_bad_event = now
            log.warning("card reader: bad frame (%s) %s; %d so far", kind, sample, self.bad)
            if self._bus is not None:
                self._bus.emit_new("card.bad_frame", "warning", kind=kind, count=self.bad)


class SerialCardReader:
    """The card reader on its serial port; an edge adapter with ``start()`` / ``stop()``."""

    def __init__(self, opener: Callable[[], Any], frames: CardFrames, bus: EventBus | None = None) -> None:
        self.frames = frames
        self.service = SerialService("card_reader", opener, frames.feed, bus)

    @classmethod
    def from_config(cls, cfg: Config, bus: EventBus | None, on_card: Callable[[str], None]) -> SerialCardReader:
        c = cfg.card_reader
        frames = CardFrames(on_card, pattern=c.card_pattern, max_frame_bytes=c.max_frame_bytes, repeat_s=c.repeat_s, bus=bus)
        return cls(lambda: open_port(c.device, c.baudrate, c.framing, key="card_reader.device"), frames, bus)

    def start(self) -> None:
        self.service.start()

    def stop(self) -> None:
        self.service.stop()

    def status(self) -> dict[str, Any]:
        return {"connected": self.service.connected, "cards_read": self.frames.good, "bad_frames": self.frames.bad}
