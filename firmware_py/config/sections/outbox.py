"""[outbox]: the durable queue of punches waiting for the backend's receipt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class OutboxConfig(Section):
    """Durable outbox (SQLite, WAL, synced): punches wait here until the backend's signed receipt says they are stored."""

    path: Path | None = setting(None, doc="SQLite file of the outbox; unset = <data_dir>/outbox.sqlite.")
    capacity: int = setting(
        200000,
        ge=100,
        le=10000000,
        doc="Most messages kept. When full, new punches are refused (the gate shows a fault); queued ones are never dropped.",
    )
    high_water: float = setting(0.8, gt=0, le=1, doc="Fraction of capacity at which the outbox.high_water alarm is raised.")
    receipt_timeout_s: float = setting(
        30.0, ge=0.1, le=3600, doc="Publish a punch again when no receipt came this long after its PUBACK; doubles per attempt."
    )
    resend_max_s: float = setting(600.0, ge=0.1, le=86400, doc="Longest wait between two publishes of an unreceipted punch.")
    retention_s: float = setting(
        86400.0,
        ge=1,
        le=31536000,
        doc="A punch unconfirmed this long raises outbox.high_water and the retained status flag unconfirmed_since; it is kept, never deleted.",
    )
