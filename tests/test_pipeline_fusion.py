"""recognition.track_fusion = "mean": each walk-up frame is matched on the running mean of its track's descriptors (real clip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware_py.cli.main import main
from firmware_py.config import ConfigError, load, validate, with_changes
from firmware_py.decision.machine import DecisionParams


def test_mean_fusion_matches_the_running_mean_and_vote_each_frame(data_root: Path, models_dir: Path) -> None:
    from firmware_py.bench.walkup import enrol_descriptors, load_clip
    from firmware_py.capture.frame import Frame
    from firmware_py.gallery.matcher import Matcher
    from firmware_py.gallery.store import GalleryMatrix
    from firmware_py.pipeline.build import build_analyzer, live_quality_limits
    from firmware_py.pipeline.loop import RecognitionPipeline, quality_verdict
    from firmware_py.vision.embedding import describe_face, load_embedder

    cfg = load(None)
    embedder = load_embedder(cfg)
    enrol_analyzer = build_analyzer(cfg, enrolment=True)
    clips = [load_clip(data_root / "clips" / name, 1.0) for name in ("liveportrait_d3.mp4", "retalking_2.mp4")]
    rows, ids = [], []
    for c in clips:
        d = enrol_descriptors(c, enrol_analyzer, embedder, True, 2)
        rows += d
        ids += [c.person] * len(d)
    gallery = GalleryMatrix(np.array(rows, np.float32), np.array(ids, dtype=object), {}, embedder.version, 0, "")
    walk = clips[0]
    # k = n = 6: the first 6 usable frames are embedded and matched (then the identity is settled).
    params = DecisionParams(k=6, n=6, cooldown_s=0.0)

    def run(fusion: str) -> list:  # type: ignore[type-arg]
        analyzer = build_analyzer(cfg)
        p = RecognitionPipeline(
            analyzer, embedder, gallery, 0.40, 0.0, params, mirror=True, fusion=fusion, quality_limits=live_quality_limits(cfg, analyzer)
        )
        out = [p.process(Frame.from_rgbx(f, t, i, "clip")) for i, (f, t) in enumerate(zip(walk.frames[:8], walk.ts[:8], strict=True))]
        p.finish(walk.ts[8])
        assert p._descs == {}  # a track's descriptors are forgotten with the track
        return out

    vote, mean = run("vote"), run("mean")
    # The same frames, described independently with the reader's own front-end and gate.
    analyzer = build_analyzer(cfg)
    limits = live_quality_limits(cfg, analyzer)
    raw = []
    for i, (f, t) in enumerate(zip(walk.frames[:8], walk.ts[:8], strict=True)):
        obs = analyzer.process(Frame.from_rgbx(f, t, i, "clip")).primary
        if obs is not None and quality_verdict(obs.quality, limits)[0] and obs.chip is not None:
            raw.append(describe_face(embedder, obs.chips, True))
    matcher = Matcher(gallery, 0.40)
    v = [r.match.distance for r in vote if r.embedded]
    m = [r.match.distance for r in mean if r.embedded]
    assert len(v) == len(m) == 6 and len(raw) == 8  # k = 6 agreeing frames settle the track: no more embedding
    raw = raw[:6]
    assert v == pytest.approx([matcher.match(q).distance for q in raw], abs=1e-5)
    running = [matcher.match(np.mean(raw[max(0, j - 5) : j + 1], axis=0)).distance for j in range(len(raw))]
    assert m == pytest.approx(running, abs=1e-5)
    assert m[0] == pytest.approx(v[0], abs=1e-6) and m[1:] != pytest.approx(v[1:], abs=1e-4)  # fusion changed the later scores
    assert all(r.match.person_id == walk.person for r in mean if r.embedded)


def test_fusion_is_validated_where_it_enters() -> None:
    from firmware_py.pipeline.loop import RecognitionPipeline

    with pytest.raises(ConfigError, match="track_fusion"):
        validate({"recognition": {"track_fusion": "median"}})
    assert with_changes(load(None), {"recognition.track_fusion": "mean"}).recognition.track_fusion == "mean"
    with pytest.raises(ValueError, match="fusion"):
        RecognitionPipeline(None, None, None, 0.4, 0.0, DecisionParams(), fusion="median")  # type: ignore[arg-type]


def test_eval_identify_fusion_needs_walkups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "identify", "--root", str(tmp_path), "--fusion", "mean", "--json"]) == 2
    assert "--walkup" in capsys.readouterr().err
