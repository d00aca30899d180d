"""Bytes in, lines out: the framing both serial peripherals share.

A line ends at CR, LF or CRLF (terminal programs send CR, scripts LF, card
readers CRLF).  Input longer than ``max_bytes`` is dropped up to the next
line end and reported once as :class:`TooLong`; a line that is not UTF-8
text, or holds control characters, is reported as :class:`Binary`.  Neither
ever raises: a serial line carries whatever the other end sends.

With ``editing=True`` (the console) backspace / DEL remove the last
character, Ctrl-C drops the line, Ctrl-U clears it, and ANSI escape
sequences (arrow keys) are swallowed.
"""

from __future__ import annotations

from dataclasses import dataclass

CR, LF, BS, DEL, ESC, CTRL_C, CTRL_U = 0x0D, 0x0A, 0x08, 0x7F, 0x1B, 0x03, 0x15


@dataclass(frozen=True)
class Line:
    text: str


@dataclass(frozen=True)
class TooLong:
    length: int  # bytes received before the line end (at least max_bytes + 1)


@dataclass(frozen=True)
class Binary:
    sample: bytes  # the first bytes, for logs


@dataclass(frozen=True)
class Edit:
    """Console editing the caller may echo: ``erase`` characters removed, or the line cancelled."""

    erase: int = 0
    cancelled: bool = False


Item = Line | TooLong | Binary | Edit


class LineAssembler:
    """Feed it bytes as they arrive; it returns complete lines and refusals."""

    def __init__(self, max_bytes: int = 256, editing: bool = False) -> None:
        self.max_bytes = max_bytes
        self.editing = editing
        self._buf = bytearray()
        self._overflow = 0
        self._after_cr = False
        self._esc = 0  # 0: none, 1: got ESC, 2: inside CSI "ESC [ ..."

    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Item]:
        out: list[Item] = []
        for b in data:
            if b == LF and self._after_cr:  # the LF of a CRLF
                self._after_cr = False
                continue
            self._after_cr = b == CR
            if b in (CR, LF):
                out.append(self._end())
                continue
            if self.editing and self._edit(b, out):
                continue
            if self._overflow:
                self._overflow += 1
            elif len(self._buf) >= self.max_bytes:
                self._overflow = len(self._buf) + 1
                self._buf.clear()
            else:
                self._buf.append(b)
        return out

    def _edit(self, b: int, out: list[Item]) -> bool:
        """Handle one console editing byte; True when it was consumed."""
        if self._esc == 1:
            self._esc = 2 if b == ord("[") else 0
            return True
        if self._esc == 2:
            if 0x40 <= b <= 0x7E:  # the final byte of a CSI sequence
                self._esc = 0
            return True
        if b == ESC:
            self._esc = 1
            return True
        if b in (BS, DEL):
            if self._buf and not self._overflow:
                # Remove one whole UTF-8 character, not one byte of it.
                n = 1
                while n < len(self._buf) and (self._buf[-n] & 0xC0) == 0x80:
                    n += 1
                del self._buf[-n:]
                out.append(Edit(erase=1))
            return True
        if b in (CTRL_C, CTRL_U):
            self._buf.clear()
            self._overflow = 0
            out.append(Edit(cancelled=True))
            return True
        return False

    def _end(self) -> Item:
        if self._overflow:
            n, self._overflow = self._overflow, 0
            return TooLong(n)
        raw = bytes(self._buf)
        self._buf.clear()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Binary(raw[:16])
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
            return Binary(raw[:16])
        return Line(text)
