"""With the real data: a replayed clip of an enrolled person is accepted; a clip of someone else is "unknown"."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_py.config import load, with_changes
from firmware_py.events import EventBus
from firmware_py.gallery.store import open_from_config


def late_frames(video: Path, out: Path, every: int = 15) -> list[Path]:
    """Photos from the clip's second half: enrolment from moments seconds away from the replayed start."""
    import av

    with av.open(str(video)) as c:
        stream = c.streams.video[0]
        frames = [f.to_image() for f in c.decode(stream)]
    picks = frames[len(frames) // 2 :: every]
    paths = []
    for i, img in enumerate(picks):
        p = out / f"late_{i:02d}.png"
        img.convert("RGB").save(p)
        paths.append(p)
    return paths


def replay(cfg, store, embedder, source: Path, frames: int):
    from firmware_py.capture.factory import latest_frame_from_config
    from firmware_py.pipeline.build import build_pipeline
    from firmware_py.pipeline.daemon import Daemon

    cfg = with_changes(cfg, {"camera.source": str(source), "camera.replay_realtime": False})
    bus = EventBus()
    pipeline, _ = build_pipeline(cfg, store=store, embedder=embedder, bus=bus)
    got = []

    class Sink:
        def on_decision(self, d):
            got.append(d)

    Daemon(latest_frame_from_config(cfg, bus), pipeline, [Sink()], bus=bus).run(max_frames=frames)
    return got


def test_enrolled_person_accepted_stranger_unknown(data_root, models_dir, tmp_path):
    from firmware_py.gallery.enrol import check_photo, enrol_photos
    from firmware_py.pipeline.build import build_analyzer
    from firmware_py.vision.embedding import load_embedder

    clips = data_root / "clips"
    cfg = load(None)
    embedder = load_embedder(cfg)
    analyzer = build_analyzer(cfg, enrolment=True)
    # The first late frame that passes the enrolment gates (a talking head blurs now and then).
    photo = next(p for p in late_frames(clips / "liveportrait_d3.mp4", tmp_path) if check_photo(analyzer, embedder, p).ok)
    with open_from_config(cfg) as store:
        enrol_photos(store, analyzer, embedder, "p-d3", "Clip D3", [cfg.device.site], [photo])
        enrolled = replay(cfg, store, embedder, clips / "liveportrait_d3.mp4", 40)
        stranger = replay(cfg, store, embedder, clips / "retalking_1.mp4", 40)
    assert enrolled, "no decision on the enrolled person's clip"
    assert enrolled[0].accepted and enrolled[0].reason == "match" and enrolled[0].person_id == "p-d3"
    # The accept names the liveness models that passed it (they go into the punch's "models").
    versions = enrolled[0].model_versions
    assert versions["liveness.minifasnet_v2"].startswith("minifasnet-v2-f16-") and versions["liveness.texture"] == "liveness_texture_v4"
    assert enrolled[0].liveness is not None and enrolled[0].liveness.cues["learned"] >= enrolled[0].liveness.threshold
    assert stranger, "no decision on the stranger's clip"
    assert not stranger[0].accepted and stranger[0].reason == "unknown"
    assert stranger[0].distance > stranger[0].threshold


@pytest.mark.parametrize("clip", ["liveportrait_d0.mp4"])
def test_empty_gallery_says_unknown(data_root, models_dir, clip):
    from firmware_py.vision.embedding import load_embedder

    cfg = load(None)
    with open_from_config(cfg) as store:
        got = replay(cfg, store, load_embedder(cfg), data_root / "clips" / clip, 30)
    assert got and got[0].reason == "unknown" and got[0].person_id is None
