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

The order for each message is: verify, store in one transaction (commit),
then :attr:`PunchConsumer.after_commit` with the outcome, then acknowledge.
``after_commit`` is the single place for work that must follow the commit
(for example a signed receipt to the reader); it sees ``stored`` and
``duplicate`` outcomes, since a reader that missed the first receipt sends
the punch again.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware_py.backend.db import StoreUnavailable
from firmware_py.backend.registry import DbDeviceRegistry, DeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.backend.verify import PunchRejected, verify_punch
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


class PunchConsumer:
    """Verifies and stores punch messages; :meth:`handle` is the whole logic, the rest is MQTT."""

    def __init__(
        self,
        store: PunchStore,
        registry: DeviceRegistry | DbDeviceRegistry,
        *,
        prefix: str = PREFIX,
        on_outcome: Callable[[Outcome], None] | None = None,
        after_commit: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.prefix = prefix
        self.on_outcome = on_outcome
        self.after_commit = after_commit
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.link: MqttLink | None = None

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Verify one message and record its outcome in one committed transaction.

        Raises :class:`~firmware_py.backend.db.StoreUnavailable` when the
        database cannot take it (nothing is then stored or acknowledged).
        """
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
        with self._lock:
            self.counts[out.status] += 1
        if self.after_commit is not None and out.status in ("stored", "duplicate"):
            try:
                self.after_commit(out)
            except Exception:  # stored is stored: a failing follow-up must not cause a redelivery loop
                log.exception("after_commit failed for punch %s", out.id)
        if out.status == "rejected":
            log.warning("punch rejected on %s: %s: %s", topic, out.reason, out.detail)
        if self.on_outcome is not None:
            self.on_outcome(out)
        return out

    def _on_message(self, topic: str, payload: bytes, _props: Any) -> bool:
        try:
            self.handle(topic, payload)
        except StoreUnavailable as exc:
            with self._lock:
                self.counts["unavailable"] += 1
            log.error("punch store unavailable (%s); the message stays unacknowledged and will be delivered again", exc)
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
        link.start()
        self.link = link
        return link
