"""[decision]: the per-track state machine that turns frames into one decision."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from firmware_py.config.schema import Problem, Section, setting


@dataclass(frozen=True)
class DecisionConfig(Section):
    """K of N frames, liveness wait, per-person cooldown."""

    k: int = setting(3, ge=1, le=30, doc="Frames that must agree on one person (or on 'unknown') before deciding.")
    n: int = setting(5, ge=1, le=60, doc="Sliding window of the most recent usable frames of a track that the K are counted in.")
    cooldown_s: float = setting(60.0, ge=0.0, le=86400.0, doc="After an accept, the same person is refused ('cooldown') for this long.")
    track_timeout_s: float = setting(
        5.0, gt=0.0, le=120.0, doc="A track that gathers no decision within this time ends as 'timeout' (or 'low_quality')."
    )
    liveness_timeout_s: float = setting(3.0, gt=0.0, le=60.0, doc="How long an identified track waits for the liveness verdict.")

    def check(self) -> Iterator[Problem]:
        if self.k > self.n:
            yield Problem("k", f"k = {self.k} is larger than n = {self.n}: no window could ever agree", "set k <= n")
