"""The gate on MockFactory pins with a real SQLite punch recorder: ordering, faults, rejects, card policies."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from firmware_py.compose.gate_edge import GateEdge
from firmware_py.config import Config, with_changes
from firmware_py.decision.outcome import Decision, Direction
from firmware_py.events import Event, EventBus
from firmware_py.gate.card_store import CARD_DB, CardStore


class SqliteRecorder:
    """A small real punch recorder: one committed, fsynced row per punch.

    While it stores a punch it also notes what the relay and the feedback
    showed, so a test can show that nothing was signalled before the
    punch was durable.
    """

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE IF NOT EXISTS punches (id INTEGER PRIMARY KEY, person TEXT, direction TEXT, method TEXT, ts REAL)")
        db.commit()
        db.close()
        self.read_only = read_only
        self.edge: GateEdge | None = None
        self.seen_while_recording: list[tuple[bool, str]] = []

    def record(self, decision: Decision, direction: Direction) -> str:
        if self.edge is not None:
            self.seen_while_recording.append((self.edge.devices.relay.pin.state, self.edge.feedback.state))
        uri = f"file:{self.path}?mode={'ro' if self.read_only else 'rw'}"
        db = sqlite3.connect(uri, uri=True)
        try:
            db.execute("PRAGMA synchronous=FULL")
            with db:
                cur = db.execute(
                    "INSERT INTO punches (person, direction, method, ts) VALUES (?, ?, ?, ?)",
                    (decision.person_id, direction, decision.method, decision.ts),
                )
            return f"p{cur.lastrowid}"
        finally:
            db.close()

    def rows(self) -> list[tuple[str, str, str]]:
        db = sqlite3.connect(self.path)
        try:
            return db.execute("SELECT person, direction, method FROM punches ORDER BY id").fetchall()
        finally:
            db.close()


def accept(person: str = "p-001", **kw: object) -> Decision:
    return Decision(accepted=True, reason="match", track_id=1, person_id=person, distance=0.3, threshold=0.5, **kw)  # type: ignore[arg-type]


def reject(reason: str, person: str | None = None) -> Decision:
    return Decision(accepted=False, reason=reason, track_id=2, person_id=person)  # type: ignore[arg-type]


class Gate:
    def __init__(self, tmp_path: Path, changes: dict[str, object], read_only: bool = False) -> None:
        base: dict[str, object] = {"device.data_dir": str(tmp_path), "door.pulse_s": 0.3, "direction.mode": "fixed-in", "feedback.result_s": 0.5}
        self.cfg = with_changes(Config(), {**base, **changes})
        self.bus = EventBus()
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.recorder = SqliteRecorder(tmp_path / "punches.sqlite", read_only)
        self.edge = GateEdge.from_config(self.cfg, self.bus, self.recorder, pin_factory=MockFactory(revision="c03114"), card_reader=False)
        self.recorder.edge = self.edge
        d = self.edge.devices
        d.door_contact.pin.drive_low()
        d.tamper.pin.drive_low()
        self.edge.start()
        self.relay = d.relay.pin
        self.relay.clear_states()

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def pulses(self) -> int:
        return sum(1 for s in self.relay.states[1:] if s.state)

    def settle(self) -> None:
        assert self.edge.controller.idle()


@pytest.fixture
def gate(tmp_path: Path):
    made: list[Gate] = []

    def make(changes: dict[str, object] | None = None, read_only: bool = False) -> Gate:
        made.append(Gate(tmp_path, changes or {}, read_only))
        return made[-1]

    yield make
    for g in made:
        g.edge.stop()


def test_on_decision_never_blocks_the_recognition_loop(gate) -> None:
    g = gate({"direction.mode": "buttons", "direction.press_after_s": 0.5, "direction.no_press": "reject"})
    t = time.monotonic()
    g.edge.controller.on_decision(accept())  # the gate will now wait 0.5 s for a button
    g.edge.controller.on_decision(accept("p-002"))
    assert time.monotonic() - t < 0.1


def test_accept_stores_the_punch_before_door_and_green(gate) -> None:
    g = gate()
    at_grant: list[list[tuple[str, str, str]]] = []
    g.bus.subscribe(lambda e: at_grant.append(g.recorder.rows()), "door.granted")
    g.edge.controller.on_decision(accept())
    g.settle()
    assert g.recorder.rows() == [("p-001", "in", "face")]
    assert at_grant == [[("p-001", "in", "face")]]  # the row was committed when the door opened
    assert g.recorder.seen_while_recording == [(False, "idle")]  # locked and not 'accepted' while storing
    assert g.pulses() == 1
    assert g.edge.feedback.state == "accepted"
    acc = next(e for e in g.events if e.type == "gate.accepted")
    assert acc.data == {"person_id": "p-001", "direction": "in", "punch_id": "p1", "method": "face"}


def test_failed_record_means_fault_and_no_door(gate) -> None:
    g = gate(read_only=True)  # a real SQLite refusal: "attempt to write a readonly database"
    g.edge.controller.on_decision(accept())
    g.settle()
    assert g.pulses() == 0 and g.edge.devices.relay.pin.state is False
    assert g.edge.feedback.state == "fault"
    failed = [e for e in g.events if e.type == "punch.record_failed"]
    assert failed and failed[0].severity == "fault" and "readonly" in failed[0].data["error"]
    assert "gate.accepted" not in g.types() and "door.granted" not in g.types()
    assert g.edge.controller.counts["record_failed"] == 1
    # Storage recovers: the next accept clears the fault it caused.
    g.recorder.read_only = False
    g.edge.controller.on_decision(accept())
    g.settle()
    assert g.pulses() == 1 and g.edge.feedback.conditions == {}


@pytest.mark.parametrize(
    ("reason", "state"),
    [
        ("unknown", "rejected_unknown"),
        ("ambiguous", "rejected_unknown"),
        ("spoof", "rejected_spoof"),
        ("cooldown", "rejected_cooldown"),
        ("low_quality", "rejected_other"),
        ("model_mismatch", "rejected_other"),
    ],
)
def test_rejects_show_their_reason_and_never_open(gate, reason: str, state: str) -> None:
    g = gate()
    g.edge.controller.on_decision(reject(reason, "p-001"))
    g.settle()
    assert g.edge.feedback.state == state
    assert g.pulses() == 0 and g.recorder.rows() == []


# ---------------------------------------------------------------- card policies


def cards(g: Gate, mapping: dict[str, str]) -> None:
    store = CardStore(g.cfg.device.data_dir / CARD_DB)
    for card, person in mapping.items():
        store.add(card, person)


def test_face_only_ignores_cards(gate) -> None:
    g = gate({"card_reader.device": "loop://"})
    cards(g, {"1234567890": "p-001"})
    g.edge.controller.on_card("1234567890")
    g.settle()
    assert "card.ignored" in g.types() and g.pulses() == 0


def test_card_fallback_needs_failed_face_attempts_first(gate) -> None:
    g = gate({"card_reader.device": "loop://", "card_reader.policy": "card-fallback", "card_reader.fallback_after": 2})
    cards(g, {"1234567890": "p-001"})
    c = g.edge.controller
    c.on_card("1234567890")  # straight to the card: refused
    g.settle()
    assert "card.refused" in g.types() and g.pulses() == 0
    c.on_decision(reject("unknown"))
    c.on_decision(reject("spoof"))  # an attack does not count as "the face did not work"
    c.on_card("1234567890")
    g.settle()
    assert g.pulses() == 0
    c.on_decision(reject("low_quality"))
    c.on_card(" 1234567890 ")
    g.settle()
    assert "gate.card_fallback_armed" in g.types()
    assert g.recorder.rows() == [("p-001", "in", "card")]
    assert g.pulses() == 1
    c.on_card("0000000000")  # unknown card
    g.settle()
    assert "card.unknown" in g.types()
    assert next(e for e in g.events if e.type == "card.unknown").data["card"] == "******0000"


def test_card_fallback_cooldown(gate) -> None:
    g = gate({"card_reader.device": "loop://", "card_reader.policy": "card-fallback", "card_reader.fallback_after": 1})
    cards(g, {"ABCD1234": "p-001"})
    c = g.edge.controller
    for _ in range(2):
        c.on_decision(reject("unknown"))
        c.on_card("abcd1234")
    g.settle()
    assert len(g.recorder.rows()) == 1
    assert "card.cooldown" in g.types()


def test_two_factor_face_then_card(gate) -> None:
    g = gate({"card_reader.device": "loop://", "card_reader.policy": "face+card"})
    cards(g, {"1111": "p-001", "2222": "p-002"})
    c = g.edge.controller
    c.on_decision(accept("p-001"))
    g.settle()
    assert g.edge.feedback.state == "present_card" and g.pulses() == 0 and g.recorder.rows() == []
    c.on_card("1111")
    g.settle()
    assert g.recorder.rows() == [("p-001", "in", "face+card")] and g.pulses() == 1


def test_two_factor_card_then_face(gate) -> None:
    g = gate({"card_reader.device": "loop://", "card_reader.policy": "face+card"})
    cards(g, {"1111": "p-001"})
    c = g.edge.controller
    c.on_card("1111")
    c.on_decision(accept("p-001"))
    g.settle()
    assert g.recorder.rows() == [("p-001", "in", "face+card")]


def test_two_factor_mismatch_is_refused(gate) -> None:
    g = gate({"card_reader.device": "loop://", "card_reader.policy": "face+card"})
    cards(g, {"2222": "p-002"})
    c = g.edge.controller
    c.on_decision(accept("p-001"))
    c.on_card("2222")  # somebody else's card
    g.settle()
    mm = [e for e in g.events if e.type == "card.mismatch"]
    assert mm and mm[0].data["card_person"] == "p-002" and mm[0].data["face_person"] == "p-001"
    assert g.pulses() == 0 and g.recorder.rows() == []


def test_two_factor_face_without_card_times_out(gate) -> None:
    g = gate({"card_reader.device": "loop://", "card_reader.policy": "face+card", "card_reader.two_factor_s": 2.0})
    g.edge.controller.on_decision(accept("p-001"))
    t = time.monotonic()
    while "gate.card_missing" not in g.types() and time.monotonic() - t < 5:
        time.sleep(0.05)
    assert "gate.card_missing" in g.types()
    assert g.edge.feedback.state == "rejected_other"
    assert g.pulses() == 0 and g.recorder.rows() == []


def test_bench_gate_prints_its_measurements(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from firmware_py.cli.main import main

    assert main(["bench", "gate", "--n", "5", "--dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 5 and out["dir"] == str(tmp_path)
    assert out["record_ms_p50"] > 0 and out["decision_to_relay_ms_p50"] >= out["record_ms_p50"]
    assert abs(out["pulse_s_measured"] - out["pulse_s_configured"]) < 0.2


def test_a_damaged_direction_file_is_a_fault_not_a_guess(gate, tmp_path: Path) -> None:
    g = gate({"direction.mode": "auto"})
    (tmp_path / "direction.sqlite").write_bytes(b"this is not a database" * 100)
    g.edge.controller.on_decision(accept())
    g.settle()
    assert "gate.direction_failed" in g.types() and g.edge.feedback.state == "fault"
    assert g.pulses() == 0 and g.recorder.rows() == []
