"""sd_notify without libsystemd: one datagram to ``$NOTIFY_SOCKET`` per message.

The protocol (``man sd_notify``): newline-separated ``KEY=VALUE`` assignments
sent as a single datagram on an ``AF_UNIX``/``SOCK_DGRAM`` socket whose path is
in ``$NOTIFY_SOCKET``; a leading ``@`` means the Linux abstract namespace.
``READY=1`` ends start-up for a ``Type=notify`` unit, ``STATUS=`` is what
``systemctl status`` shows, ``WATCHDOG=1`` pets the watchdog, ``STOPPING=1``
announces a clean stop. Without ``$NOTIFY_SOCKET`` (not under systemd) every
call is a no-op that returns False.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to the service manager."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        if self.address and not self.address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%s is not a unix socket path (vsock is not supported); not notifying systemd", self.address)
            self.address = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _target(self) -> str | bytes:
        assert self.address is not None
        return b"\0" + self.address[1:].encode() if self.address.startswith("@") else self.address

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; False if not sent."""
        if self.address is None:
            return False
        data = "\n".join(a.replace("\n", " ") for a in assignments).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self._target())
                return True
            except OSError as exc:
                if not self._warned:
                    log.warning("cannot notify systemd at %s: %s", self.address, exc)
                    self._warned = True
                return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []), f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (a slow model load)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_timeout(env: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """The unit's WatchdogSec in seconds if the watchdog is on for this process, else None."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    wpid = env.get("WATCHDOG_PID")
    if wpid and wpid.isdigit() and int(wpid) != (pid or os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None
