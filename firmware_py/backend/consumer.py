"""The reference consumer: MQTT 5 shared subscription, verify, de-duplicate, store.

Several consumers started with the same ``group`` split the punches between
them (``$share/<group>/kaoclock/v1/+/+/punch``).  A message is acknowledged
only after its outcome is in the database (manual acknowledgement), and the
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
    ) -> None:
        self.store = store
        self.receipt_key = receipt_key
        self.receipts: ReceiptPublisher | None = None
        self.registry = registry
        self.prefix = prefix
        self.on_outcome = on_outcome
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.link: MqttLink | None = None

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Verify one message and record its outcome (raises only on database errors)."""
        try:
            p = verify_punch(topic, payload, self.registry, self.prefix)
        except PunchRejected as exc:
            pid = exc.claims.get("id") if exc.claims and isinstance(exc.claims.get("id"), str) else None
            self.store.add_reject(topic, exc.reason, exc.detail, payload, pid)
            out = Outcome("rejected", exc.reason, pid, topic, exc.detail)
        else:
            status = self.store.add(p, topic)
            if status == "conflict":
                out = Outcome("rejected", "id_conflict", p.claims["id"], topic, "a different punch with this id is already stored")
            else:
                out = Outcome(status, None, p.claims["id"], topic)
                # After the commit, and only then: the receipt that lets the reader delete the punch.
                if self.receipts is not None:
                    self.receipts.confirm(p.claims["site"], p.claims["device"], [p.claims["id"]])
        with self._lock:
            self.counts[out.status] += 1
        if out.status == "rejected":
            log.warning("punch rejected on %s: %s: %s", topic, out.reason, out.detail)
        if self.on_outcome is not None:
            self.on_outcome(out)
        return out

    def _on_message(self, topic: str, payload: bytes, _props: Any) -> bool:
        try:
            self.handle(topic, payload)
        except sqlite3.Error:
            log.exception("punch store failed; the message stays unacknowledged and will be delivered again")
            return False
        return True

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
        link.subscribe(f"$share/{group}/{flt}" if shared else flt, self._on_message, qos=1)
        if self.receipt_key is not None:
            self.receipts = ReceiptPublisher(link, self.receipt_key, prefix=self.prefix)
            self.receipts.start()
            link.before_disconnect(lambda _l: self.receipts.flush() if self.receipts is not None else None)
        link.start()
        self.link = link
        return link

    def stop(self) -> None:
        """Publish the receipts still buffered, then disconnect."""
        if self.receipts is not None:
            self.receipts.stop()
        if self.link is not None:
            self.link.stop()
