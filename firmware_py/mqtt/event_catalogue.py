"""The event catalogue of the MQTT contract, and the events a decision becomes.

Every type a reader may publish on its events topic, with its severity and
the room that emits it.  The contract (mqtt/asyncapi.yaml, mqtt/README.md)
lists the same table; a test keeps them in step.  Consumers must accept
types they do not know: later rooms add theirs here.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_py.decision.outcome import Decision
from firmware_py.events import Event, EventBus, Severity


@dataclass(frozen=True)
class EventType:
    severity: Severity
    source: str
    data: str  # the keys of ``data``
    doc: str


CATALOGUE: dict[str, EventType] = {
    "decision.reject": EventType(
        "warning",
        "decision",
        "reason, detail, track_id, person_id, distance, threshold, frames",
        "a walk-up was rejected (ambiguous, cooldown, low_quality, timeout, model_mismatch)",
    ),
    "decision.unknown_face": EventType("info", "decision", "reason, detail, track_id, distance, threshold, frames", "a face matched nobody enrolled"),
    "decision.spoof_attempt": EventType(
        "alarm",
        "decision",
        "reason, detail, track_id, person_id, liveness{policy, score, threshold, cues, reason}",
        "liveness rejected the presentation (photo, screen, replay)",
    ),
    "punch.recorded": EventType("info", "punch", "id, seq, direction, ts", "a punch is durable in the outbox (the person is in the punch, not here)"),
    "outbox.high_water": EventType(
        "alarm",
        "outbox",
        "depth, capacity, high_water",
        "the outbox passed its high-water mark: the backend has not acknowledged punches for a while",
    ),
    "outbox.normal": EventType("info", "outbox", "depth, capacity", "the outbox fell below half its high-water mark again"),
    "outbox.full": EventType("fault", "outbox", "depth, capacity", "the outbox is full: new punches are refused (none queued is dropped)"),
    "outbox.store_failed": EventType("fault", "outbox", "error, path", "a punch could not be written durably (disk full, I/O error)"),
    "outbox.publish_refused": EventType(
        "fault", "outbox", "id, topic, reason, retry_in_s", "the broker refused a punch (MQTT 5 PUBACK error, e.g. not authorized); it stays queued"
    ),
    "outbox.drain_failed": EventType("fault", "outbox", "error", "the drainer hit a storage error; it retries"),
    "link.offline": EventType(
        "warning",
        "mqtt",
        "broker, error, queued",
        "the broker is unreachable; punches are queued (the 'offline' feedback state); published after the reconnect",
    ),
    "link.online": EventType("info", "mqtt", "broker, protocol, queued", "connected to a broker"),
    "command.executed": EventType("info", "mqtt", "id, cmd", "a signed command ran"),
    "command.refused": EventType("warning", "mqtt", "id, cmd, reason, detail", "a command was refused (see command_results for the reason codes)"),
    "camera.lost": EventType("fault", "capture", "source, error, retry_in_s", "the camera stopped delivering frames (once per outage)"),
    "camera.stalled": EventType("warning", "capture", "source, no_frame_for_s, retry_in_s", "no frame for a while; the camera is being reopened"),
    "camera.recovered": EventType("info", "capture", "source, outage_s, attempts", "frames flow again"),
    "camera.no_face": EventType("warning", "telemetry", "since, idle_s", "no face seen for [telemetry] no_face_alarm_s (camera blocked or moved?)"),
    "gate.accepted": EventType("info", "gate", "person_id, direction, punch_id, method", "the door was released for a recorded punch"),
    "punch.record_failed": EventType("fault", "gate", "person_id, direction, error", "a punch could not be stored: no green, no door"),
    "card.unknown": EventType("warning", "gate", "card (masked)", "a card nobody is enrolled with"),
    "card.mismatch": EventType("alarm", "gate", "card (masked), card_person, face_person", "card and face belong to different people"),
    "door.held_open": EventType("alarm", "gpio", "open_s, limit_s", "the door contact shows the door open too long"),
    "door.forced_open": EventType("alarm", "gpio", "-", "the door opened without a grant"),
    "tamper": EventType("alarm", "gpio", "state", "the tamper input fired (the housing was opened)"),
    "tamper.cleared": EventType("info", "gpio", "state", "the tamper input is closed again"),
    "console.locked_out": EventType("alarm", "serial", "failures, seconds", "too many failed logins on the technician console"),
    "console.config_changed": EventType("warning", "serial", "key, value", "a technician changed the configuration on the console"),
}


def decision_event(decision: Decision) -> Event | None:
    """The catalogue event for a rejected decision (None for an accept: its punch is the record)."""
    if decision.accepted:
        return None
    data = {
        "reason": decision.reason,
        "detail": decision.detail,
        "track_id": decision.track_id,
        "person_id": decision.person_id,
        "distance": decision.distance,
        "threshold": decision.threshold,
        "frames": decision.frames,
    }
    if decision.reason == "spoof":
        lv = decision.liveness
        data["liveness"] = (
            {"policy": lv.policy, "score": lv.score, "threshold": lv.threshold, "cues": dict(lv.cues), "reason": lv.reason} if lv else None
        )
        return Event("decision.spoof_attempt", "alarm", data, decision.ts)
    if decision.reason == "unknown":
        data.pop("person_id")  # no candidate is worth naming for an unknown face
        return Event("decision.unknown_face", "info", data, decision.ts)
    return Event("decision.reject", "warning", data, decision.ts)


class DecisionEvents:
    """A :class:`~firmware_py.decision.ports.DecisionSink` that emits the catalogue event of every reject."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def on_decision(self, decision: Decision) -> None:
        event = decision_event(decision)
        if event is not None:
            self.bus.emit(event)
