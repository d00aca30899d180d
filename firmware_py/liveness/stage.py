"""The liveness stage: per-track presentation-attack detection with a policy.

The decision state machine feeds it every observation of every track
(:meth:`LivenessDetector.observe`) and asks :meth:`LivenessDetector.verdict`
until it answers; ``None`` means *still watching*.  Policies:

``off``
    no check; every verdict passes and says so.
``passive``
    decide within the walk-up window: once the face has been watched for
    ``passive_window_s`` and ``passive_min_frames`` scored frames, it passes
    when all of these hold (the learned score decides; the other cues can
    only veto, never rescue):

    1. the mean real probability of the two MiniFASNet nets
       (:mod:`firmware_py.liveness.learned`) over the window reaches
       ``threshold``; the nets run on a track's frames only until its
       verdict is reached;
    1b. the mean texture score (hand-made cues, standardised: 0 = a typical
       live face, -1 = a typical attack; computed on every other scored
       frame) is not below ``texture_threshold``;
    2. no periodic screen / halftone pattern shows on the face: the median
       spectral peak stays <= ``moire_peak``;
    3. the face did not move like a tilted flat picture: *not* (distortion
       >= ``planar_distortion`` and planarity >= ``planar_ratio``), see
       :func:`firmware_py.liveness.motion.planar_motion`.

    **Early pass**: before the window ends, the face passes as soon as at
    least ``early_min_frames`` scored frames have a mean learned score >=
    ``early_threshold`` (stricter than ``threshold``), no veto fires on what
    was seen, and the landmarks have not (yet) moved like a flat picture
    (planarity >= ``planar_ratio`` without the window's distortion gate); its
    verdict says "live (early)" and carries the cue ``early`` = 1.  Rejects
    always wait for the full window.  Both parameters are chosen by the
    subject-grouped cross-validation (``firmware_py/eval/liveness_cv.py --early``).

    Motion only ever vetoes, it never rescues a low texture score: a person
    standing still shows no motion at all, and a bent print flexes a little,
    so the amount of non-planar motion alone does not separate them in the
    dev data (0.005-0.042 for NUAA print sequences, 0.020-0.096 live).
``strict``
    a longer window (``strict_window_s``, ``strict_min_frames``) and every cue
    must pass: the passive vetoes, the texture score reaches
    ``strict_threshold`` (the learned score), the eyes blink (``strict_blink``) and the face moves
    like a head, not like a flat picture (``strict_motion``).  People must
    blink within the window (a site using it should prompt them); the dev
    clips hold no blink in their first seconds, so strict rejects them.

Every verdict carries the cue scores (the learned score and each net's,
the texture score split by cue group, blink depth, non-planar motion) and a
reason a person can read.  Frames the nets cannot score are counted, not
scored (:func:`firmware_py.liveness.learned.input_problem`: a grey / IR
frame, a face too small); a window made only of them ends in a verdict that
says which and what to do.  A face too close for the 4.0 crop is scored on
the clamped crop, as the original pipeline (and the nets' training) did, and
its verdict adds "please step back".
:meth:`LivenessDetector.conclude` forces a verdict on whatever was seen: a
single still, or a track that ended early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from firmware_py.decision.outcome import LivenessVerdict
from firmware_py.liveness.fusion import TextureModel
from firmware_py.liveness.learned import LearnedModel, input_problem
from firmware_py.liveness.motion import blink_score, eye_aspect_ratio, nonplanar_motion, planar_motion
from firmware_py.liveness.texture import FRAME_FEATURE_NAMES, frame_features

if TYPE_CHECKING:
    from firmware_py.config import Config

HF_PEAK = FRAME_FEATURE_NAMES.index("hf_peak")  # the face crop's spectral peak (moire / halftone)

# What each cue group means when it is the one that pulled the score down.
CUE_TEXT = {
    "colour": "skin colour looks re-rendered (print ink or screen primaries)",
    "specular": "flat highlights or lifted blacks of a glossy print or a screen",
    "frequency": "moire / halftone pattern or recapture blur",
    "micro_texture": "paper or screen micro-texture instead of skin",
    "colour_texture": "print or screen grain in the colour channels",
    "context": "paper or screen edge, or a hand, around the face",
}


# One extreme frame must not outvote the window: frame scores are clipped to
# 1.5 live-attack gaps either side of a typical live face (the score is
# standardised: 0 = training live median, -1 = attack median).
MAX_FRAME_SCORE = 1.5

# The texture cues (about 1.8 ms) only veto and are averaged over the window:
# every other frame is enough (the first always), the nets run on every one.
# They run only on frames the nets score live (at least the policy's threshold):
# a window of frames that all score below it has a mean below it and is
# rejected on the learned score alone, so no veto can matter there.
TEXTURE_EVERY = 2


@dataclass(frozen=True)
class LivenessParams:
    """The ``[liveness]`` settings the stage runs with."""

    policy: str = "passive"
    threshold: float = 0.39
    passive_window_s: float = 0.8
    passive_min_frames: int = 3
    strict_window_s: float = 2.5
    strict_min_frames: int = 8
    strict_threshold: float = 0.5
    strict_blink: float = 0.3
    strict_motion: float = 0.025
    moire_peak: float = 5.5
    planar_distortion: float = 0.06
    planar_ratio: float = 2.2
    texture_threshold: float = -1.0
    early_threshold: float = 0.84
    early_min_frames: int = 2
    mirror_band: float | None = 0.05  # None: never score the mirrored crops

    @classmethod
    def from_config(cls, cfg: Config) -> LivenessParams:
        c = cfg.liveness
        return cls(
            c.policy,
            c.threshold,
            c.passive_window_s,
            c.passive_min_frames,
            c.strict_window_s,
            c.strict_min_frames,
            c.strict_threshold,
            c.strict_blink,
            c.strict_motion,
            c.moire_peak,
            c.planar_distortion,
            c.planar_ratio,
            c.texture_threshold,
            c.early_threshold,
            c.early_min_frames,
            c.mirror_band if c.mirror_unsure else None,
        )


@dataclass
class _Track:
    first_ts: float
    last_ts: float
    logits: list[float] = field(default_factory=list)
    feature_sum: NDArray[np.float64] | None = None  # the mean feature vector explains the mean logit (linear model)
    points: list[NDArray[np.floating]] = field(default_factory=list)
    ears: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)
    reals: list[float] = field(default_factory=list)  # the learned ensemble's real probability per scored frame
    per_net: dict[str, list[float]] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)  # frames not scored, by input problem code
    last_problem: str = ""
    close_frames: int = 0  # scored on a clamped crop: the face is too close for the 4.0 crop
    close_text: str = ""
    mirrored: int = 0  # frames the nets were unsure of, scored on the mirrored crops too
    texture_due: int = 0  # frames that asked for the texture cues (scored live, or every frame with all_cues)
    features: list[tuple[int, NDArray[np.float64]]] = field(default_factory=list)  # (scored frames so far, x): record_features only
    verdict: LivenessVerdict | None = None


class LivenessDetector:
    """Per-track presentation-attack detection (implements the decision package's ``LivenessStage``)."""

    def __init__(
        self,
        model: TextureModel | None,
        params: LivenessParams,
        learned: LearnedModel | None = None,
        all_cues: bool = False,
        record_features: bool = False,
    ) -> None:
        """``all_cues``: run the texture cues on every other scored frame, also where the nets already reject
        (for the cross-validation, which tries other thresholds on the recorded cues); off on the reader.
        ``record_features``: keep each texture frame's feature vector (:meth:`recorded_features`), for the
        nested cross-validation that retrains the texture model without the held-out people."""
        if params.policy != "off" and (model is None or learned is None):
            raise ValueError(f"policy {params.policy!r} needs the texture model and the learned model")
        self.model = model
        self.learned = learned
        self.params = params
        self.policy = params.policy
        self.all_cues = all_cues
        self.record_features = record_features
        self._tracks: dict[int, _Track] = {}

    @classmethod
    def from_config(cls, cfg: Config, all_cues: bool = False, record_features: bool = False) -> LivenessDetector:
        """The stage for ``[liveness]``, its coefficient file verified against the model manifest."""
        params = LivenessParams.from_config(cfg)
        if params.policy == "off":
            return cls(None, params)
        from firmware_py.liveness.fusion import load_default_model
        from firmware_py.liveness.learned import load_learned

        learned = load_learned(cfg.models.dir, parallel=cfg.liveness.parallel_nets)
        return cls(load_default_model(cfg), params, learned, all_cues=all_cues, record_features=record_features)

    # -- feeding -----------------------------------------------------------------

    def observe(self, observation: Any, frame: Any | None = None) -> None:
        """Take a vision ``FaceObservation`` (and the frame it came from) into account.

        Uses ``observation.track_id``, ``.detection.box``, ``.landmarks.points``
        (may be absent) and ``.frame_ts``; ``frame`` is a capture ``Frame`` or
        an RGB array.  Without pixels the texture cues cannot run, so the
        observation only advances the motion cues.
        """
        if self.policy == "off":
            return
        image = getattr(frame, "image", frame)
        landmarks = getattr(observation, "landmarks", None)
        points = getattr(landmarks, "points", None) if landmarks is not None else None
        self.observe_face(
            int(observation.track_id),
            image,
            _box4(observation.detection.box),
            points,
            float(observation.frame_ts),
        )

    def observe_face(
        self,
        track_id: int,
        image: NDArray[np.uint8] | None,
        box: tuple[float, float, float, float],
        points: NDArray[np.floating] | None,
        ts: float,
    ) -> None:
        """The pure-numpy entry: one face of one track in one frame."""
        if self.policy == "off":
            return
        tr = self._tracks.get(track_id)
        if tr is None:
            tr = self._tracks[track_id] = _Track(ts, ts)
        if tr.verdict is not None:
            return  # decided; later frames do not reopen it
        tr.last_ts = max(tr.last_ts, ts)
        if image is not None:
            assert self.model is not None and self.learned is not None
            problem = input_problem(image, box)
            if problem is not None and problem[0] == "face_too_close":
                tr.close_frames += 1
                tr.close_text = problem[1]
            elif problem is not None:
                tr.problems[problem[0]] = tr.problems.get(problem[0], 0) + 1
                tr.last_problem = problem[1]
                image = None
        if image is not None:
            assert self.model is not None and self.learned is not None
            real, per, mirrored = self.learned.real_score(image, box, mirror_band=self.params.mirror_band)
            tr.mirrored += int(mirrored)
            tr.reals.append(real)
            for name, v in per.items():
                tr.per_net.setdefault(name, []).append(v)
            if not (self.all_cues or real >= self._threshold()):
                return self._observe_points(tr, points)
            tr.texture_due += 1
            if (tr.texture_due - 1) % TEXTURE_EVERY:
                return self._observe_points(tr, points)
            x = frame_features(image, box)
            tr.logits.append(float(np.clip(self.model.logit(x), -MAX_FRAME_SCORE, MAX_FRAME_SCORE)))
            tr.feature_sum = x if tr.feature_sum is None else tr.feature_sum + x
            if self.record_features:
                tr.features.append((len(tr.reals), np.asarray(x, np.float64)))
            tr.peaks.append(float(x[HF_PEAK]))
        self._observe_points(tr, points)

    @staticmethod
    def _observe_points(tr: _Track, points: NDArray[np.floating] | None) -> None:
        if points is not None:
            p = np.asarray(points, np.float64)
            tr.points.append(p)
            tr.ears.append(eye_aspect_ratio(p))

    # -- answers -----------------------------------------------------------------

    def verdict(self, track_id: int) -> LivenessVerdict | None:
        """The track's verdict once its window is complete, else None (still watching)."""
        if self.policy == "off":
            return _off()
        tr = self._tracks.get(track_id)
        if tr is None:
            return None
        if tr.verdict is None:
            p = self.params
            window, min_frames = (p.passive_window_s, p.passive_min_frames) if self.policy == "passive" else (p.strict_window_s, p.strict_min_frames)
            if tr.last_ts - tr.first_ts >= window:
                if len(tr.reals) >= min_frames:
                    tr.verdict = self._decide(tr, complete=True)
                elif not tr.reals and sum(tr.problems.values()) >= min_frames:
                    tr.verdict = self._unscorable(tr)
            elif self._early_candidate(tr):
                v = self._decide(tr, complete=True, early=True)
                if v.passed:  # a veto keeps it watching: early verdicts only ever pass, rejects wait for the window
                    tr.verdict = v
        return tr.verdict

    def _early_candidate(self, tr: _Track) -> bool:
        """Passive only: enough scored frames whose mean learned score clears the stricter early threshold."""
        p = self.params
        return (
            self.policy == "passive"
            and p.early_min_frames > 0
            and len(tr.reals) >= p.early_min_frames
            and float(np.mean(tr.reals)) >= max(p.early_threshold, p.threshold)
        )

    def progress(self, track_id: int) -> dict[str, float] | None:
        """The running cues of an undecided (or decided) track: what the early rule and the window see so far.

        For the cross-validation of the early rule (``kaoclock eval liveness --trace``); None before a scored frame.
        """
        tr = self._tracks.get(track_id)
        if tr is None or not tr.reals:
            return None
        out = {"t": round(tr.last_ts - tr.first_ts, 4), "n": float(len(tr.reals)), "learned": round(float(np.mean(tr.reals)), 4)}
        if tr.logits:  # absent until a frame got the texture cues (always the first with all_cues)
            out["texture"] = round(float(np.mean(tr.logits)), 4)
            out["moire_peak"] = round(float(np.median(tr.peaks)), 4)
        if len(tr.points) >= 2:
            distortion, planarity = planar_motion(tr.points)
            out["planar_distortion"], out["planarity"] = round(distortion, 4), round(planarity, 4)
        return out

    def recorded_features(self, track_id: int) -> list[tuple[int, NDArray[np.float64]]]:
        """With ``record_features``: each texture frame of the track as (scored frames so far, feature vector)."""
        tr = self._tracks.get(track_id)
        return list(tr.features) if tr is not None else []

    def conclude(self, track_id: int) -> LivenessVerdict:
        """A verdict now, on whatever the track gave (a still, or a track that ended early)."""
        if self.policy == "off":
            return _off()
        v = self.verdict(track_id)
        if v is not None:
            return v
        tr = self._tracks.get(track_id)
        if tr is not None and not tr.reals and tr.problems:
            tr.verdict = self._unscorable(tr)
            return tr.verdict
        if tr is None or not tr.reals:
            return LivenessVerdict(self.policy, False, None, self._threshold(), {}, "no face pixels were seen for this track")  # type: ignore[arg-type]
        tr.verdict = self._decide(tr, complete=False)
        return tr.verdict

    @property
    def model_versions(self) -> dict[str, str]:
        """The liveness models' versions by role, for the punch's ``models``."""
        out = {f"liveness.{n}": v for n, v in (self.learned.versions if self.learned is not None else {}).items()}
        if self.model is not None:
            out["liveness.texture"] = self.model.version
        return out

    def take_invoke_ms(self) -> float:
        """Milliseconds spent inside the nets' invokes since the last call (the pipeline's model time)."""
        if self.learned is None:
            return 0.0
        ms = self.learned.invoke_s * 1e3
        self.learned.invoke_s = 0.0
        return ms

    def forget(self, track_id: int) -> None:
        """The track ended: drop its state."""
        self._tracks.pop(track_id, None)

    def close(self) -> None:
        """The reader stops: stop the nets' worker thread (idempotent; a closed stage still scores, on one thread)."""
        if self.learned is not None:
            self.learned.close()

    def _threshold(self) -> float:
        return self.params.threshold if self.policy == "passive" else self.params.strict_threshold

    def _unscorable(self, tr: _Track) -> LivenessVerdict:
        """No frame could be scored: say why and what to do (step back / closer / a colour camera)."""
        cues = {f"unscored.{k}": float(v) for k, v in tr.problems.items()}
        cues["frames"] = 0.0
        cues["window_s"] = round(tr.last_ts - tr.first_ts, 3)
        reason = f"cannot check liveness: {tr.last_problem}"
        return LivenessVerdict(self.policy, False, None, self._threshold(), cues, reason)  # type: ignore[arg-type]

    def _decide(self, tr: _Track, complete: bool, early: bool = False) -> LivenessVerdict:
        p = self.params
        thr = max(p.early_threshold, p.threshold) if early else self._threshold()
        score = float(np.mean(tr.reals))
        assert self.model is not None
        cues: dict[str, float] = {"learned": round(score, 4)}
        cues.update({f"learned.{n}": round(float(np.mean(v)), 4) for n, v in tr.per_net.items()})
        cues["learned.min_frame"] = round(float(np.min(tr.reals)), 4)
        # No texture frame means every frame scored below the threshold (so did their mean): rejected on the
        # learned score, with no veto to explain.
        texture: float | None = None
        peak: float | None = None
        groups: dict[str, float] = {}
        if tr.logits and tr.feature_sum is not None:
            texture = float(np.mean(tr.logits))
            # The model is linear, so the group contributions of the mean feature
            # vector are the mean of the per-frame contributions (before clipping).
            groups = self.model.contributions(tr.feature_sum / len(tr.logits))
            cues["texture"] = round(texture, 4)
            cues.update({f"texture.{g}": round(v, 4) for g, v in groups.items()})
            peak = float(np.median(tr.peaks))
            cues["moire_peak"] = round(peak, 4)
        cues["texture_frames"] = float(len(tr.logits))
        cues["frames"] = float(len(tr.reals))
        cues["mirrored_frames"] = float(tr.mirrored)
        cues.update({f"unscored.{k}": float(v) for k, v in tr.problems.items()})
        if tr.close_frames:
            cues["too_close_frames"] = float(tr.close_frames)
        cues["window_s"] = round(tr.last_ts - tr.first_ts, 3)
        cues["early"] = 1.0 if early else 0.0
        blink = blink_score(tr.ears) if len(tr.ears) >= 3 else None
        motion = nonplanar_motion(tr.points) if len(tr.points) >= 2 else None
        distortion, planarity = planar_motion(tr.points) if len(tr.points) >= 2 else (None, None)
        if blink is not None:
            cues["blink"] = round(blink, 4)
        if motion is not None:
            cues["nonplanar_motion"] = round(motion, 4)
        if distortion is not None and planarity is not None:
            cues["planar_distortion"] = round(distortion, 4)
            cues["planarity"] = round(planarity, 4)

        failures: list[str] = []
        if score < thr:
            failures.append(f"learned liveness score {score:.2f} < {thr:.2f}: looks like a printed photo or a screen")
        if texture is None and score >= thr:  # cannot happen (a frame at or above thr got the cues): fail closed
            failures.append("the texture cues were not computed")
        if texture is not None and texture < p.texture_threshold:
            worst = min(groups, key=groups.__getitem__)
            failures.append(f"texture score {texture:.2f} < {p.texture_threshold:.2f}: {CUE_TEXT.get(worst, worst)}")
        if p.moire_peak > 0 and peak is not None and peak > p.moire_peak:
            failures.append(f"periodic screen or halftone pattern on the face (spectral peak {peak:.2f} > {p.moire_peak:.2f})")
        if (
            p.planar_ratio > 0
            and distortion is not None
            and planarity is not None
            and distortion >= p.planar_distortion
            and planarity >= p.planar_ratio
        ):
            failures.append(
                f"the face tilted like a flat picture (distortion {distortion:.3f} >= {p.planar_distortion:.3f}, "
                f"{planarity:.1f}x what one homography leaves >= {p.planar_ratio:.1f}x)"
            )
        if early and p.planar_ratio > 0 and planarity is not None and planarity >= p.planar_ratio:
            # Too little motion yet for the window's planar veto (its distortion gate), but what there is moves
            # as one homography: no early pass, the window decides.
            failures.append(f"so far the face moves like a flat picture ({planarity:.1f}x >= {p.planar_ratio:.1f}x)")
        if self.policy == "strict":
            if p.strict_blink > 0 and (blink is None or blink < p.strict_blink):
                seen = "too few landmark frames" if blink is None else f"deepest eye closure {blink:.2f} < {p.strict_blink:.2f}"
                failures.append(f"no blink in {cues['window_s']:.1f} s ({seen})")
            if p.strict_motion > 0 and (motion is None or motion < p.strict_motion):
                seen = "too few landmark frames" if motion is None else f"non-planar motion {motion:.3f} < {p.strict_motion:.3f}"
                failures.append(f"face moved like a flat picture ({seen})")
            if not complete:
                failures.append(f"watched {cues['window_s']:.1f} s / {len(tr.reals)} frames, strict needs {p.strict_window_s:g} s")
        passed = not failures
        if passed and early:
            reason = (
                f"live (early): learned score {score:.2f} >= early threshold {thr:.2f} over {len(tr.reals)} frame(s) "
                f"in {cues['window_s']:.2f} s, no veto"
            )
        elif passed:
            reason = f"live: learned score {score:.2f} >= {thr:.2f} over {len(tr.reals)} frame(s)"
            if self.policy == "strict":
                reason += f", blink {blink:.2f}, non-planar motion {motion:.3f}"
        else:
            reason = "spoof suspected: " + "; ".join(failures)
        if tr.close_frames:
            reason += f" ({tr.close_frames} frame(s): {tr.close_text})"
        return LivenessVerdict(self.policy, passed, round(score, 4), thr, cues, reason)  # type: ignore[arg-type]


def _off() -> LivenessVerdict:
    return LivenessVerdict(policy="off", passed=True, score=None, threshold=None, reason="liveness check off (policy off)")


def stage_from_config(cfg: Config) -> LivenessDetector:
    """The liveness stage for the daemon (``[liveness] policy`` off / passive / strict)."""
    return LivenessDetector.from_config(cfg)


def _box4(box: Any) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0, y0, x1, y1
