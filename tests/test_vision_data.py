"""Vision on the shared real-face data set (skipped without KAOCLOCK_DATA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.capture import EndOfStream, VideoReplay
from firmware_py.config import load
from firmware_py.vision.analyzer import FaceAnalyzer


@pytest.fixture(scope="module")
def analyzer(models_dir: Path) -> FaceAnalyzer:
    return FaceAnalyzer.from_config(load(None), models_dir=models_dir)


def test_faces_found_in_lfw_photos(data_root: Path, analyzer: FaceAnalyzer) -> None:
    files = sorted((data_root / "lfw-dev" / "images").glob("*/*.jpg"))
    assert len(files) > 1000
    picked = files[:: len(files) // 40][:40]
    found = 0
    for f in picked:
        image = np.asarray(Image.open(f).convert("RGB"))
        faces = analyzer.detector.detect(image)
        if faces:
            found += 1
            # LFW centres the named person: some face sits near the middle of the 250x250 photo.
            assert min(np.hypot(d.centre[0] - 125, d.centre[1] - 125) for d in faces) < 40, f
    assert found >= 39


def test_a_talking_head_clip_is_one_track(data_root: Path, analyzer: FaceAnalyzer) -> None:
    clip = data_root / "clips" / "liveportrait_d3.mp4"
    analyzer.reset()
    ids: set[int] = set()
    frames = with_face = 0
    with VideoReplay(clip, size=(640, 480)) as cam:
        while frames < 90:
            try:
                f = cam.read()
            except EndOfStream:
                break
            assert f is not None
            obs = analyzer.analyze(f)
            frames += 1
            if obs:
                with_face += 1
                ids.add(obs[0].track_id)
                assert obs[0].chip is not None and obs[0].quality is not None
                assert obs[0].landmarks is not None and obs[0].landmarks.presence > 0.5
    assert frames == 90 and with_face >= 88
    assert len(ids) == 1
