"""[console]: the technician's serial console."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_py.config.schema import Section, setting

FRAMING_PATTERN = r"[5-8][NEOMS][12]"


@dataclass(frozen=True)
class ConsoleConfig(Section):
    """Line-based technician console on a UART or USB-serial adapter (hw/README.md: protocol)."""

    device: str = setting(
        "",
        doc="Serial device, e.g. /dev/serial0 (the header UART) or /dev/ttyUSB0, or a pyserial URL; '' = no console.",
    )
    baudrate: int = setting(115200, ge=1200, le=4000000, doc="Line speed.")
    framing: str = setting("8N1", pattern=FRAMING_PATTERN, doc="Data bits, parity (N/E/O/M/S), stop bits.")
    echo: bool = setting(True, doc="Echo typed characters back (terminal programs expect it).")
    idle_timeout_s: float = setting(300.0, ge=10, le=86400, doc="A logged-in session idle this long is logged out.")
    max_line_bytes: int = setting(256, ge=32, le=4096, doc="Longer input lines are refused.")
    login_delay_s: float = setting(2.0, ge=0.1, le=60, doc="Wait after the first wrong passphrase; doubles with each further one.")
    max_failures: int = setting(5, ge=1, le=20, doc="Wrong passphrases in a row before the console locks.")
    lockout_s: float = setting(900.0, ge=10, le=86400, doc="How long the console stays locked after max_failures.")
