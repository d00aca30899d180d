"""The reference consumer: MQTT 5 shared subscription, verify, de-duplicate, store.

Several consumers started with the same ``group`` split the punches between
them (``$share/<group>/kaoclock/v1/+/+/punch``).  A message is acknowledged
only after its outcome is in the database (manual acknowledgement; the
messages that arrive while one batch is written are committed together, one
sync per batch, then acknowledged in arrival order), and the
session is persistent, so punches published while every consumer is down
wait in the broker; a database error leaves the message unacknowledged and
reconnects, so the broker delivers it again.

Given the backend's key, the consumer also publishes a signed receipt for
every punch it has committed (stored now, or already stored: a duplicate);
only that receipt lets the reader delete the punch from its outbox
(firmware_py/mqtt/receipts.py).  The session is persistent (MQTT 5 session
expiry ``session_expiry_s``, one day by default): punches published while
the consumer is away wait in the broker for that long, and the readers
resend every unreceipted punch anyway, so an expired session costs time,
never a punch.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.backend.receipts import ReceiptPublisher
from firmware_py.backend.registry import DeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.backend.verify import PunchRejected, verify_punch
from firmware_py.mqtt.link import BrokerUrl, LinkSettings, MqttLink, TlsFiles
from firmware_py.mqtt.topics import PREFIX, fleet_filter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: str  # stored | duplicate | rejected
    reason: str | None
    id: str | None
    topic: str
    detail: str = ""
    site: str | None = None
    device: str | None = None


class PunchConsumer:
    """Verifies and stores punch messages; :meth:`handle` is the whole logic, the rest is MQTT."""

    def __init__(
        self,
        store: PunchStore,
        registry: DeviceRegistry,
        *,
        prefix: str = PREFIX,
        on_outcome: Callable[[Outcome], None] | None = None,
        receipt_key: Ed25519PrivateKey | None = None,
        batch_max: int = 256,
    ) -> None:
        self.store = store
        self.batch_max = batch_max  # messages committed together (1: one commit per message, acknowledged in the handler)
        self._queue: queue.Queue[tuple[str, bytes, Callable[[bool], None]] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self.receipt_key = receipt_key
        self.receipts: ReceiptPublisher | None = None
        self.registry = registry
        self.prefix = prefix
        self.on_outcome = on_outcome
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.link: MqttLink | None = None

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Verify one message, store its outcome (committed) and confirm it (raises only on database errors)."""
        out = self._store_one(topic, payload)
        self._after_commit([out])
        return out

    def handle_batch(self, messages: list[tuple[str, bytes]]) -> list[Outcome]:
        """Like :meth:`handle` for several messages, committed together (one sync), confirmed after the commit."""
        with self.store.transaction():
            outs = [self._store_one(t, p) for t, p in messages]
        self._after_commit(outs)
        return outs

    def _store_one(self, topic: str, payload: bytes) -> Outcome:
        try:
            p = verify_punch(topic, payload, self.registry, self.prefix)
        except PunchRejected as exc:
            pid = exc.claims.get("id") if exc.claims and isinstance(exc.claims.get("id"), str) else None
            self.store.add_reject(topic, exc.reason, exc.detail, payload, pid)
            return Outcome("rejected", exc.reason, pid, topic, exc.detail)
        status = self.store.add(p, topic)
        if status == "conflict":
            return Outcome("rejected", "id_conflict", p.claims["id"], topic, "a different punch with this id is already stored")
        return Outcome(status, None, p.claims["id"], topic, site=p.claims["site"], device=p.claims["device"])

    def _after_commit(self, outs: list[Outcome]) -> None:
        for out in outs:
            # After the commit, and only then: the receipt that lets the reader delete the punch.
            if self.receipts is not None and out.status in ("stored", "duplicate") and out.id and out.site and out.device:
                self.receipts.confirm(out.site, out.device, [out.id])
            with self._lock:
                self.counts[out.status] += 1
            if out.status == "rejected":
                log.warning("punch rejected on %s: %s: %s", out.topic, out.reason, out.detail)
            if self.on_outcome is not None:
                self.on_outcome(out)

    def _on_message(self, topic: str, payload: bytes, _props: Any) -> bool:
        try:
            self.handle(topic, payload)
        except sqlite3.Error:
            log.exception("punch store failed; the message stays unacknowledged and will be delivered again")
            return False
        return True

    def _on_message_deferred(self, topic: str, payload: bytes, _props: Any, ack: Callable[[bool], None]) -> None:
        self._queue.put((topic, payload, ack))

    def _write_batches(self) -> None:
        """Group commit: what arrived while the last batch was written is verified, stored and committed
        together, then acknowledged in arrival order and confirmed by receipts."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.batch_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                self.handle_batch([(t, p) for t, p, _a in batch])
            except sqlite3.Error:
                log.exception("punch store failed; the batch stays unacknowledged and will be delivered again")
                for _t, _p, ack in batch:
                    ack(False)
                continue
            for _t, _p, ack in batch:
                ack(True)

    def connect(
        self,
        brokers: list[str],
        *,
        group: str = "kaoclock-backend",
        client_id: str = "kaoclock-backend",
        shared: bool = True,
        tls: TlsFiles | None = None,
        username: str | None = None,
        password: str | None = None,
        session_expiry_s: int = 86400,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        site: str = "+",
    ) -> MqttLink:
        """Start consuming; returns the running link (stop it with ``link.stop()``)."""
        settings = LinkSettings(
            brokers=[BrokerUrl.parse(b) for b in brokers],
            client_id=client_id,
            protocol="5",
            tls=tls or TlsFiles(),
            username=username,
            password=password,
            clean_start=False,
            session_expiry_s=session_expiry_s,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            manual_ack=True,
        )
        flt = fleet_filter("punch", self.prefix, site)
        link = MqttLink(settings)
        topic_filter = f"$share/{group}/{flt}" if shared else flt
        if self.batch_max > 1:
            self._writer = threading.Thread(target=self._write_batches, name="punch-writer", daemon=True)
            self._writer.start()
            link.subscribe_deferred(topic_filter, self._on_message_deferred, qos=1)
        else:
            link.subscribe(topic_filter, self._on_message, qos=1)
        if self.receipt_key is not None:
            self.receipts = ReceiptPublisher(link, self.receipt_key, prefix=self.prefix)
            self.receipts.start()
            link.before_disconnect(lambda _l: self.receipts.flush() if self.receipts is not None else None)
        link.start()
        self.link = link
        return link

    def stop(self) -> None:
        """Finish the batch being written, publish the receipts still buffered, then disconnect."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(10)
            self._writer = None
        if self.receipts is not None:
            self.receipts.stop()
        if self.link is not None:
            self.link.stop()
