"""Events: what happened on the reader, for whoever listens.

The pipeline, the door hardware, the outbox and the services emit
:class:`Event` objects on an :class:`EventBus`; adapters at the edge (MQTT
`events` topic, console, feedback LEDs, logs) subscribe.  The bus calls
listeners synchronously and isolates them: a failing listener is logged and
never breaks the emitter or the other listeners.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "alarm", "fault"]


@dataclass(frozen=True)
class Event:
    """One thing that happened.

    ``type`` is a dotted name from the MQTT contract's event catalogue
    (``decision.reject``, ``door.held_open``, ``outbox.high_water`` ...);
    ``data`` is JSON-serialisable detail; ``ts`` is UTC epoch seconds.
    """

    type: str
    severity: Severity = "info"
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)


Listener = Callable[[Event], None]


class EventBus:
    """A small thread-safe publish/subscribe hub."""

    def __init__(self) -> None:
        self._listeners: list[tuple[str, Listener]] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener, prefix: str = "") -> Callable[[], None]:
        """Call ``listener`` for every event whose type starts with ``prefix``; returns an unsubscribe function."""
        entry = (prefix, listener)
        with self._lock:
            self._listeners.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._listeners:
                    self._listeners.remove(entry)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            listeners = [fn for prefix, fn in self._listeners if event.type.startswith(prefix)]
        for fn in listeners:
            try:
                fn(event)
            except Exception:
                log.exception("event listener %r failed on %s", fn, event.type)

    def emit_new(self, type: str, severity: Severity = "info", **data: Any) -> Event:
        event = Event(type, severity, data)
        self.emit(event)
        return event
