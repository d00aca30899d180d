"""The backend side of end-to-end receipts (see firmware_py/mqtt/receipts.py for the contract).

:meth:`ReceiptPublisher.confirm` is called *after* the database commit of
the punches it names.  Ids are collected per device and published as one
signed receipt every ``interval_s`` (or at ``batch`` ids), QoS 1.  A receipt
that never goes out (the consumer dies, the broker is down) costs only a
resend: the reader publishes the punch again, the store reports it as a
duplicate, and the duplicate is confirmed too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.keys.jws import RECEIPT_TYP, sign
from firmware_py.mqtt.link import MqttLink
from firmware_py.mqtt.receipts import MAX_RECEIPT_IDS, receipt_claims
from firmware_py.punch.ids import uuid7
from firmware_py.topics import PREFIX, Topics
from firmware_py.worker import Worker

log = logging.getLogger(__name__)

MAX_BUFFERED = 100_000  # ids waiting for a connection; beyond this the oldest are forgotten (the reader resends them)


class ReceiptPublisher(Worker):
    """Batches confirmed punch ids per device and publishes signed receipts."""

    thread_name = "receipts"

    def __init__(self, link: MqttLink, key: Ed25519PrivateKey, *, prefix: str = PREFIX, interval_s: float = 0.02, batch: int = 500) -> None:
        super().__init__()
        self.link, self.key, self.prefix = link, key, prefix
        self.interval_s = interval_s
        self.batch = max(1, min(batch, MAX_RECEIPT_IDS))
        self._pending: dict[tuple[str, str], list[str]] = {}
        self._count = 0
        self._lock = threading.Lock()
        self.published = 0  # receipts handed to the broker

    def confirm(self, site: str, device: str, ids: Iterable[str]) -> None:
        """Say that these punches of ``site``/``device`` are committed (call after the commit)."""
        with self._lock:
            lst = self._pending.setdefault((site, device), [])
            for i in ids:
                lst.append(i)
                self._count += 1
            if self._count > MAX_BUFFERED:
                self._drop_oldest()
            full = len(lst) >= self.batch
        if full:
            self._wake.set()

    def _drop_oldest(self) -> None:
        excess = self._count - MAX_BUFFERED
        for lst in self._pending.values():
            n = min(excess, len(lst))
            del lst[:n]
            self._count -= n
            excess -= n
            if excess <= 0:
                break
        log.warning("receipt buffer full while offline: the oldest confirmations are forgotten (readers resend those punches)")

    def _after_stop(self) -> None:
        self.flush()

    def flush(self) -> int:
        """Publish every buffered confirmation now; returns how many receipts went out."""
        with self._lock:
            work, self._pending, self._count = self._pending, {}, 0
        sent = 0
        keep: dict[tuple[str, str], list[str]] = {}
        for (site, device), ids in work.items():
            topic = Topics(site, device, self.prefix).receipts
            for i in range(0, len(ids), self.batch):
                chunk = ids[i : i + self.batch]
                token = sign(receipt_claims(site, device, chunk, receipt_id=str(uuid7()), iat=int(time.time())), self.key, RECEIPT_TYP)
                if self.link.publish(topic, token, 1, False, content_type="application/jose"):
                    sent += 1
                else:  # offline: keep them for the next connection
                    keep.setdefault((site, device), []).extend(ids[i:])
                    break
        if keep:
            for k, ids in keep.items():
                self.confirm(*k, ids)
        self.published += sent
        return sent

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._count:
                try:
                    self.flush()
                except Exception:
                    log.exception("publishing receipts failed; the readers will resend")
