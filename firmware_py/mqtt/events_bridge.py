"""Events from the EventBus to the events topic, rate-limited, buffered briefly while offline."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from firmware_py.events import Event, EventBus
from firmware_py.mqtt.link import MqttLink
from firmware_py.mqtt.status import encode
from firmware_py.timefmt import utc_ms

log = logging.getLogger(__name__)

EVENT_VERSION = 1
URGENT = frozenset({"alarm", "fault"})  # severities with a budget of their own: never rate-limited


def _plain(value: Any) -> Any:
    """JSON-safe copy of event data (non-finite numbers become null, unknown objects their str)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def event_payload(event: Event, site: str, device: str, dropped: int = 0) -> dict[str, Any]:
    data = _plain(event.data)
    if len(json.dumps(data)) > 8192:
        data = {"truncated": True, "keys": sorted(data)[:50]}
    return {
        "v": EVENT_VERSION,
        "site": site,
        "device": device,
        "ts": utc_ms(event.ts),
        "type": event.type,
        "severity": event.severity,
        "data": data,
        "dropped": dropped,
    }


class EventPublisher:
    """Publishes every bus event (QoS 1, not retained).

    Routine events (info, warning) share a token bucket (``per_minute``);
    while offline up to ``buffer`` of them wait in memory and go out after the
    reconnect.  Routine events lost to either limit are counted in the next
    message's ``dropped`` field: they are a diagnostic stream, punches are what
    the outbox keeps.  Alarms and faults (door.forced_open, tamper,
    decision.spoof_attempt, outbox.high_water, ...) have a budget of their own:
    they are never rate-limited, wait offline in a separate buffer
    (``urgent_buffer``) that routine events cannot evict, and go out first,
    so a busy gate or a flood of junk commands cannot crowd them out.
    """

    def __init__(
        self,
        link: MqttLink,
        topic: str,
        bus: EventBus,
        *,
        site: str,
        device: str,
        per_minute: int = 120,
        buffer: int = 200,
        urgent_buffer: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = link
        self.topic = topic
        self.bus = bus
        self.site = site
        self.device = device
        self.rate = per_minute / 60.0
        self.burst = max(1.0, float(min(per_minute, 60)))
        self._tokens = self.burst
        self._last = clock()
        self._clock = clock
        self._pending: deque[Event] = deque(maxlen=buffer)
        self._urgent: deque[Event] = deque(maxlen=urgent_buffer)
        self.urgent_dropped = 0  # alarms and faults lost to a full offline buffer (only during a very long outage)
        self._dropped = 0
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.bus.subscribe(self.on_event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_event(self, event: Event) -> None:
        if event.severity in URGENT:
            with self._lock:
                if len(self._urgent) == self._urgent.maxlen:
                    self.urgent_dropped += 1
                self._urgent.append(event)
            self.flush()
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1.0:
                self._dropped += 1
                return
            self._tokens -= 1.0
            if len(self._pending) == self._pending.maxlen:
                self._dropped += 1
            self._pending.append(event)
        self.flush()

    def flush(self) -> None:
        """Publish what waits (called on each event and after every reconnect)."""
        with self._lock:
            while self._urgent:  # alarms and faults first
                payload = encode(event_payload(self._urgent[0], self.site, self.device, self._dropped))
                if not self.link.publish(self.topic, payload, 1, False, content_type="application/json"):
                    return
                self._urgent.popleft()
                self._dropped = 0
            while self._pending:
                event = self._pending[0]
                payload = encode(event_payload(event, self.site, self.device, self._dropped))
                if not self.link.publish(self.topic, payload, 1, False, content_type="application/json"):
                    return
                self._pending.popleft()
                self._dropped = 0
