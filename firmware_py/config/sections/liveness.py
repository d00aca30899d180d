"""[liveness]: presentation-attack detection policy, thresholds and windows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Problem, Section, setting


@dataclass(frozen=True)
class LivenessConfig(Section):
    """Presentation-attack detection (photos, screens, replayed video)."""

    policy: Literal["off", "passive", "strict"] = setting(
        "passive",
        doc="off: no check; passive: decide within the walk-up window on the learned score (MiniFASNet nets), "
        "with texture, moire and planar-motion vetoes; "
        "strict: longer window, every cue must pass, a blink is required.",
    )
    model: str = setting("liveness_texture_v4", pattern=r"^[a-z0-9_]+$", doc="models/manifest.toml entry holding the texture-cue coefficients.")
    threshold: float = setting(
        0.39,
        ge=0,
        le=1,
        doc="Operating threshold on the learned score: the two MiniFASNet nets' mean real probability (with their "
        "mirrored crops on frames they are unsure of, see mirror_unsure), averaged over the walk-up window; "
        "chosen by subject-grouped cross-validation (firmware_py/liveness/README.md).",
    )
    texture_threshold: float = setting(
        -1.0,
        ge=-20,
        le=20,
        doc="Veto when the mean texture score (hand-made cues, standardised: 0 = a typical live face, -1 = a typical "
        "attack) is below this; it can only veto, never rescue a low learned score.",
    )
    moire_peak: float = setting(
        5.5,
        ge=0,
        le=50,
        doc="Veto when the face's median high-band spectral peak (log peak/mean) exceeds this: a periodic screen or "
        "halftone pattern; live faces in the dev data stay below 4.8. 0 = no veto.",
    )
    planar_distortion: float = setting(
        0.06,
        ge=0,
        le=1,
        doc="Planar-motion veto: face motion beyond a 2-D shift/turn/zoom (similarity residual / inter-ocular) from which on the veto may fire.",
    )
    planar_ratio: float = setting(
        2.2,
        ge=0,
        le=100,
        doc="Planar-motion veto: fires when that motion is at least this many times the homography residual "
        "(a tilted flat picture; live heads stay below 1.6 in the dev data). 0 = no veto.",
    )
    passive_window_s: float = setting(0.8, gt=0, le=10, doc="passive: the face must be watched this long before a verdict.")
    passive_min_frames: int = setting(3, ge=1, le=300, doc="passive: and at least this many frames of it.")
    early_threshold: float = setting(
        0.84,
        ge=0,
        le=1,
        doc="passive: pass before the window ends once the learned score's mean over early_min_frames or more frames "
        "reaches this (or threshold, if higher), no veto fires and the face has not moved like a flat picture so far; "
        "rejects always wait for the window; chosen by subject-grouped cross-validation.",
    )
    early_min_frames: int = setting(
        2, ge=0, le=300, doc="passive: scored frames the early pass needs at least; 0 = no early verdict (always the full window)."
    )
    parallel_nets: bool = setting(
        True,
        doc="Run the two MiniFASNet nets of a frame at the same time on two cores (a frame waits about half as long; "
        "the CPU work is the same). false on a single-core board.",
    )
    mirror_unsure: bool = setting(
        True,
        doc="Score a frame the nets are unsure of (their mean real probability within [mirror_band, 1 - mirror_band]) "
        "on both crops flipped left-right too, its score the mean of the four (test-time augmentation: two more invokes "
        "on such frames only); chosen by subject-grouped cross-validation (firmware_py/liveness/README.md).",
    )
    mirror_band: float = setting(
        0.05, ge=0, le=0.5, doc="How unsure a frame must be for the mirrored crops: the band [this, 1 - this] of the nets' mean."
    )
    strict_window_s: float = setting(2.5, gt=0, le=20, doc="strict: the longer watching window.")
    strict_min_frames: int = setting(8, ge=2, le=600, doc="strict: and at least this many frames of it.")
    strict_threshold: float = setting(
        0.5, ge=0, le=1, doc="strict: learned score the window's mean must reach (>= threshold; 0.5 is the original ensemble's decision point)."
    )
    strict_blink: float = setting(
        0.3, ge=0, le=1, doc="strict: eye-closure depth (1 - min/median eye opening) that counts as a blink; 0 = no blink needed."
    )
    strict_motion: float = setting(
        0.025, ge=0, le=1, doc="strict: non-planar landmark motion (residual / inter-ocular) a live head must show; 0 = not needed."
    )

    def check(self) -> Iterator[Problem]:
        if self.strict_threshold < self.threshold:
            yield Problem(
                "strict_threshold",
                f"{self.strict_threshold} is below liveness.threshold {self.threshold}: strict would be looser than passive",
                f"set liveness.strict_threshold >= {self.threshold}",
            )
        if self.strict_window_s < self.passive_window_s:
            yield Problem(
                "strict_window_s",
                f"{self.strict_window_s} s is shorter than liveness.passive_window_s {self.passive_window_s} s",
                f"set liveness.strict_window_s >= {self.passive_window_s}",
            )
