"""The drainer: publishes the outbox QoS 1, in order, and forgets a message only on its PUBACK.

One thread.  While the transport is connected it keeps up to ``window``
messages in flight, oldest first; acknowledgements are collected from the
network thread and committed in batches (a crash before a batch is committed
only causes resends).  After every reconnect it starts again from the oldest
unacknowledged message, so nothing in flight when a connection or the
process died is skipped.  A PUBACK carrying an MQTT 5 error (for example
"not authorized") keeps the message, records the reason, emits
``outbox.publish_refused`` and retries after a growing pause: a refused
message blocks nothing silently and is never dropped.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from firmware_py.events import EventBus
from firmware_py.outbox.store import Outbox, Pending

log = logging.getLogger(__name__)

AckCallback = Callable[[bool, str], None]


class Transport(Protocol):
    """What the drainer needs from an MQTT link."""

    def wait_connected(self, timeout: float) -> int | None:
        """Block until connected; the connection's generation number, or None on timeout."""
        ...

    @property
    def generation(self) -> int | None:
        """The current connection's generation, None while disconnected."""
        ...

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, *, content_type: str | None = None, on_ack: AckCallback | None = None
    ) -> bool:
        """Hand a message to the connection; False when not connected."""
        ...


class OutboxDrainer:
    """Moves messages from an :class:`Outbox` to a :class:`Transport`."""

    def __init__(
        self,
        outbox: Outbox,
        transport: Transport,
        *,
        window: int = 20,
        ack_batch: int = 256,
        ack_interval_s: float = 0.05,
        read_ahead: int = 256,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
        bus: EventBus | None = None,
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.window = max(1, window)
        self.ack_batch = ack_batch
        self.ack_interval_s = ack_interval_s
        self.read_ahead = max(1, read_ahead)
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.bus = bus
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._acks: deque[tuple[int, bool, str]] = deque()
        self._thread: threading.Thread | None = None
        self._refusals = 0
        self.delivered = 0  # messages removed after their PUBACK, since start
        outbox.add_listener(self._wake.set)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="outbox-drain", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            gen = self.transport.wait_connected(0.5)
            if gen is None:
                continue
            try:
                self._session(gen)
            except Exception as exc:  # a storage error must not kill the thread: report, pause, retry
                log.exception("outbox drain failed")
                if self.bus is not None:
                    self.bus.emit_new("outbox.drain_failed", "fault", error=str(exc))
                self._stop.wait(1.0)

    def _on_ack(self, seq: int, ok: bool, reason: str) -> None:
        # Called on the network thread: only record and wake, never block there.
        self._acks.append((seq, ok, reason))
        self._wake.set()

    def _session(self, gen: int) -> None:
        """Drain while connection ``gen`` lasts."""
        inflight: dict[int, Pending] = {}
        ahead: deque[Pending] = deque()  # read from the outbox, not yet published
        done: list[int] = []
        cursor = 0  # highest seq read from the outbox in this session
        last_commit = time.monotonic()
        refused: tuple[Pending, str] | None = None
        try:
            while not self._stop.is_set() and self.transport.generation == gen:
                self._wake.clear()
                while self._acks:
                    seq, ok, reason = self._acks.popleft()
                    msg = inflight.pop(seq, None)
                    if ok:
                        done.append(seq)
                    elif msg is not None and refused is None:
                        refused = (msg, reason)
                now = time.monotonic()
                if done and (len(done) >= self.ack_batch or now - last_commit >= self.ack_interval_s or not inflight):
                    self.delivered += self.outbox.mark_delivered(done)
                    done = []
                    last_commit = now
                if refused is not None:
                    self._refused(*refused)
                    return  # start over from the oldest message (after the pause)
                room = self.window - len(inflight)
                sent = 0
                if room > 0 and len(ahead) < room:
                    # Read ahead in batches: far fewer queries than one per acknowledgement.
                    more = self.outbox.pending(cursor, self.read_ahead)
                    ahead.extend(more)
                    if more:
                        cursor = more[-1].seq
                while room > 0 and ahead:
                    msg = ahead[0]
                    ok = self.transport.publish(
                        msg.topic, msg.payload, 1, False, content_type=msg.content_type, on_ack=lambda o, r, s=msg.seq: self._on_ack(s, o, r)
                    )
                    if not ok:
                        return  # disconnected: the next session resends from the oldest
                    ahead.popleft()
                    inflight[msg.seq] = msg
                    room -= 1
                    sent += 1
                if sent == 0 and not self._acks:
                    if not inflight and not done:
                        self._refusals = 0
                    self._wake.wait(self.ack_interval_s if done else 0.5)
        finally:
            while self._acks:  # acknowledgements that arrived as the session ended still count
                seq, ok, _ = self._acks.popleft()
                if ok:
                    done.append(seq)
            if done:
                self.delivered += self.outbox.mark_delivered(done)

    def _refused(self, msg: Pending, reason: str) -> None:
        self._refusals += 1
        self.outbox.note_error(msg.seq, reason)
        base = min(self.retry_max_s, self.retry_min_s * 2 ** min(self._refusals - 1, 16))
        pause = base / 2 + random.random() * base / 2
        log.warning("broker refused outbox message %s on %s: %s; retrying in %.1f s", msg.id, msg.topic, reason, pause)
        if self.bus is not None:
            self.bus.emit_new("outbox.publish_refused", "fault", id=msg.id, topic=msg.topic, reason=reason, retry_in_s=round(pause, 1))
        self._stop.wait(pause)
