"""The reference consumer: MQTT 5 shared subscription, verify, de-duplicate, store.

Several consumers started with the same ``group`` split the punches between
them (``$share/<group>/kaoclock/v1/+/+/punch``).  A message is acknowledged
only after its outcome is in the database (manual acknowledgement), and the
session is persistent, so punches published while every consumer is down
wait in the broker; a database that is down or read-only leaves the message
unacknowledged and reconnects, so the broker delivers it again (to this or
another consumer of the group).  Any number of consumers may write into one
PostgreSQL database: the insert is idempotent by punch id, so a redelivery
after a consumer crash (stored, not yet acknowledged) is a ``duplicate``.

The order is: verify, store in one transaction (commit), then the signed
receipts and :attr:`PunchConsumer.after_commit` with the outcomes of that
transaction, then acknowledge each message.  Both get the ``stored`` and
``duplicate`` outcomes, since a reader that missed the first receipt sends
the punch again.

Given the backend's key, the consumer publishes a signed receipt for every
punch it has committed; only that receipt lets the reader delete the punch
from its outbox (firmware_py/mqtt/receipts.py).  The session is persistent
(MQTT 5 session expiry ``session_expiry_s``, one day by default): punches
published while the consumer is away wait in the broker for that long, and
the readers resend every unreceipted punch anyway, so an expired session
costs time, never a punch.  The link subscribes on every connection, resumed
session or not: mosquitto 2.0.11 forgets a durable session's ``$share``
subscriptions on a restart, and only a new SUBSCRIBE brings the punches back.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.backend.db import StoreUnavailable
from firmware_py.backend.fleet import FleetRecorder
from firmware_py.backend.receipts import ReceiptPublisher
from firmware_py.backend.registry import DbDeviceRegistry, DeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.backend.verify import PunchRejected, VerifiedPunch, verify_punch
from firmware_py.mqtt.link import BrokerUrl, LinkSettings, MqttLink, TlsFiles
from firmware_py.topics import PREFIX, fleet_filter

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
    """Verifies and stores punch messages; :meth:`handle_batch` is the whole logic, the rest is MQTT.

    Messages wait in a queue for one worker thread, which stores whatever has
    arrived (up to ``batch_max``) in one transaction and then acknowledges
    each message in arrival order: batches grow by themselves when the
    database is the bottleneck and stay at one message when it is not.
    """

    def __init__(
        self,
        store: PunchStore,
        registry: DeviceRegistry | DbDeviceRegistry,
        *,
        prefix: str = PREFIX,
        on_outcome: Callable[[Outcome], None] | None = None,
        after_commit: Callable[[list[Outcome]], None] | None = None,
        batch_max: int = 200,
        receipt_key: Ed25519PrivateKey | None = None,
        fleet: FleetRecorder | None = None,
    ) -> None:
        self.store = store
        self.fleet = fleet  # also stores the readers' status, telemetry and events when given
        self.registry = registry
        self.prefix = prefix
        self.on_outcome = on_outcome
        self.after_commit = after_commit
        self.receipt_key = receipt_key
        self.receipts: ReceiptPublisher | None = None
        self.batch_max = batch_max
        self.counts: Counter[str] = Counter()
        self.batches: Counter[int] = Counter()  # batch size -> how many (for the bench)
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, bytes, Callable[[bool], None]]] = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.link: MqttLink | None = None

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Verify and store one message (one transaction); see :meth:`handle_batch`."""
        return self.handle_batch([(topic, payload)])[0]

    def handle_batch(self, messages: list[tuple[str, bytes]]) -> list[Outcome]:
        """Verify messages and record their outcomes in one committed transaction, then call ``after_commit``.

        Raises :class:`~firmware_py.backend.db.StoreUnavailable` when the
        database cannot take them: nothing of the batch is then stored, and
        the caller must not acknowledge any of it.
        """
        outcomes: list[Outcome | None] = [None] * len(messages)
        punches: list[tuple[int, VerifiedPunch, str]] = []
        rejects: list[tuple[str, str, str, bytes, str | None]] = []
        for i, (topic, payload) in enumerate(messages):
            try:
                punches.append((i, verify_punch(topic, payload, self.registry, self.prefix), topic))
            except PunchRejected as exc:
                pid = exc.claims.get("id") if exc.claims and isinstance(exc.claims.get("id"), str) else None
                rejects.append((topic, exc.reason, exc.detail, payload, pid))
                outcomes[i] = Outcome("rejected", exc.reason, pid, topic, exc.detail)
        statuses = self.store.add_batch([(p, topic) for _, p, topic in punches], rejects)
        # ---- committed: everything below runs only for what is in the database ----
        for (i, p, topic), status in zip(punches, statuses, strict=True):
            if status == "conflict":
                outcomes[i] = Outcome("rejected", "id_conflict", p.claims["id"], topic, "a different punch with this id is already stored")
            else:
                outcomes[i] = Outcome(status, None, p.claims["id"], topic, site=p.claims["site"], device=p.claims["device"])
        done = [o for o in outcomes if o is not None]
        with self._lock:
            self.counts.update(o.status for o in done)
            self.batches[len(messages)] += 1
        kept = [o for o in done if o.status in ("stored", "duplicate")]
        if self.receipts is not None:
            # After the commit, and only then: the receipts that let the readers delete these punches.
            for o in kept:
                if o.id and o.site and o.device:
                    self.receipts.confirm(o.site, o.device, [o.id])
        if self.after_commit is not None and kept:
            try:
                self.after_commit(kept)
            except Exception:  # stored is stored: a failing follow-up must not cause a redelivery loop
                log.exception("after_commit failed for %d punch(es)", len(kept))
        for o in done:
            if o.status == "rejected":
                log.warning("punch rejected on %s: %s: %s", o.topic, o.reason, o.detail)
            if self.on_outcome is not None:
                self.on_outcome(o)
        return done

    def _on_message(self, topic: str, payload: bytes, _props: Any, settle: Callable[[bool], None]) -> None:
        self._queue.put((topic, payload, settle))

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < self.batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.handle_batch([(t, p) for t, p, _ in batch])
            except StoreUnavailable as exc:
                with self._lock:
                    self.counts["unavailable"] += len(batch)
                log.error("punch store unavailable (%s); %d message(s) stay unacknowledged and will be delivered again", exc, len(batch))
                for _, _, settle in batch:
                    settle(False)
                continue
            except Exception:
                log.exception("storing %d message(s) failed; they stay unacknowledged", len(batch))
                for _, _, settle in batch:
                    settle(False)
                continue
            for _, _, settle in batch:
                settle(True)

    def _flush_receipts(self, _link: MqttLink) -> None:
        if self.receipts is not None:
            self.receipts.flush()

    def stop(self) -> None:
        """Stop the worker (a batch being stored is finished first), publish the receipts still buffered, then disconnect."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(10)
        if self.receipts is not None:
            self.receipts.stop()
        if self.link is not None:
            self.link.stop()

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
        """Start consuming; returns the running link (stop with :meth:`stop`)."""
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
            receive_maximum=max(20, 2 * self.batch_max),
        )
        flt = fleet_filter("punch", self.prefix, site)
        link = MqttLink(settings)
        link.subscribe(f"$share/{group}/{flt}" if shared else flt, self._on_message, qos=1, deferred_ack=True)
        if self.fleet is not None:
            self.fleet.attach(link, group=group, shared=shared, site=site)
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="punch-store", daemon=True)
        self._worker.start()
        if self.receipt_key is not None:
            self.receipts = ReceiptPublisher(link, self.receipt_key, prefix=self.prefix)
            self.receipts.start()
            link.before_disconnect(self._flush_receipts)
        link.start()
        self.link = link
        return link
