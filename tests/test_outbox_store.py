"""The outbox: durable, ordered, bounded with a high-water alarm, refusing (never dropping) when full."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from firmware_py.events import EventBus
from firmware_py.outbox.store import Outbox, OutboxError, OutboxFull, OutMessage


def msg(i: int) -> OutMessage:
    return OutMessage(f"id-{i}", "kaoclock/v1/s/d/punch", f"payload-{i}".encode())


def test_wal_full_sync_order_and_delivery(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    assert ob._w.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ob._w.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: the commit is fsynced
    seqs = [ob.enqueue(msg(i)) for i in range(10)]
    assert seqs == sorted(seqs)
    assert [m.id for m in ob.pending(0, 100)] == [f"id-{i}" for i in range(10)]
    assert [m.id for m in ob.pending(seqs[4], 3)] == ["id-5", "id-6", "id-7"]
    assert ob.mark_delivered(seqs[:4]) == 4
    assert ob.depth() == 6
    # Another process sees exactly what was committed.
    other = sqlite3.connect(tmp_path / "o.sqlite")
    assert other.execute("SELECT count(*) FROM messages").fetchone()[0] == 6
    ob.close()
    ob = Outbox(tmp_path / "o.sqlite")
    assert ob.depth() == 6 and ob.pending(0, 1)[0].id == "id-4"
    # Sequence numbers are never reused, even after the table empties.
    ob.mark_delivered([m.seq for m in ob.pending(0, 100)])
    assert ob.enqueue(msg(99)) > seqs[-1]


def test_duplicate_id_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    bus = EventBus()
    events = []
    bus.subscribe(events.append)
    ob = Outbox(tmp_path / "o.sqlite", bus=bus)
    ob.enqueue(msg(1))
    with pytest.raises(OutboxError, match="could not be stored durably"):
        ob.enqueue(msg(1))
    assert ob.depth() == 1 and [e.type for e in events] == ["outbox.store_failed"]


def test_high_water_full_and_back_to_normal(tmp_path: Path) -> None:
    bus = EventBus()
    events = []
    bus.subscribe(events.append)
    ob = Outbox(tmp_path / "o.sqlite", capacity=100, high_water=0.5, bus=bus)
    for i in range(49):
        ob.enqueue(msg(i))
    assert events == []
    ob.enqueue(msg(49))
    assert [(e.type, e.severity) for e in events] == [("outbox.high_water", "alarm")]
    assert events[0].data == {"depth": 50, "capacity": 100, "high_water": 50}
    for i in range(50, 100):
        ob.enqueue(msg(i))
    with pytest.raises(OutboxFull, match="nothing queued was dropped"):
        ob.enqueue(msg(100))
    assert events[-1].type == "outbox.full" and events[-1].severity == "fault"
    assert ob.depth() == 100 and ob.pending(0, 1)[0].id == "id-0"  # the oldest is still there
    assert ob.stats().high_water_active
    ob.mark_delivered([m.seq for m in ob.pending(0, 76)])
    assert events[-1].type == "outbox.normal" and not ob.stats().high_water_active
    ob.enqueue(msg(100))  # room again
    # Re-opened above high water: the alarm is raised again at start.
    ob.close()
    events.clear()
    Outbox(tmp_path / "o.sqlite", capacity=40, high_water=0.5, bus=bus)
    assert [e.type for e in events] == ["outbox.high_water"]


def test_corrupt_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(OutboxError, match="Nothing was deleted"):
        Outbox(path)
    assert path.read_bytes() == before
