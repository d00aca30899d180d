"""The ports a decision drives; adapters at the edge implement them.

The recognition core never imports gpiozero, pyserial or paho: it hands each
:class:`~firmware_py.decision.outcome.Decision` to :class:`DecisionSink`s.
On an accept the gate controller asks a :class:`DirectionSource` for in/out,
makes the punch durable through a :class:`PunchRecorder` *before* any success
is signalled, then opens the :class:`Door` and shows :class:`Feedback`.
"""

from __future__ import annotations

from typing import Literal, Protocol

from firmware_py.decision.outcome import Decision, Direction

FeedbackState = Literal[
    "idle",
    "looking",  # a face is being tracked
    "choose_direction",  # recognised; waiting for the IN / OUT button
    "present_card",  # face + card policy: recognised; waiting for the person's card
    "accepted",
    "rejected_unknown",
    "rejected_spoof",
    "rejected_cooldown",
    "rejected_other",
    "offline",  # broker unreachable, punches queued
    "fault",  # camera lost, storage failed, tamper ...
]


class DecisionSink(Protocol):
    def on_decision(self, decision: Decision) -> None: ...


class DirectionSource(Protocol):
    def direction_for(self, decision: Decision, timeout_s: float) -> Direction | None:
        """In or out for this accepted decision (may wait up to ``timeout_s`` for a button); None = no choice made."""
        ...


class PunchRecorder(Protocol):
    def record(self, decision: Decision, direction: Direction) -> str:
        """Make the punch durable and return its id; raise if it could not be stored."""
        ...


class Door(Protocol):
    def grant(self, reason: str) -> None:
        """Release the lock for the configured pulse."""
        ...


class Feedback(Protocol):
    def show(self, state: FeedbackState, detail: str = "") -> None: ...
