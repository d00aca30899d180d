"""The per-track decision state machine: many frames in, one decision out.

For each track (one person walking up) the machine keeps the verdicts of its
last ``n`` usable frames.  When ``k`` of them agree on one enrolled person it
asks the liveness stage; a pass then becomes an accept unless that person was
accepted less than ``cooldown_s`` ago.  ``k`` frames saying "unknown" (or
"ambiguous") end the track as a reject with that reason.  A track that
gathers no agreement in ``track_timeout_s`` (or disappears) ends as
"timeout", "ambiguous" (usable frames that disagreed) or "low_quality" (no
usable frame at all).  Exactly one :class:`Decision` per track; later frames
of a decided track are ignored until the tracker drops it.

Compute goes only where it decides: once ``k`` frames agree on a person the
identity is settled, so :meth:`DecisionMachine.needs_embedding` turns false
and the pipeline stops embedding that track's frames while the liveness stage
keeps watching until its verdict (whatever liveness model runs: the machine
only polls ``verdict``).

Every reject carries a :data:`~firmware_py.decision.outcome.Reason` and a
line for people in ``detail``.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from firmware_py.decision.liveness import LivenessOff, LivenessStage
from firmware_py.decision.outcome import Decision, LivenessVerdict, Reason
from firmware_py.gallery.matcher import MatchResult

if TYPE_CHECKING:
    from firmware_py.config import Config

_UNKNOWN = "\0unknown"
_AMBIGUOUS = "\0ambiguous"
_MISMATCH = "\0model_mismatch"


@dataclass(frozen=True)
class DecisionParams:
    k: int = 3
    n: int = 5
    cooldown_s: float = 60.0
    track_timeout_s: float = 5.0
    liveness_timeout_s: float = 3.0

    @classmethod
    def from_config(cls, cfg: Config) -> DecisionParams:
        d = cfg.decision
        return cls(d.k, d.n, d.cooldown_s, d.track_timeout_s, d.liveness_timeout_s)


@dataclass
class _Track:
    track_id: int
    first_ts: float
    last_ts: float
    votes: deque[tuple[str, MatchResult]]
    usable: int = 0
    low_quality: int = 0
    quality_reasons: Counter[str] = field(default_factory=Counter)
    candidate: str | None = None  # person waiting for liveness
    candidate_since: float = 0.0
    decided: bool = False


class DecisionMachine:
    """Turns per-frame match results of tracks into :class:`Decision` objects.

    Time is whatever clock the frames carry (``ts`` in seconds: capture time
    of a camera, presentation time of a replayed video), so replayed clips
    decide the same way every run.  When that clock steps backwards (a camera
    stamping wall-clock time, after an NTP step) the cooldown is measured on
    the monotonic clock instead.
    """

    def __init__(
        self,
        params: DecisionParams,
        liveness: LivenessStage | None = None,
        model_versions: dict[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.params = params
        self._monotonic = monotonic
        self.liveness: LivenessStage = liveness or LivenessOff()
        self.model_versions = dict(model_versions or {})
        self._tracks: dict[int, _Track] = {}
        self._last_accept: dict[str, tuple[float, float]] = {}  # person -> (frame ts, monotonic time) of the accept
        self.mismatch_detail = ""  # set when the gallery's templates are of another embedder

    # ------------------------------------------------------------ inputs

    def observe(self, track_id: int, ts: float, match: MatchResult | None, quality_ok: bool = True, quality_reason: str = "") -> Decision | None:
        """One frame of a track: its match (None when the frame was unusable). Returns a decision when one is reached."""
        tr = self._tracks.get(track_id)
        if tr is None:
            tr = self._tracks[track_id] = _Track(track_id, ts, ts, deque(maxlen=self.params.n))
        tr.last_ts = ts
        if tr.decided:
            return None
        if not quality_ok or match is None:
            tr.low_quality += 1
            if quality_reason:
                tr.quality_reasons[quality_reason] += 1
        else:
            tr.usable += 1
            tr.votes.append((self._vote(match), match))
        return self._advance(tr, ts)

    def end_track(self, track_id: int, ts: float) -> Decision | None:
        """The tracker lost the track: decide what it had, forget it."""
        tr = self._tracks.pop(track_id, None)
        self.liveness.forget(track_id)
        if tr is None or tr.decided:
            return None
        return self._give_up(tr, ts, ended=True)

    def tick(self, ts: float) -> list[Decision]:
        """Time passed (call once per frame): decisions for tracks that waited too long."""
        out = []
        for tr in list(self._tracks.values()):
            if tr.decided:
                continue
            d = self._advance(tr, ts)
            if d is None and ts - tr.first_ts >= self.params.track_timeout_s:
                d = self._give_up(tr, ts, ended=False)
            if d is not None:
                out.append(d)
        return out

    def needs_embedding(self, track_id: int) -> bool:
        """Whether the track's next frame should be embedded: not once it is decided, nor while its
        identity is settled and only liveness is awaited (a further vote could not change the outcome)."""
        tr = self._tracks.get(track_id)
        return tr is None or (not tr.decided and tr.candidate is None)

    def is_decided(self, track_id: int) -> bool:
        """Whether the track already has its decision (its further frames need no embedding)."""
        tr = self._tracks.get(track_id)
        return tr is not None and tr.decided

    # ------------------------------------------------------------ the machine

    def _vote(self, m: MatchResult) -> str:
        if m.verdict == "match" and m.person_id:
            return m.person_id
        if m.verdict == "empty":
            return _MISMATCH if self.mismatch_detail else _UNKNOWN
        return _AMBIGUOUS if m.verdict == "ambiguous" else _UNKNOWN

    def _advance(self, tr: _Track, ts: float) -> Decision | None:
        if tr.candidate is not None:
            return self._await_liveness(tr, ts)
        counts = Counter(v for v, _ in tr.votes)
        if not counts:
            return None
        vote, count = counts.most_common(1)[0]
        if count < self.params.k:
            return None
        agreeing = [m for v, m in tr.votes if v == vote]
        if vote == _UNKNOWN:
            return self._finish(tr, "unknown", agreeing, detail="matches nobody enrolled closely enough")
        if vote == _AMBIGUOUS:
            return self._finish(tr, "ambiguous", agreeing, detail="two enrolled people are too close to tell apart")
        if vote == _MISMATCH:
            return self._finish(tr, "model_mismatch", agreeing, detail=self.mismatch_detail)
        tr.candidate, tr.candidate_since = vote, ts
        return self._await_liveness(tr, ts)

    def _await_liveness(self, tr: _Track, ts: float) -> Decision | None:
        assert tr.candidate is not None
        agreeing = [m for v, m in tr.votes if v == tr.candidate] or [m for _, m in tr.votes]
        verdict = self.liveness.verdict(tr.track_id)
        if verdict is None:
            if ts - tr.candidate_since >= self.params.liveness_timeout_s:
                return self._finish(
                    tr, "timeout", agreeing, detail=f"liveness gave no verdict within {self.params.liveness_timeout_s:g} s", person=tr.candidate
                )
            return None
        if not verdict.passed:
            return self._finish(tr, "spoof", agreeing, liveness=verdict, detail=verdict.reason or "liveness check failed", person=tr.candidate)
        last = self._last_accept.get(tr.candidate)
        if last is not None:
            elapsed = ts - last[0]
            if elapsed < 0:
                # The frames' clock stepped backwards (a wall-clock camera after an NTP step): the monotonic
                # clock says how long it really was, so nobody waits out the step.
                elapsed = self._monotonic() - last[1]
            if elapsed < self.params.cooldown_s:
                wait = self.params.cooldown_s - elapsed
                detail = f"already accepted {elapsed:.0f} s ago; next in {wait:.0f} s"
                return self._finish(tr, "cooldown", agreeing, liveness=verdict, person=tr.candidate, detail=detail)
        self._last_accept[tr.candidate] = (ts, self._monotonic())
        return self._finish(tr, "match", agreeing, liveness=verdict, person=tr.candidate, detail="recognised")

    def _give_up(self, tr: _Track, ts: float, ended: bool) -> Decision:
        why = "the face left" if ended else f"no decision within {self.params.track_timeout_s:g} s"
        matches = [m for _, m in tr.votes]
        if tr.usable == 0:
            reasons = ", ".join(f"{r} x{n}" for r, n in tr.quality_reasons.most_common(3)) or "no usable frame"
            return self._finish(tr, "low_quality", [], detail=f"{why}; every frame was unusable ({reasons})")
        if tr.candidate is not None:
            return self._finish(tr, "timeout", matches, person=tr.candidate, detail=f"{why} while waiting for liveness")
        if tr.usable >= self.params.k:
            return self._finish(tr, "ambiguous", matches, detail=f"{why}; {tr.usable} usable frames never agreed {self.params.k} times")
        return self._finish(tr, "timeout", matches, detail=f"{why} after {tr.usable} usable frame(s); {self.params.k} needed")

    def _finish(
        self,
        tr: _Track,
        reason: Reason,
        matches: list[MatchResult],
        detail: str,
        liveness: LivenessVerdict | None = None,
        person: str | None = None,
    ) -> Decision:
        tr.decided = True
        best = [m for m in matches if m.person_id == person] if person else matches
        best = best or matches
        dist = [m.distance for m in best if m.distance is not None]
        margins = [m.margin for m in best if m.margin is not None]
        top = min(best, key=lambda m: m.distance if m.distance is not None else 9.0) if best else None
        pid = person or (top.person_id if top else None)
        name = next((m.name for m in best if m.person_id == pid and m.name), None)
        return Decision(
            accepted=reason == "match",
            reason=reason,
            track_id=tr.track_id,
            person_id=pid,
            person_name=name,
            distance=round(statistics.median(dist), 4) if dist else None,
            threshold=best[0].threshold if best else None,
            margin=round(statistics.median(margins), 4) if margins else None,
            frames=len(best),
            liveness=liveness,
            model_versions=dict(self.model_versions),
            detail=detail,
        )
