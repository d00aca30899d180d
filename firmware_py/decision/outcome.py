"""What the reader decided about one person at the gate.

A :class:`Decision` is the single hand-over between the recognition core and
everything at the edge (punch recorder, door, LEDs, MQTT events, console).
It carries the evidence behind it, so every reject explains itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["in", "out"]

# Which credentials an accept rests on (the gate's card policies add the card ones).
Method = Literal["face", "card", "face+card"]

# Why a decision went the way it did.  "match" is the only accept reason.
Reason = Literal[
    "match",  # accepted: K of N frames agreed on one enrolled person, liveness passed
    "unknown",  # the face matches nobody enrolled (or not confidently enough)
    "ambiguous",  # frames disagreed on who it is / top-2 margin too small
    "spoof",  # liveness rejected the presentation
    "cooldown",  # this person punched moments ago; no double punch
    "low_quality",  # face too small, blurred or turned away for the whole window
    "timeout",  # the track ended before enough evidence was gathered
    "model_mismatch",  # gallery templates were made by another embedder version
]


@dataclass(frozen=True)
class LivenessVerdict:
    """The liveness stage's answer for one track, with its evidence."""

    policy: Literal["off", "passive", "strict"]
    passed: bool
    score: float | None  # fused score, higher = more likely live; None when policy is off
    threshold: float | None
    cues: dict[str, float] = field(default_factory=dict)  # per-cue scores
    reason: str = ""  # one line a person can read: "moire pattern of a screen", "no blink in 3 s"


@dataclass(frozen=True)
class Decision:
    """The outcome of one walk-up (one track)."""

    accepted: bool
    reason: Reason
    track_id: int
    person_id: str | None = None  # best candidate, also on rejects where one exists
    person_name: str | None = None
    distance: float | None = None  # descriptor distance of the best match (lower = closer)
    threshold: float | None = None  # the distance threshold in force
    margin: float | None = None  # distance gap between the best and second-best person
    frames: int = 0  # frames that contributed
    liveness: LivenessVerdict | None = None
    model_versions: dict[str, str] = field(default_factory=dict)
    detail: str = ""  # the reason spelled out for people
    ts: float = field(default_factory=time.time)  # UTC epoch seconds of the decision
    method: Method = "face"  # credentials behind an accept: face, card (fallback), face+card (two-factor)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (events, console, logs)."""
        from dataclasses import asdict

        return asdict(self)
