"""A serial port read by one thread, reopened with backoff when the adapter goes away."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import serial

from firmware_py.events import EventBus

log = logging.getLogger(__name__)

BACKOFF_S = (0.5, 1, 2, 5, 10, 30)


class SerialService:
    """Opens a port with ``opener``, feeds what arrives to ``on_bytes`` (``b""`` on each idle tick).

    A USB-serial adapter that is unplugged raises on read: the port is closed,
    ``<name>.port_lost`` is emitted and the port is reopened with backoff;
    ``<name>.port_open`` says when it is back.
    """

    def __init__(self, name: str, opener: Callable[[], Any], on_bytes: Callable[[bytes], None], bus: EventBus | None = None) -> None:
        self.name = name
        self._opener = opener
        self._on_bytes = on_bytes
        self._bus = bus
        self._port: Any = None
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_open: Callable[[], None] | None = None

    @property
    def connected(self) -> bool:
        return self._port is not None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"serial-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None
        self._close()

    def write(self, data: bytes) -> None:
        with self._write_lock:
            port = self._port
            if port is None:
                return
            try:
                port.write(data)
            except (serial.SerialException, OSError) as exc:
                log.warning("%s: write failed: %s", self.name, exc)

    def _emit(self, suffix: str, severity: str = "info", **data: Any) -> None:
        if self._bus is not None:
            self._bus.emit_new(f"{self.name}.{suffix}", severity, **data)  # type: ignore[arg-type]

    def _close(self) -> None:
        with self._write_lock:
            port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    def _run(self) -> None:
        attempt = 0
        reported = False
        while not self._stop.is_set():
            if self._port is None:
                try:
                    port = self._opener()
                except Exception as exc:
                    if not reported:
                        log.warning("%s: %s", self.name, exc)
                        self._emit("port_lost", "warning", error=str(exc))
                        reported = True
                    self._stop.wait(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                    attempt += 1
                    continue
                with self._write_lock:
                    self._port = port
                attempt, reported = 0, False
                self._emit("port_open")
                if self.on_open is not None:
                    self.on_open()
            try:
                data = self._port.read(max(1, self._port.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError / AttributeError: pyserial's posix read after the fd went away.
                if self._stop.is_set():
                    return
                log.warning("%s: port lost: %s", self.name, exc)
                self._emit("port_lost", "warning", error=str(exc))
                reported = True
                self._close()
                continue
            try:
                self._on_bytes(data)
            except Exception:  # whatever the line carried, the reader keeps reading
                log.exception("%s: handler failed", self.name)
