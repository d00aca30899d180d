"""Structured logs that journald understands, with no C dependency.

* On a terminal: plain text lines.
* ``[logging] format = "json"``: one JSON object per line on stderr (for log
  shippers), with the fields passed in ``extra={...}``.
* Under systemd with ``format = "text"``: entries go to journald's native
  socket (``/run/systemd/journal/socket``) as ``KEY=VALUE`` fields:
  ``MESSAGE``, ``PRIORITY``, ``SYSLOG_IDENTIFIER``, ``CODE_FILE``/``LINE``/``FUNC``,
  ``LOGGER`` and every ``extra`` field upper-cased with a ``KAOCLOCK_`` prefix,
  so ``journalctl -u kaoclock KAOCLOCK_EVENT=update.committed`` filters on them.
  If the socket cannot take an entry the line goes to stderr with a ``<N>``
  priority prefix, which journald also parses.

"Under systemd" means ``$JOURNAL_STREAM`` names our stderr (``systemd.exec(5)``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import struct
import sys
import time
from typing import Any, TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# logging levels -> syslog priorities
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def priority(level: int) -> int:
    for lv in sorted(_PRIORITY, reverse=True):
        if level >= lv:
            return _PRIORITY[lv]
    return 7


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def under_journald(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr) is connected to journald, per ``$JOURNAL_STREAM``."""
    env = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in env:
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    dev, _, ino = env.partition(":")
    return dev.isdigit() and ino.isdigit() and (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in extra_fields(record).items():
            doc.setdefault(k, v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class PriorityPrefixFormatter(logging.Formatter):
    """``<N>logger: message`` lines; journald reads ``<N>`` as the priority."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return "\n".join(f"<{priority(record.levelno)}>{line}" for line in text.splitlines() or [""])


def _field_name(key: str) -> str:
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_")
    return f"KAOCLOCK_{name}"[:64]


def encode_entry(fields: dict[str, Any]) -> bytes:
    """The native protocol: ``KEY=value\\n``, or ``KEY\\n<u64 le length><value>\\n`` for values with newlines."""
    out = bytearray()
    for key, value in fields.items():
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record to journald's native socket as structured fields."""

    def __init__(self, identifier: str = "kaoclock", address: str = JOURNAL_SOCKET, fallback: TextIO | None = None) -> None:
        super().__init__()
        self.identifier = identifier
        self.address = address
        self.fallback = fallback or sys.stderr
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._prefix = PriorityPrefixFormatter()

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        fields: dict[str, Any] = {
            "MESSAGE": message,
            "PRIORITY": priority(record.levelno),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName,
            "THREAD_NAME": record.threadName,
        }
        for k, v in extra_fields(record).items():
            fields[_field_name(k)] = v if isinstance(v, (str, int, float, bytes)) else json.dumps(v, default=str)
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sock.sendto(encode_entry(self.fields(record)), self.address)
        except OSError:
            try:
                self.fallback.write(self._prefix.format(record) + "\n")
                self.fallback.flush()
            except Exception:
                self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def configure_logging(level: str = "info", fmt: str = "text", identifier: str = "kaoclock") -> logging.Handler:
    """Replace the root logger's handlers with the one that suits where stderr goes."""
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif under_journald() and os.path.exists(JOURNAL_SOCKET):
        handler = JournalHandler(identifier)
    elif under_journald():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PriorityPrefixFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler
