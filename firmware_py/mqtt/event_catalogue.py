"""The event catalogue of the MQTT contract, and the events a decision becomes.

Every type a reader may publish on its events topic, with its severity and
the package that emits it.  The contract (mqtt/asyncapi.yaml, mqtt/README.md)
lists the same table; a test keeps them in step.  Consumers must accept
types they do not know: later packages add theirs here.
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
        "depth, capacity, high_water, reason?, unconfirmed_since?, retention_s?",
        "the outbox passed its high-water mark, or (reason retention) a punch waited longer than [outbox] retention_s "
        "for its receipt: nothing is deleted",
    ),
    "outbox.normal": EventType(
        "info",
        "outbox",
        "depth, capacity, reason?",
        "the outbox fell below half its high-water mark again (reason retention: every punch is within retention_s)",
    ),
    "outbox.full": EventType("fault", "outbox", "depth, capacity", "the outbox is full: new punches are refused (none queued is dropped)"),
    "outbox.store_failed": EventType("fault", "outbox", "error, path", "a punch could not be written durably (disk full, I/O error)"),
    "outbox.publish_refused": EventType(
        "fault",
        "outbox",
        "id, topic, reason, retry_in_s",
        "the broker refused a punch (MQTT 5 PUBACK error, e.g. not authorized) or had no subscriber for it (0x10); it stays queued",
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
    "command.refused": EventType(
        "warning",
        "mqtt",
        "id, cmd, reason, detail, suppressed?",
        "a command was refused (see command_results for the reason codes); unsigned junk at most once per 10 s, suppressed = how many were left out",
    ),
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
    "console.login": EventType("info", "serial", "device", "a technician logged in on the console"),
    "console.logout": EventType("info", "serial", "device", "the technician logged out"),
    "console.idle_logout": EventType("info", "serial", "device", "the console session ended after [console] idle_timeout_s without input"),
    "console.login_failed": EventType("warning", "serial", "device, failures", "a wrong passphrase on the console"),
    "console.bad_input": EventType(
        "warning", "serial", "device, kind, length|sample", "a line too long or binary noise on the console (wrong baud rate?); at most one per 10 s"
    ),
    "console.relay_test": EventType("warning", "serial", "device, seconds", "a technician released the door relay from the console"),
    "console.port_open": EventType("info", "serial", "-", "the console's serial port is open"),
    "console.port_lost": EventType("warning", "serial", "error", "the console's serial port failed (unplugged USB adapter?); it is reopened"),
    "card_reader.port_open": EventType("info", "serial", "-", "the card reader's serial port is open"),
    "card_reader.port_lost": EventType("warning", "serial", "error", "the card reader's serial port failed; it is reopened"),
    "card.bad_frame": EventType("warning", "serial", "kind, count", "the card reader sent a frame that could not be read (noise, wrong protocol)"),
    "card.ignored": EventType("info", "gate", "card (masked), policy", "a card was presented but [gate] card policy is face-only"),
    "card.refused": EventType(
        "warning", "gate", "card (masked), person_id, reason", "a known card alone is not enough yet (the face fallback is not armed)"
    ),
    "card.cooldown": EventType("info", "gate", "person_id", "the same card again within its cooldown: no second punch"),
    "camera.ended": EventType("info", "capture", "source, frames", "a replayed file or folder came to its end"),
    "camera.no_frames": EventType("fault", "pipeline", "seconds", "the pipeline got no frame for this long: the daemon stops (systemd restarts it)"),
    "daemon.started": EventType("info", "pipeline", "gallery_templates, persons", "the reader's pipeline started"),
    "daemon.stopped": EventType("info", "pipeline", "frames, decisions", "the reader's pipeline stopped"),
    "service.stalled": EventType(
        "fault", "service", "last_frame_age", "no frame processed for [service] frame_stall_seconds: the watchdog is no longer petted"
    ),
    "service.resumed": EventType("info", "service", "-", "frames are processed again; the watchdog is petted"),
    "direction.pressed": EventType("info", "gate", "direction", "an IN/OUT button was pressed"),
    "gate.choose_direction": EventType("info", "gate", "person_id, timeout_s", "a recognised person must press IN or OUT"),
    "gate.no_direction": EventType("info", "gate", "person_id", "no direction was chosen in time: no punch"),
    "gate.direction_failed": EventType("fault", "gate", "person_id, error", "the direction could not be determined (a bug or a broken input)"),
    "gate.queue_full": EventType("warning", "gate", "dropped", "decisions arrive faster than the gate handles them; the oldest was dropped"),
    "gate.waiting_card": EventType("info", "gate", "person_id, timeout_s", "two-factor: the face is recognised, the card is awaited"),
    "gate.waiting_face": EventType("info", "gate", "person_id, timeout_s", "two-factor: the card is read, the face is awaited"),
    "gate.card_missing": EventType("warning", "gate", "person_id, timeout_s", "two-factor: no card followed the face in time"),
    "gate.face_missing": EventType("info", "gate", "person_id, timeout_s", "two-factor: no face followed the card in time"),
    "gate.card_fallback_armed": EventType("info", "gate", "failures", "after repeated face failures a card alone is accepted for a while"),
    "door.granted": EventType("info", "gpio", "reason, pulse_s, relay", "the door relay was released"),
    "door.opened": EventType("info", "gpio", "at_start?", "the door contact opened (warning when already open at start)"),
    "door.closed": EventType("info", "gpio", "open_s, was_held_open", "the door contact closed"),
    "door.rex": EventType("info", "gpio", "granted", "the request-to-exit button was pressed"),
    "gallery.model_mismatch": EventType(
        "warning",
        "pipeline",
        "detail, mismatched, embedder",
        "templates in scope were made by another embedder version and are not matched: re-enrol or re-sync those people",
    ),
    "gallery.enrol_live_started": EventType("info", "provision", "person_id, frames, window_s", "a live enrolment window opened"),
    "gallery.enrol_live_pending": EventType(
        "info",
        "provision",
        "person_id, name, templates, near_duplicate, confirm_within_s",
        "good frames agree; the candidate awaits confirmation (warning when near_duplicate names someone else enrolled)",
    ),
    "gallery.enrol_live_done": EventType(
        "info", "provision", "ok, person_id, templates, confirmed_by, version, size, hash, near_duplicate", "the confirmed templates are stored"
    ),
    "gallery.enrol_live_failed": EventType(
        "warning",
        "provision",
        "ok, person_id, reason, taken, refused",
        "the window ended without agreeing good frames (the commonest refusals named)",
    ),
    "gallery.enrol_live_discarded": EventType(
        "info", "provision", "person_id, reason, by", "the window or candidate was cancelled, or not confirmed in time: nothing stored"
    ),
    "transfer.started": EventType(
        "info", "mqtt", "transfer_id, kind, size, chunks, resumed", "a chunked transfer (firmware, gallery.snapshot) was begun or resumed"
    ),
    "transfer.progress": EventType("info", "mqtt", "transfer_id, kind, received, chunks, percent", "a transfer passed 25, 50 or 75 %"),
    "transfer.completed": EventType("info", "mqtt", "transfer_id, kind, size, sha256", "a transfer was committed and its receiver accepted it"),
    "transfer.refused": EventType(
        "warning",
        "mqtt",
        "transfer_id, kind, reason, detail",
        "a chunk or a whole transfer was refused (hash, signature, space...); nothing was installed",
    ),
    "transfer.aborted": EventType(
        "info", "mqtt", "transfer_id, kind, why", "a transfer was aborted or replaced by a newer one of its kind; its data is gone"
    ),
    "update.staged": EventType(
        "info", "update", "transfer_id, version, from_version, signer", "a verified release is handed to the updater (kaoclock-update.path)"
    ),
    "update.committed": EventType(
        "info",
        "update",
        "time, slot, version",
        "the new release passed its health check and is committed (reported by the running release within seconds)",
    ),
    "update.rolled_back": EventType(
        "fault",
        "update",
        "time, slot, version, to_slot, reason",
        "the new release failed its health check (or was rolled back by hand) and the previous one runs",
    ),
    "update.failed": EventType(
        "fault", "update", "time, version|bundle, reason", "the updater refused or could not install a staged release; the running one is untouched"
    ),
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
