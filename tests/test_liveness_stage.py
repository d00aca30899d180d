"""The liveness stage: policies, windows, verdicts that explain themselves, the shipped model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from firmware_py.config import ConfigError, load, with_changes
from firmware_py.liveness.fusion import LivenessModelError, TextureModel
from firmware_py.liveness.stage import LivenessDetector
from firmware_py.liveness.texture import FRAME_FEATURE_NAMES, frame_features
from tests.test_liveness_cues import TILT, _face_points, dlib_box, screen_moire, tilted


@dataclass
class Detection:
    box: tuple[float, float, float, float]


@dataclass
class Observation:
    """The fields of the vision room's FaceObservation the stage reads."""

    track_id: int
    detection: Detection
    landmarks: object
    frame_ts: float


def stage(policy: str, all_cues: bool = False, **changes: object) -> LivenessDetector:
    cfg = with_changes(load(None), {"liveness.policy": policy, **{f"liveness.{k}": v for k, v in changes.items()}})
    return LivenessDetector.from_config(cfg, all_cues=all_cues)


@dataclass
class Landmarks:
    points: np.ndarray


def feed(
    st: LivenessDetector,
    image: np.ndarray,
    box: tuple[float, float, float, float],
    n: int,
    dt: float = 0.1,
    track: int = 1,
    t0: float = 100.0,
    points: list[np.ndarray] | None = None,
) -> None:
    for i in range(n):
        lm = Landmarks(points[i]) if points is not None else None
        st.observe(Observation(track, Detection(box), lm, t0 + i * dt), image)


def head_turning(n: int, blink_at: int | None = None) -> list[np.ndarray]:
    """FaceMesh-indexed points of a head turning 0-30 degrees, the eyes closing in frame ``blink_at``."""
    return [_face_points(yaw_deg=30 * i / (n - 1), eye_open=0.1 if i == blink_at else 1.0) for i in range(n)]


def test_policy_off_passes_everything_and_says_so(astronaut: np.ndarray) -> None:
    st = stage("off")
    feed(st, screen_moire(astronaut), (175, 76, 265, 166), 3)
    v = st.verdict(1)
    assert v is not None and v.passed and v.policy == "off" and v.score is None
    assert "off" in v.reason


def test_passive_waits_for_its_window_then_accepts_a_live_photo(astronaut: np.ndarray) -> None:
    st = stage("passive", early_min_frames=0)  # the full window (no early pass)
    box = dlib_box(astronaut)
    assert st.verdict(1) is None  # never seen
    feed(st, astronaut, box, 3, dt=0.1)  # 0.2 s < 0.8 s window
    assert st.verdict(1) is None
    feed(st, astronaut, box, 8, dt=0.1, t0=100.3)
    v = st.verdict(1)
    assert v is not None and v.policy == "passive"
    assert v.passed, v.reason
    assert v.threshold == st.params.threshold and v.score is not None and v.score >= v.threshold
    assert v.reason.startswith("live:")
    for cue in ("texture", "texture.colour", "texture.colour_texture", "texture.context", "moire_peak", "frames", "window_s"):
        assert cue in v.cues


def test_early_pass_on_a_live_face_in_fewer_frames_than_the_window(astronaut: np.ndarray) -> None:
    st = stage("passive")
    box = dlib_box(astronaut)
    p = st.params
    turning = head_turning(10)
    feed(st, astronaut, box, p.early_min_frames - 1, dt=0.1, points=turning)
    assert st.verdict(1) is None  # one frame is never enough
    feed(st, astronaut, box, 1, dt=0.1, t0=100 + 0.1 * (p.early_min_frames - 1), points=turning[p.early_min_frames - 1 :])
    v = st.verdict(1)
    assert v is not None and v.passed and v.reason.startswith("live (early)"), v
    assert v.cues["early"] == 1.0 and v.cues["frames"] == p.early_min_frames and v.cues["window_s"] < p.passive_window_s
    assert v.threshold == p.early_threshold and v.score is not None and v.score >= p.early_threshold
    # the verdict still carries every cue's score
    for cue in ("learned.minifasnet_v2", "learned.minifasnet_v1se", "texture", "texture.colour", "moire_peak", "planarity"):
        assert cue in v.cues
    # An early threshold above the face's score: no early pass, the window decides as before.
    hi = stage("passive", early_threshold=1.0)
    feed(hi, astronaut, box, 8, dt=0.1)
    assert hi.verdict(1) is None
    feed(hi, astronaut, box, 1, dt=0.1, t0=100.9)
    w = hi.verdict(1)
    assert w is not None and w.passed and w.reason.startswith("live:") and w.cues["early"] == 0.0 and w.threshold == p.threshold


