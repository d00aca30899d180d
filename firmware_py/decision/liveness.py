"""The liveness stage the decision waits for (the plug-in point for presentation-attack detection).

A liveness stage sees every observation of every track (``observe``) and,
when it has seen enough, gives a verdict for the track (``verdict``); until
then it answers ``None`` (pending) and the decision waits, up to
``decision.liveness_timeout_s``.  ``forget`` drops a track's state when the
track ends.  The liveness package implements :class:`LivenessStage`; with
policy ``off``, :class:`LivenessOff` says so in every verdict (no score):
nothing pretends to check liveness.
"""

from __future__ import annotations

from typing import Any, Protocol

from firmware_py.decision.outcome import LivenessVerdict


class LivenessStage(Protocol):
    """What a liveness stage implements.

    ``observation`` is the vision package's ``FaceObservation`` (track id,
    detection, landmarks, aligned chip, quality, frame time) plus, where the
    stage needs pixels, the frame it came from.
    """

    policy: str

    def observe(self, observation: Any, frame: Any | None = None) -> None:
        """Take one more observation of a track into account."""
        ...

    def verdict(self, track_id: int) -> LivenessVerdict | None:
        """The verdict for the track, or None while it is still pending."""
        ...

    def forget(self, track_id: int) -> None:
        """The track ended; drop its state."""
        ...


class LivenessOff:
    """Policy ``off``: no check is made, and every verdict says so."""

    policy = "off"

    def observe(self, observation: Any, frame: Any | None = None) -> None:
        return None

    def verdict(self, track_id: int) -> LivenessVerdict:
        return LivenessVerdict(policy="off", passed=True, score=None, threshold=None, reason="liveness check off (policy off)")

    def forget(self, track_id: int) -> None:
        return None
