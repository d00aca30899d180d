"""Opening a serial port from the config: a device path or any pyserial URL."""

from __future__ import annotations

from typing import Any

import serial

from firmware_py.errors import ExitCode, KaoclockError

PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD, "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}


class SerialPortError(KaoclockError):
    """A serial device cannot be opened."""

    exit_code = ExitCode.UNAVAILABLE


def open_port(device: str, baudrate: int, framing: str = "8N1", timeout: float = 0.1, key: str = "device") -> Any:
    """Open ``device`` (``/dev/ttyUSB0``, ``loop://``, ``rfc2217://host:port`` ...) with ``framing`` such as ``8N1``."""
    try:
        return serial.serial_for_url(
            device,
            baudrate=baudrate,
            bytesize=int(framing[0]),
            parity=PARITY[framing[1]],
            stopbits=int(framing[2]),
            timeout=timeout,
            write_timeout=2.0,
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SerialPortError(
            f"{key} {device!r} cannot be opened: {exc} (check the cable / adapter, that the device exists, "
            "and that this user is in the 'dialout' group)"
        ) from None
