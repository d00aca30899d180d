"""The gate controller: from a decision to a durable punch, an open door and a green light.

:class:`GateController` is a :class:`~firmware_py.decision.ports.DecisionSink`.
``on_decision`` only queues, so the recognition loop never waits for a
button, a disk or a relay; one worker thread does the rest, in order:

accept
    1. direction (``DirectionSource``; may wait for the IN / OUT button);
    2. ``PunchRecorder.record`` makes the punch durable; if it raises, the
       reader shows ``fault``, emits ``punch.record_failed`` and the door
       stays shut (no success is ever signalled for a punch that is not stored);
    3. ``Door.grant`` and ``Feedback.show("accepted")``.
reject
    feedback by reason: unknown / ambiguous -> ``rejected_unknown``, spoof ->
    ``rejected_spoof``, cooldown -> ``rejected_cooldown``, others ->
    ``rejected_other``.

Card policies (``card_reader.policy``):

face-only
    cards are ignored (``card.ignored``).
card-fallback
    after ``fallback_after`` failed face attempts within ``fallback_window_s``,
    a known card alone is an accept (``method="card"``); earlier, the card is
    refused (``card.refused``).
face+card
    an accepted face and the same person's card, in either order, within
    ``two_factor_s``; a different person's card is ``card.mismatch``; a face
    without a card in time is refused (``gate.card_missing``).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from firmware_py.decision.outcome import Decision, Method
from firmware_py.decision.ports import Door, Feedback, FeedbackState, PunchRecorder
from firmware_py.events import EventBus
from firmware_py.gate.card_store import CardStore, mask_card, normalise_card

log = logging.getLogger(__name__)

REJECT_FEEDBACK: dict[str, FeedbackState] = {
    "unknown": "rejected_unknown",
    "ambiguous": "rejected_unknown",
    "spoof": "rejected_spoof",
    "cooldown": "rejected_cooldown",
}
# Rejects that count as "the face did not work" for the card fallback (not spoof: that is an attack).
FACE_FAILURES = frozenset({"unknown", "ambiguous", "low_quality", "timeout"})
RECORD_FAULT = "punch not stored"


class GateController:
    """Decisions and card reads in; punches, door grants, feedback and events out."""

    def __init__(
        self,
        *,
        recorder: PunchRecorder,
        direction: Any,
        door: Door,
        feedback: Feedback,
        bus: EventBus,
        policy: str = "face-only",
        cards: CardStore | None = None,
        fallback_after: int = 3,
        fallback_window_s: float = 60.0,
        two_factor_s: float = 10.0,
        card_cooldown_s: float = 10.0,
        direction_timeout_s: float = 4.0,
        queue_size: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._recorder = recorder
        self._direction = direction
        self._door = door
        self._feedback = feedback
        self._bus = bus
        self.policy = policy
        self._cards = cards
        self._fallback_after = fallback_after
        self._fallback_window = fallback_window_s
        self._two_factor_s = two_factor_s
        self._card_cooldown_s = card_cooldown_s
        self._direction_timeout = direction_timeout_s
        self._clock = clock
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._face_failures: deque[float] = deque()
        self._pending_face: tuple[Decision, float] | None = None  # face+card: accepted face waiting for its card
        self._pending_card: tuple[str, str, float] | None = None  # face+card: (card, person, deadline) waiting for the face
        self._card_punch_at: dict[str, float] = {}
        self._faults: set[str] = set()  # fault details this gate raised; a stored punch clears them
        self.counts = {"accepted": 0, "rejected": 0, "record_failed": 0, "cards": 0, "dropped": 0}

    # ------------------------------------------------------------ inputs (any thread, never block)

    def on_decision(self, decision: Decision) -> None:
        """Queue a decision; returns at once (the :class:`DecisionSink` port)."""
        self._put(("decision", decision))

    def on_card(self, card: str) -> None:
        """Queue a card read from the card reader."""
        self._put(("card", card))

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.counts["dropped"] += 1
            self._bus.emit_new("gate.queue_full", "warning", dropped=item[0])

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gate", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued (a punch in progress completes), then stop."""
        if self._thread is not None:
            try:
                self._queue.put(("stop", None), timeout=timeout)
            except queue.Full:
                log.error("gate: queue still full after %.0f s; stopping without finishing it", timeout)
            self._thread.join(timeout)
            self._thread = None

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is handled (for tests and the console)."""
        done = threading.Event()
        self._put(("sync", done))
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            deadlines = [p[-1] for p in (self._pending_face, self._pending_card) if p is not None]
            wait = max(min(deadlines) - self._clock(), 0) if deadlines else None
            try:
                kind, item = self._queue.get(timeout=wait)
            except queue.Empty:
                kind, item = "tick", None
            try:
                if kind == "stop":
                    return
                if kind == "sync":
                    item.set()
                elif kind == "decision":
                    self._handle_decision(item)
                elif kind == "card":
                    self._handle_card(item)
                self._expire()
            except Exception:  # one bad item must not stop the gate
                log.exception("gate: error handling %s", kind)

    # ------------------------------------------------------------ decisions

    def _handle_decision(self, d: Decision) -> None:
        if not d.accepted:
            self.counts["rejected"] += 1
            if d.reason in FACE_FAILURES and self.policy == "card-fallback":
                self._note_face_failure()
            self._feedback.show(REJECT_FEEDBACK.get(d.reason, "rejected_other"), d.detail or d.reason)
            return
        self._face_failures.clear()
        if self.policy != "face+card":
            self._accept(d)
            return
        now = self._clock()
        if self._pending_card is not None:
            card, person, _ = self._pending_card
            self._pending_card = None
            if person == d.person_id:
                self._accept(dataclasses.replace(d, method="face+card"))
            else:
                self._mismatch(card, person, d.person_id)
            return
        self._pending_face = (d, now + self._two_factor_s)
        self._feedback.show("present_card")
        self._bus.emit_new("gate.waiting_card", person_id=d.person_id, timeout_s=self._two_factor_s)

    def _note_face_failure(self) -> None:
        now = self._clock()
        self._face_failures.append(now)
        while self._face_failures and self._face_failures[0] < now - self._fallback_window:
            self._face_failures.popleft()
        if len(self._face_failures) == self._fallback_after:
            self._bus.emit_new("gate.card_fallback_armed", failures=len(self._face_failures))

    # ------------------------------------------------------------ cards

    def _handle_card(self, raw: str) -> None:
        self.counts["cards"] += 1
        card = normalise_card(raw)
        if self.policy == "face-only":
            self._bus.emit_new("card.ignored", card=mask_card(card), policy=self.policy)
            return
        person = self._cards.person_for(card) if self._cards is not None else None
        if person is None:
            self._bus.emit_new("card.unknown", "warning", card=mask_card(card))
            self._feedback.show("rejected_unknown", "unknown card")
            return
        now = self._clock()
        if self.policy == "card-fallback":
            while self._face_failures and self._face_failures[0] < now - self._fallback_window:
                self._face_failures.popleft()
            if len(self._face_failures) < self._fallback_after:
                self._bus.emit_new(
                    "card.refused",
                    "warning",
                    card=mask_card(card),
                    person_id=person,
                    reason=f"a card alone opens only after {self._fallback_after} failed face attempts",
                )
                self._feedback.show("rejected_other", "look at the camera first")
                return
            last = self._card_punch_at.get(person)
            if last is not None and now - last < self._card_cooldown_s:
                self._feedback.show("rejected_cooldown", "card used moments ago")
                self._bus.emit_new("card.cooldown", person_id=person)
                return
            self._face_failures.clear()
            decision = Decision(
                accepted=True,
                reason="match",
                track_id=-1,
                person_id=person,
                detail=f"card-only entry after {self._fallback_after} failed face attempts",
                method="card",
            )
            if self._accept(decision):
                self._card_punch_at[person] = now
            return
        # face+card
        if self._pending_face is not None:
            face, _ = self._pending_face
            self._pending_face = None
            if face.person_id == person:
                self._accept(dataclasses.replace(face, method="face+card"))
            else:
                self._mismatch(card, person, face.person_id)
            return
        self._pending_card = (card, person, now + self._two_factor_s)
        self._feedback.show("looking", "card read; look at the camera")
        self._bus.emit_new("gate.waiting_face", person_id=person, timeout_s=self._two_factor_s)

    def _mismatch(self, card: str, card_person: str, face_person: str | None) -> None:
        self.counts["rejected"] += 1
        self._bus.emit_new("card.mismatch", "alarm", card=mask_card(card), card_person=card_person, face_person=face_person)
        self._feedback.show("rejected_other", "card and face are different people")

    def _expire(self) -> None:
        now = self._clock()
        if self._pending_face is not None and now >= self._pending_face[1]:
            face = self._pending_face[0]
            self._pending_face = None
            self.counts["rejected"] += 1
            self._bus.emit_new("gate.card_missing", "warning", person_id=face.person_id, timeout_s=self._two_factor_s)
            self._feedback.show("rejected_other", "no card presented")
        if self._pending_card is not None and now >= self._pending_card[2]:
            _, person, _ = self._pending_card
            self._pending_card = None
            self._bus.emit_new("gate.face_missing", person_id=person, timeout_s=self._two_factor_s)
            self._feedback.show("idle")

    # ------------------------------------------------------------ the accept path

    def _raise_fault(self, detail: str) -> None:
        self._faults.add(detail)
        self._feedback.show("fault", detail)

    def _clear_faults(self) -> None:
        clear = getattr(self._feedback, "clear", None)  # the Feedback port has no clear(); GpioFeedback does
        if clear is not None:
            for detail in self._faults:
                clear("fault", detail)
        self._faults.clear()

    def _accept(self, d: Decision) -> bool:
        """Direction, durable punch, then door and green; False when nothing was signalled."""
        try:
            direction = self._direction.direction_for(d, self._direction_timeout)
        except Exception as exc:  # e.g. the auto-direction file is damaged: no guess, no punch, a technician is told
            log.exception("gate: no direction for %s", d.person_id)
            self.counts["rejected"] += 1
            self._raise_fault("direction unavailable")
            self._bus.emit_new("gate.direction_failed", "fault", person_id=d.person_id, error=f"{type(exc).__name__}: {exc}")
            return False
        if direction is None:
            self.counts["rejected"] += 1
            self._bus.emit_new("gate.no_direction", person_id=d.person_id)
            self._feedback.show("rejected_other", "no IN / OUT button pressed")
            return False
        try:
            punch_id = self._recorder.record(d, direction)
        except Exception as exc:
            # The punch is not stored: no green, no door, and a technician must hear of it.
            self.counts["record_failed"] += 1
            log.exception("gate: punch for %s could not be stored", d.person_id)
            self._raise_fault(RECORD_FAULT)
            self._bus.emit_new("punch.record_failed", "fault", person_id=d.person_id, direction=direction, error=f"{type(exc).__name__}: {exc}")
            return False
        self._clear_faults()
        try:
            confirm = getattr(self._direction, "confirm", None)
            if confirm is not None:
                confirm(d, direction)
        except Exception:  # the punch is stored; a lost toggle only affects the next guess
            log.exception("gate: could not remember the direction of %s", d.person_id)
        self._door.grant(d.method)
        self._feedback.show("accepted", d.person_name or d.person_id or "")
        self.counts["accepted"] += 1
        method: Method = d.method
        self._bus.emit_new("gate.accepted", person_id=d.person_id, direction=direction, punch_id=punch_id, method=method)
        return True
