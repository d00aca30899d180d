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
from tests.test_liveness_cues import dlib_box, screen_moire


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


def stage(policy: str, **changes: object) -> LivenessDetector:
    cfg = with_changes(load(None), {"liveness.policy": policy, **{f"liveness.{k}": v for k, v in changes.items()}})
    return LivenessDetector.from_config(cfg)


def feed(
    st: LivenessDetector, image: np.ndarray, box: tuple[float, float, float, float], n: int, dt: float = 0.1, track: int = 1, t0: float = 100.0
) -> None:
    for i in range(n):
        st.observe(Observation(track, Detection(box), None, t0 + i * dt), image)


def test_policy_off_passes_everything_and_says_so(astronaut: np.ndarray) -> None:
    st = stage("off")
    feed(st, screen_moire(astronaut), (175, 76, 265, 166), 3)
    v = st.verdict(1)
    assert v is not None and v.passed and v.policy == "off" and v.score is None
    assert "off" in v.reason


def test_passive_waits_for_its_window_then_accepts_a_live_photo(astronaut: np.ndarray) -> None:
    st = stage("passive")
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


def test_passive_rejects_a_synthetic_screen_recapture_and_says_why(astronaut: np.ndarray) -> None:
    st = stage("passive")
    feed(st, screen_moire(astronaut), dlib_box(astronaut), 10)
    v = st.verdict(1)
    assert v is not None and not v.passed
    assert "screen or halftone pattern" in v.reason
    assert v.cues["moire_peak"] > st.params.moire_peak
    assert {"texture", "texture.micro_texture", "texture.frequency"} <= set(v.cues)


def test_texture_threshold_decides(astronaut: np.ndarray) -> None:
    box = dlib_box(astronaut)
    st = stage("passive")
    feed(st, astronaut, box, 10)
    score = st.verdict(1).score  # type: ignore[union-attr]
    # The same frames against a threshold above their score: rejected, naming the weakest cue group.
    strict_thr = stage("passive", threshold=min(round(score + 1, 2), 20), strict_threshold=20)
    feed(strict_thr, astronaut, box, 10)
    v = strict_thr.verdict(1)
    assert v is not None and not v.passed and "texture score" in v.reason


def test_strict_needs_every_cue_so_a_still_photo_fails(astronaut: np.ndarray) -> None:
    st = stage("strict")
    box = dlib_box(astronaut)
    feed(st, astronaut, box, 10, dt=0.1)  # 0.9 s: strict keeps watching
    assert st.verdict(1) is None
    v = st.conclude(1)  # the track ended
    assert not v.passed and v.policy == "strict"
    assert "no blink" in v.reason and "strict needs" in v.reason


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
        with_changes(load(None), {"liveness.threshold": 2.0, "liveness.strict_threshold": 1.0})
    assert "liveness.strict_threshold:" in str(exc.value) and "liveness.liveness" not in str(exc.value)
    with pytest.raises(ConfigError):
        with_changes(load(None), {"liveness.policy": "sometimes"})


def test_shipped_model_matches_the_features_and_records_its_build() -> None:
    from firmware_py.models.manifest import load_manifest

    path = load_manifest().require("liveness_texture_v1", load(None).models.dir)  # sha256 verified
    m = TextureModel.load(path)
    assert m.features == FRAME_FEATURE_NAMES
    assert m.build["script"] == "python -m firmware_py.liveness.train"
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
