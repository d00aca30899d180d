"""The drainer: publishes the outbox QoS 1, in order, and forgets a message only on the backend's receipt.

One thread.  While the transport is connected it keeps up to ``window``
messages in flight (published, no PUBACK yet), oldest first.  A PUBACK is
*not* delivery: it only starts the wait for the backend's signed receipt
(:meth:`OutboxDrainer.confirm`, fed by the MQTT side after verifying the
receipt), and only a receipt deletes a message.  A message without a receipt
is published again after ``receipt_timeout_s``, then after twice that, and
so on up to ``resend_max_s``: an unreceipted punch is resent with backoff,
never dropped.

A PUBACK with an MQTT 5 error (reason >= 0x80, e.g. "not authorized") or
0x10 "no matching subscribers" (nobody, not even a backend session, will
get it) schedules the message again after a growing pause, records the
reason and emits ``outbox.publish_refused`` once per run of refusals.

After every reconnect the messages whose PUBACK never came are published
again at once.  After a restart every waiting message is published again
(the backend de-duplicates by punch id and confirms duplicates too).
Receipts are applied in batches; a crash before a batch is committed only
causes resends.

Every ``retention_check_s`` the oldest waiting message is checked against
``retention_s`` (:meth:`Outbox.check_retention`): past it, an
``outbox.high_water`` alarm and ``on_unconfirmed(since)`` (the retained
status flag), nothing deleted.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from firmware_py.events import EventBus
from firmware_py.outbox.store import Outbox, Pending
from firmware_py.worker import Worker

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


@dataclass
class _Sent:
    msg: Pending
    due: float  # monotonic time of the next publish, when no receipt came by then
    attempts: int
    gen: int | None  # connection it is in flight on (None: its PUBACK came, or it waits to be published)


class OutboxDrainer(Worker):
    thread_name = "outbox-drain"

    """Moves messages from an :class:`Outbox` to a :class:`Transport` and deletes them on receipts."""

    def __init__(
        self,
        outbox: Outbox,
        transport: Transport,
        *,
        window: int = 20,
        read_ahead: int = 256,
        receipt_timeout_s: float = 30.0,
        resend_max_s: float = 600.0,
        max_unconfirmed: int = 5000,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
        retention_s: float = 86400.0,
        retention_check_s: float = 5.0,
        on_unconfirmed: Callable[[float | None], None] | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.window = max(1, window)
        self.read_ahead = max(1, read_ahead)
        self.receipt_timeout_s = receipt_timeout_s
        self.resend_max_s = max(resend_max_s, receipt_timeout_s)
        self.max_unconfirmed = max(self.window, max_unconfirmed)
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.retention_s = retention_s
        self.retention_check_s = retention_check_s
        self.on_unconfirmed = on_unconfirmed
        self.bus = bus
        super().__init__()
        self._acks: deque[tuple[int, int, bool, str]] = deque()
        self._confirms: deque[list[str]] = deque()
        self._sent: dict[int, _Sent] = {}  # seq -> state, for messages read and not yet confirmed
        self._by_id: dict[str, int] = {}
        self._cursor = 0  # highest seq read from the outbox
        self._ahead: deque[Pending] = deque()  # read from the outbox, never published by this process yet
        self._refusing = False
        self._refusals = 0
        self._unconfirmed_since: float | None = None
        self._next_retention = 0.0
        self._next_due = float("inf")  # earliest due time among messages not in flight
        self._inflight = 0  # published on the current connection, no PUBACK yet
        self.delivered = 0  # messages removed on a receipt, since start
        self.published = 0  # publishes handed to the transport (first sends and resends)
        outbox.add_listener(self._wake.set)

    def _after_stop(self) -> None:
        self._apply_confirms()

    def wake(self) -> None:
        self._wake.set()

    def confirm(self, ids: Iterable[str]) -> None:
        """The backend's verified receipt names these punch ids: delete them (on the drainer thread)."""
        self._confirms.append(list(ids))
        self._wake.set()

    @property
    def unconfirmed(self) -> int:
        """Messages published (or read for publishing) and not yet confirmed by a receipt."""
        return len(self._sent)

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._apply_confirms()
                self._check_retention()
            except Exception:
                log.exception("outbox receipt handling failed")
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

    def _on_ack(self, gen: int, seq: int, ok: bool, reason: str) -> None:
        # Called on the network thread: only record and wake, never block there.
        self._acks.append((gen, seq, ok, reason))
        self._wake.set()

    def _apply_confirms(self) -> None:
        ids: list[str] = []
        while self._confirms:
            ids.extend(self._confirms.popleft())
        if not ids:
            return
        self.delivered += self.outbox.remove_ids(ids)
        for i in ids:
            seq = self._by_id.pop(i, None)
            if seq is not None:
                self._sent.pop(seq, None)

    def _check_retention(self) -> None:
        now = time.monotonic()
        if now < self._next_retention:
            return
        self._next_retention = now + self.retention_check_s
        since = self.outbox.check_retention(self.retention_s)
        if since != self._unconfirmed_since:
            changed = (since is None) != (self._unconfirmed_since is None)
            self._unconfirmed_since = since
            if changed and self.on_unconfirmed is not None:
                self.on_unconfirmed(since)

    def _receipt_wait(self, attempts: int) -> float:
        return min(self.resend_max_s, self.receipt_timeout_s * 2 ** min(attempts - 1, 16))

    def _refused_pause(self) -> float:
        base = min(self.retry_max_s, self.retry_min_s * 2 ** min(self._refusals - 1, 16))
        return base / 2 + random.random() * base / 2

    def _set_due(self, st: _Sent, due: float) -> None:
        st.gen, st.due = None, due
        if due < self._next_due:
            self._next_due = due

    def _handle_acks(self, gen: int, now: float) -> None:
        while self._acks:
            agen, seq, ok, reason = self._acks.popleft()
            if agen == gen:
                self._inflight -= 1
            st = self._sent.get(seq)
            if st is None or st.gen != agen:
                continue  # confirmed meanwhile, or an answer from an older connection
            if ok:
                self._set_due(st, now + self._receipt_wait(st.attempts))
                if self._refusing:
                    self._refusing, self._refusals = False, 0
                continue
            self._refusals += 1
            pause = self._refused_pause()
            self._set_due(st, now + pause)
            self.outbox.note_error(seq, reason)
            if not self._refusing:  # one event and one log line per run of refusals, not one per message
                self._refusing = True
                log.warning(
                    "broker did not take outbox message %s on %s: %s; it stays queued, retried in %.1f s", st.msg.id, st.msg.topic, reason, pause
                )
                if self.bus is not None:
                    self.bus.emit_new("outbox.publish_refused", "fault", id=st.msg.id, topic=st.msg.topic, reason=reason, retry_in_s=round(pause, 1))

    def _session(self, gen: int) -> None:
        """Drain while connection ``gen`` lasts."""
        now = time.monotonic()
        for st in self._sent.values():
            if st.gen is not None:  # in flight when the last connection ended: no PUBACK will come
                self._set_due(st, now)
        self._inflight = 0
        while not self._stop.is_set() and self.transport.generation == gen:
            self._wake.clear()
            now = time.monotonic()
            self._handle_acks(gen, now)
            self._apply_confirms()
            self._check_retention()
            room = self.window - self._inflight
            sent = 0
            if room > 0 and now >= self._next_due:
                # Due resends first, oldest first.
                self._next_due = float("inf")
                for st in self._sent.values():
                    if st.gen is not None:
                        continue
                    if st.due <= now and room > 0:
                        if not self._publish(st, gen):
                            return
                        room -= 1
                        sent += 1
                    elif st.due < self._next_due:
                        self._next_due = st.due
            while room > 0:
                # Then new messages, read ahead in batches (far fewer queries than one per message).
                if not self._ahead:
                    if len(self._sent) >= self.max_unconfirmed:
                        break
                    more = self.outbox.pending(self._cursor, self.read_ahead)
                    if not more:
                        break
                    self._cursor = more[-1].seq
                    self._ahead.extend(more)
                msg = self._ahead.popleft()
                st = _Sent(msg, now, 0, None)
                self._sent[msg.seq] = st
                self._by_id[msg.id] = msg.seq
                if not self._publish(st, gen):
                    return
                room -= 1
                sent += 1
            if sent == 0 and not self._acks and not self._confirms:
                wait = 0.5 if self._next_due == float("inf") else max(0.0, min(0.5, self._next_due - now))
                self._wake.wait(wait)

    def _publish(self, st: _Sent, gen: int) -> bool:
        msg = st.msg
        st.gen = gen
        st.attempts += 1
        self._inflight += 1
        ok = self.transport.publish(
            msg.topic, msg.payload, 1, False, content_type=msg.content_type, on_ack=functools.partial(self._on_ack, gen, msg.seq)
        )
        if not ok:
            self._inflight -= 1
            st.attempts -= 1
            self._set_due(st, time.monotonic())  # disconnected: publish again on the next connection
            return False
        self.published += 1
        return True