def test_no_early_pass_when_a_veto_fires_or_the_face_moves_like_a_flat_picture(astronaut: np.ndarray) -> None:
    box = dlib_box(astronaut)
    # A screen re-capture: the moire veto holds the early pass back; the window rejects.
    st = stage("passive")
    feed(st, screen_moire(astronaut), box, 8)
    assert st.verdict(1) is None
    feed(st, screen_moire(astronaut), box, 1, t0=100.9)
    v = st.verdict(1)
    assert v is not None and not v.passed and "screen or halftone" in v.reason
    # A picture tilting as one homography: too little motion yet for the window's veto (distortion gate), but
    # no early pass either; at the window the planar veto rejects it.
    a = _face_points()
    flat = [tilted(a, np.eye(3) + (TILT - np.eye(3)) * i / 9) for i in range(10)]
    st2 = stage("passive")
    for i in range(10):
        feed(st2, astronaut, box, 1, t0=100 + 0.1 * i, points=[flat[i]])
        if i < 9:
            assert st2.verdict(1) is None, i
    v2 = st2.verdict(1)
    assert v2 is not None and not v2.passed and "tilted like a flat picture" in v2.reason
    # strict never decides early
    st3 = stage("strict")
    feed(st3, astronaut, box, 5, points=head_turning(5))
    assert st3.verdict(1) is None


def test_passive_rejects_a_synthetic_screen_recapture_and_says_why(astronaut: np.ndarray) -> None:
    st = stage("passive")
    feed(st, screen_moire(astronaut), dlib_box(astronaut), 10)
    v = st.verdict(1)
    assert v is not None and not v.passed
    assert "screen or halftone pattern" in v.reason
    assert v.cues["moire_peak"] > st.params.moire_peak
    assert {"texture", "texture.micro_texture", "texture.frequency"} <= set(v.cues)


def test_learned_threshold_decides_and_texture_can_only_veto(astronaut: np.ndarray) -> None:
    box = dlib_box(astronaut)
    st = stage("passive")
    feed(st, astronaut, box, 10)
    v = st.verdict(1)
    assert v is not None and v.passed, v.reason
    assert v.score == v.cues["learned"] and {"learned.minifasnet_v2", "learned.minifasnet_v1se"} <= set(v.cues)
    # The same frames against a learned threshold above their score: rejected by the learned score.
    assert v.score < 1.0
    hi = stage("passive", threshold=1.0, strict_threshold=1.0)
    feed(hi, astronaut, box, 10)
    v2 = hi.verdict(1)
    assert v2 is not None and not v2.passed and "learned liveness score" in v2.reason and "texture score" not in v2.reason
    # A texture veto above the frames' texture score: rejected by it, naming the weakest cue group.
    veto = stage("passive", texture_threshold=min(round(v.cues["texture"] + 1, 2), 20))
    feed(veto, astronaut, box, 10)
    v3 = veto.verdict(1)
    assert v3 is not None and not v3.passed and "texture score" in v3.reason and "learned liveness score" not in v3.reason
    # Every frame scored below the threshold, so the texture cues (veto only) never ran: they could not matter.
    assert v2.cues["texture_frames"] == 0 and "texture" not in v2.cues and v.cues["texture_frames"] == 5  # every other of 10
    # With every cue computed, the same frames: a texture score far above the veto cannot rescue the learned score.
    hi_all = stage("passive", all_cues=True, threshold=1.0, strict_threshold=1.0)
    feed(hi_all, astronaut, box, 10)
    v4 = hi_all.verdict(1)
    assert v4 is not None and not v4.passed and v4.cues["texture"] == v.cues["texture"] > v.cues["texture"] - 1


