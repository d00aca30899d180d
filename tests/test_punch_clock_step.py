"""Punch ids and ts stay ordered across a restart after the clock stepped backwards, and the punch says the clock is off."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import firmware_py.punch.ids as ids
from firmware_py.decision.outcome import Decision
from firmware_py.keys.jws import peek
from firmware_py.outbox.store import Outbox
from firmware_py.punch.recorder import SignedPunchRecorder


def claims_of(outbox: Outbox) -> list[dict]:
    return [peek(m.payload)[1] for m in outbox.pending(0, 100)]


def test_restart_after_a_backward_clock_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    now = time.time()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    rec = SignedPunchRecorder(outbox, key, site="s", device="d", clock_synced=lambda: True)
    rec.record(Decision(True, "match", 1, person_id="emp-1", ts=now), "in")
    outbox.close()
    # Restart: a fresh process (no memory of the last id) whose clock is an hour behind.
    monkeypatch.setattr(ids, "_last_ms", -1)
    monkeypatch.setattr(ids.time, "time", lambda: now - 3600)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    rec = SignedPunchRecorder(outbox, key, site="s", device="d", clock_synced=lambda: True)
    rec.record(Decision(True, "match", 2, person_id="emp-2", ts=now - 3600), "out")
    first, second = claims_of(outbox)
    assert second["id"] > first["id"]  # UUIDv7 strings sort by time
    assert second["ts"] >= first["ts"] and second["seq"] == first["seq"] + 1
    assert first["clock_synced"] is True and second["clock_synced"] is False  # honest: the clock is behind
    outbox.close()
