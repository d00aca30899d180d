"""[outbox]: the durable queue of punches waiting for the broker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class OutboxConfig(Section):
    """Durable outbox (SQLite, WAL, synced): punches wait here until the broker acknowledges them."""

    path: Path | None = setting(None, doc="SQLite file of the outbox; unset = <data_dir>/outbox.sqlite.")
    capacity: int = setting(
        200000,
        ge=100,
        le=10000000,
        doc="Most messages kept. When full, new punches are refused (the gate shows a fault); queued ones are never dropped.",
    )
    high_water: float = setting(0.8, gt=0, le=1, doc="Fraction of capacity at which the outbox.high_water alarm is raised.")
