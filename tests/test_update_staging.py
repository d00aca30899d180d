"""A bundle arriving in chunks (as the signed MQTT update command will deliver it) is checked, assembled and installed."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from lifecycle_support import Reader, RecordingControl, make_reader

from firmware_py.update.errors import BundleError
from firmware_py.update.staging import Staging

CHUNK = 256 << 10


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def reader(tmp_path: Path, grace_hopper_path: Path) -> Reader:
    return make_reader(tmp_path / "reader", grace_hopper_path)


def test_chunks_in_any_order_with_resends_assemble_and_install(reader: Reader) -> None:
    data = reader.bundle("0.2.0").read_bytes()
    staging = Staging(reader.data / "update" / "incoming")
    staging.begin("t1", len(data), sha(data), CHUNK)
    parts = list(enumerate(chunks(data)))
    assert len(parts) > 2
    random.Random(7).shuffle(parts)
    for i, part in parts[:-1]:
        staging.stage_chunk("t1", i, part, sha(part))
    staging.stage_chunk("t1", parts[0][0], parts[0][1], sha(parts[0][1]))  # a resend is harmless
    assert staging.missing("t1") == [parts[-1][0]]
    with pytest.raises(BundleError, match="still lacks 1 chunk"):
        staging.complete("t1")
    staging.stage_chunk("t1", parts[-1][0], parts[-1][1], sha(parts[-1][1]))
    bundle = staging.complete("t1")
    assert bundle.read_bytes() == data
    assert (staging.dir / "READY").read_text().strip() == "t1.bundle"

    control = RecordingControl()
    outcome = reader.updater(control).apply_staged(staging.dir)  # what kaoclock-update.service runs
    assert outcome.action == "committed" and outcome.version == "0.2.0"
    assert not bundle.exists() and not (staging.dir / "READY").exists()
    assert reader.updater().apply_staged(staging.dir).action == "nothing"


def test_corrupt_chunks_and_a_wrong_total_are_refused(reader: Reader) -> None:
    data = reader.bundle("0.2.0").read_bytes()
    staging = Staging(reader.data / "update" / "incoming")
    staging.begin("t2", len(data), sha(data), CHUNK)
    first = chunks(data)[0]
    with pytest.raises(BundleError, match="does not match its sha256"):
        staging.stage_chunk("t2", 0, first[:-1] + b"X", sha(first))
    with pytest.raises(BundleError, match="is 10 bytes, expected"):
        staging.stage_chunk("t2", 0, b"0123456789", sha(b"0123456789"))
    with pytest.raises(BundleError, match="outside 0"):
        staging.stage_chunk("t2", 10_000, first, sha(first))
    with pytest.raises(BundleError, match="not 1-64 letters"):
        staging.begin("../../etc", len(data), sha(data), CHUNK)

    # Every chunk intact, but the announced total hash is another file's: refused at completion.
    staging.begin("t3", len(data), sha(b"another bundle"), CHUNK)
    for i, part in enumerate(chunks(data)):
        staging.stage_chunk("t3", i, part, sha(part))
    with pytest.raises(BundleError, match="assembled file has sha256"):
        staging.complete("t3")
    assert not (staging.dir / "READY").exists()


def test_a_staged_bundle_with_a_bad_signature_is_refused_and_removed(reader: Reader) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = reader.bundle("0.2.0", key=Ed25519PrivateKey.generate()).read_bytes()
    staging = Staging(reader.data / "update" / "incoming")
    staging.begin("t4", len(data), sha(data), CHUNK)
    for i, part in enumerate(chunks(data)):
        staging.stage_chunk("t4", i, part, sha(part))
    bundle = staging.complete("t4")
    with pytest.raises(BundleError, match="signed by release key"):
        reader.updater().apply_staged(staging.dir)
    assert not bundle.exists() and reader.link("current") == "a"


def test_a_staged_bundle_the_updater_refuses_is_recorded_and_reported_by_the_daemon(reader: Reader) -> None:
    from firmware_py.events import EventBus
    from firmware_py.update.remote import UpdateReporter

    bus = EventBus()
    events: list = []
    bus.subscribe(events.append)
    reporter = UpdateReporter(reader.data / "update", reader.data / "update_reported.json", bus)
    assert reporter.report() == [] and events == []  # the first start reports nothing old
    data = reader.bundle("0.0.5").read_bytes()  # validly signed, but older than what runs
    staging = Staging(reader.data / "update" / "incoming")
    staging.begin("old", len(data), sha(data), CHUNK)
    for i, part in enumerate(chunks(data)):
        staging.stage_chunk("old", i, part, sha(part))
    staging.complete("old")
    with pytest.raises(Exception, match="older than the running"):
        reader.updater().apply_staged(staging.dir)
    assert reader.link("current") == "a" and list(staging.dir.iterdir()) == []
    (entry,) = reporter.report()
    assert entry["event"] == "staged-refused" and "older than the running" in entry["reason"]
    assert [(e.type, e.severity) for e in events] == [("update.failed", "fault")]
    assert reporter.report() == []  # once
    # A history that moved on past the marker (30 entries kept): only the latest outcome is reported.
    state = json.loads((reader.data / "update" / "state.json").read_text())
    state["history"] = [
        {"time": "2026-01-01T00:00:00Z", "event": "switched", "slot": "b", "version": "9.0"},
        {"time": "2026-01-01T00:00:01Z", "event": "rolled-back", "slot": "b", "version": "9.0", "to_slot": "a", "reason": "camera"},
    ]
    (reader.data / "update" / "state.json").write_text(json.dumps(state))
    (entry,) = reporter.report()
    assert entry["event"] == "rolled-back" and events[-1].type == "update.rolled_back" and events[-1].data["reason"] == "camera"


def test_the_reporter_reports_an_outcome_recorded_while_the_daemon_runs(tmp_path: Path) -> None:
    # A trial's commit is recorded after the new release started (its health check passed): the running daemon reports it.
    import time

    from firmware_py.events import EventBus
    from firmware_py.update.remote import UpdateReporter
    from firmware_py.update.state import StateFile

    statefile = StateFile(tmp_path / "update")
    st = statefile.load()
    st.note("switched", slot="b", version="0.2.0")
    statefile.save(st)
    bus = EventBus()
    events: list = []
    bus.subscribe(events.append)
    reporter = UpdateReporter(tmp_path / "update", tmp_path / "update_reported.json", bus, poll_s=0.05)
    reporter.start()
    try:
        time.sleep(0.2)
        assert events == []  # nothing new since the start
        st.note("committed", slot="b", version="0.2.0")
        statefile.save(st)
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        reporter.stop()
    assert [(e.type, e.data["version"]) for e in events] == [("update.committed", "0.2.0")]  # once
    assert reporter._thread is None