def test_strict_needs_every_cue_so_a_still_photo_fails(astronaut: np.ndarray) -> None:
    st = stage("strict")
    box = dlib_box(astronaut)
    feed(st, astronaut, box, 10, dt=0.1)  # 0.9 s: strict keeps watching
    assert st.verdict(1) is None
    v = st.conclude(1)  # the track ended
    assert not v.passed and v.policy == "strict"
    assert "no blink" in v.reason and "strict needs" in v.reason


def test_planar_motion_vetoes_a_tilted_picture_even_when_its_texture_passes(astronaut: np.ndarray) -> None:
    box = dlib_box(astronaut)
    a = _face_points()
    flat = [tilted(a, np.eye(3) + (TILT - np.eye(3)) * i / 9) for i in range(10)]  # tilting further frame by frame
    st = stage("passive")
    feed(st, astronaut, box, 10, points=flat)
    v = st.verdict(1)
    assert v is not None and not v.passed
    assert "tilted like a flat picture" in v.reason and "texture score" not in v.reason  # the texture passed
    assert v.cues["planarity"] >= st.params.planar_ratio and v.cues["planar_distortion"] >= st.params.planar_distortion
    # The same pixels with a head turning as far: live.
    st2 = stage("passive")
    feed(st2, astronaut, box, 10, points=head_turning(10))
    v2 = st2.verdict(1)
    assert v2 is not None and v2.passed, v2.reason
    assert v2.cues["planarity"] < st2.params.planar_ratio
    # planar_ratio = 0 turns the veto off.
    st3 = stage("passive", planar_ratio=0.0)
    feed(st3, astronaut, box, 10, points=flat)
    assert st3.verdict(1).passed  # type: ignore[union-attr]


def test_strict_passes_a_blinking_turning_face_and_not_the_same_face_without_a_blink(astronaut: np.ndarray) -> None:
    """Strict's blink path (no dev clip blinks: the lids of the landmark sequence close in one frame)."""
    box = dlib_box(astronaut)
    st = stage("strict")
    feed(st, astronaut, box, 26, points=head_turning(26, blink_at=12))
    v = st.verdict(1)
    assert v is not None and v.policy == "strict"
    assert v.passed, v.reason
    assert v.cues["blink"] > st.params.strict_blink and v.cues["nonplanar_motion"] > st.params.strict_motion
    assert "blink" in v.reason
    st2 = stage("strict")
    feed(st2, astronaut, box, 26, points=head_turning(26))
    v2 = st2.verdict(1)
    assert v2 is not None and not v2.passed and "no blink" in v2.reason
    assert "face moved like a flat picture" not in v2.reason  # the motion cue did pass


def test_policy_switch_in_config_reaches_the_decision_hook(astronaut: np.ndarray) -> None:
    from firmware_py.decision.liveness import LivenessOff
    from firmware_py.pipeline.build import liveness_from_config

    assert load(None).liveness.policy == "passive"  # a shipped reader checks liveness
    off = liveness_from_config(with_changes(load(None), {"liveness.policy": "off"}))
    assert isinstance(off, LivenessOff)
    recapture = screen_moire(astronaut)
    box = dlib_box(astronaut)
    verdicts = {}
    for policy in ("off", "passive", "strict"):
        st = liveness_from_config(with_changes(load(None), {"liveness.policy": policy}))
        for i in range(30):
            st.observe(Observation(1, Detection(box), None, 100 + i * 0.1), recapture)
        verdicts[policy] = st.verdict(1)
    assert verdicts["off"].passed and verdicts["off"].policy == "off"  # type: ignore[union-attr]
    assert not verdicts["passive"].passed and verdicts["passive"].policy == "passive"  # type: ignore[union-attr]
    assert not verdicts["strict"].passed and verdicts["strict"].policy == "strict"  # type: ignore[union-attr]


def test_a_spoof_reject_emits_an_event_with_the_cue_scores(astronaut: np.ndarray) -> None:
    from firmware_py.decision.machine import DecisionMachine, DecisionParams
    from firmware_py.gallery.matcher import MatchResult
    from firmware_py.mqtt.event_catalogue import decision_event

    st = stage("passive")
    m = DecisionMachine(DecisionParams(k=3, n=5, cooldown_s=60, track_timeout_s=5, liveness_timeout_s=3), liveness=st)
    recapture, box = screen_moire(astronaut), dlib_box(astronaut)
    hit = MatchResult("match", "eileen", "Eileen", 0.3, "other", 0.8, 0.45)
    decisions = []
    for i in range(12):
        ts = 100 + i * 0.1
        st.observe(Observation(7, Detection(box), None, ts), recapture)
        d = m.observe(7, ts, hit)
        decisions += [d] if d else []
    (d,) = decisions
    assert d.reason == "spoof" and not d.accepted and d.person_id == "eileen"
    ev = decision_event(d)
    assert ev is not None and ev.type == "decision.spoof_attempt"
    lv = ev.data["liveness"]
    assert lv["policy"] == "passive" and lv["score"] == d.liveness.score and "spoof suspected" in lv["reason"]  # type: ignore[union-attr]
    assert {"texture", "texture.colour", "texture.frequency", "moire_peak", "frames"} <= set(lv["cues"])
    assert lv["cues"]["moire_peak"] > st.params.moire_peak


def test_conclude_on_a_single_still_and_forget(astronaut: np.ndarray) -> None:
    st = stage("passive")
    feed(st, astronaut, dlib_box(astronaut), 1)
    assert st.verdict(1) is None
    v = st.conclude(1)
    assert v.passed and v.cues["frames"] == 1.0
    st.forget(1)
    assert st.verdict(1) is None
    assert not st.conclude(1).passed  # nothing seen: never a pass


def test_tracks_are_independent(astronaut: np.ndarray) -> None:
    st = stage("passive")
    box = dlib_box(astronaut)
    feed(st, astronaut, box, 10, track=1)
    feed(st, screen_moire(astronaut), box, 10, track=2)
    assert st.verdict(1).passed  # type: ignore[union-attr]
    assert not st.verdict(2).passed  # type: ignore[union-attr]


def test_config_refuses_a_strict_looser_than_passive() -> None:
    with pytest.raises(ConfigError) as exc:
        with_changes(load(None), {"liveness.threshold": 0.8, "liveness.strict_threshold": 0.7})
    assert "liveness.strict_threshold:" in str(exc.value) and "liveness.liveness" not in str(exc.value)
    with pytest.raises(ConfigError):
        with_changes(load(None), {"liveness.policy": "sometimes"})


def test_shipped_model_matches_the_features_and_records_its_build() -> None:
    from firmware_py.models.manifest import load_manifest

    path = load_manifest().require("liveness_texture_v4", load(None).models.dir)  # sha256 verified
    m = TextureModel.load(path)
    assert m.features == FRAME_FEATURE_NAMES
    # The record keeps the command that was run; the training module has since moved to the eval package.
    assert m.build["script"] in ("python -m firmware_py.eval.liveness_train", "python -m firmware_py.liveness.train")
    assert set(m.build["holdout_units"]).isdisjoint(m.build["train_units"])
    x = frame_features(np.zeros((100, 100, 3), np.uint8), (20, 20, 80, 80))
    parts = m.contributions(x)
    assert sum(parts.values()) + m.bias == pytest.approx(m.logit(x))


def test_corrupt_or_foreign_model_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LivenessModelError, match="cannot read liveness model"):
        TextureModel.load(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"features": ["a", "b"], "mean": [0, 0], "scale": [1, 1], "weights": [1, 1], "bias": 0}))
    with pytest.raises(LivenessModelError, match="other cue features"):
        TextureModel.load(other)
