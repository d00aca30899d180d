"""LatestFrame over real replays, the configured source, and a V4L2 webcam that is not there."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.capture import CameraError, ImageFolderReplay, LatestFrame, V4L2Camera, camera_from_config, latest_frame_from_config
from firmware_py.config import load
from firmware_py.config.loader import with_changes
from firmware_py.events import Event, EventBus


@pytest.fixture
def folder(tmp_path: Path, grace_hopper: np.ndarray, astronaut: np.ndarray) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(6):
        Image.fromarray(grace_hopper if i % 2 == 0 else astronaut).resize((160, 120)).save(d / f"{i:03d}.png")
    return d


def test_lossless_replay_delivers_every_frame_in_order(folder: Path) -> None:
    bus = EventBus()
    got: list[Event] = []
    bus.subscribe(got.append, "camera.")
    lf = LatestFrame(ImageFolderReplay(folder, fps=10), bus, lossless=True)
    with lf:
        frames = list(lf.frames(timeout=2))
    assert [f.index for f in frames] == list(range(6))
    assert [f.ts for f in frames] == pytest.approx([i / 10 for i in range(6)])
    assert lf.stats().dropped == 0 and lf.finished
    assert [e.type for e in got] == ["camera.ended"] and got[0].data["frames"] == 6


def test_realtime_replay_drops_old_frames_for_a_slow_consumer(folder: Path) -> None:
    lf = LatestFrame(ImageFolderReplay(folder, fps=100, realtime=True, loop=True), None)
    with lf:
        indices = []
        for _ in range(5):
            f = lf.get(timeout=2)
            assert f is not None
            indices.append(f.index)
            time.sleep(0.1)  # a slow pipeline: about 10 frames arrive meanwhile
        s = lf.stats()
    gaps = np.diff(indices)
    assert (gaps >= 5).all(), indices  # each get returns the newest frame, not the next in line
    assert s.dropped >= 20 and s.delivered == 5


def test_end_of_a_finite_replay(folder: Path) -> None:
    lf = LatestFrame(ImageFolderReplay(folder, fps=200, realtime=True), None)
    with lf:
        time.sleep(0.3)
        last = lf.get(timeout=1)  # the newest frame survives the end of the stream
        assert last is not None and last.index == 5
        assert lf.get(timeout=1) is None and lf.finished and lf.state == "ended"


def test_from_config_wires_the_replay(folder: Path) -> None:
    cfg = with_changes(load(None), {"camera.source": str(folder), "camera.replay_realtime": False, "camera.stall_timeout_s": 1.5})
    lf = latest_frame_from_config(cfg, EventBus())
    assert lf.lossless and lf.stall_timeout_s == 1.5 and isinstance(lf.camera, ImageFolderReplay)
    with lf:
        assert len(list(lf.frames(timeout=2))) == 6
    # A source given on the command line overrides the config.
    assert latest_frame_from_config(load(None), None, source=folder).camera.name == str(folder)


def test_missing_webcam_is_a_clear_error() -> None:
    cam = V4L2Camera("/dev/video-kaoclock-missing", size=(640, 480), fps=15)
    with pytest.raises(CameraError) as ei:
        cam.open()
    msg = str(ei.value)
    assert "/dev/video-kaoclock-missing" in msg and "not found" in msg and "fix:" in msg


def test_not_a_camera_device_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "video9"
    fake.write_bytes(b"")
    with pytest.raises(CameraError, match=r"cannot open v4l2 camera .*video9"):
        V4L2Camera(str(fake), open_timeout=1).open()


def test_missing_webcam_is_retried_with_backoff_and_reported_once() -> None:
    bus = EventBus()
    got: list[Event] = []
    bus.subscribe(got.append, "camera.")
    lf = LatestFrame(V4L2Camera("/dev/video-kaoclock-missing"), bus, backoff_initial_s=0.02, backoff_max_s=0.16)
    with lf:
        time.sleep(0.8)
        s = lf.stats()
        assert lf.get(timeout=0.05) is None
    assert s.state == "lost" and 4 <= s.errors <= 40
    assert [e.type for e in got] == ["camera.lost"]  # once per outage, not per attempt
    assert "not found" in got[0].data["error"] and got[0].data["source"] == "/dev/video-kaoclock-missing"
    assert lf.last_error and "/dev/video-kaoclock-missing" in lf.last_error


def test_config_builds_v4l2_and_refuses_bad_sources() -> None:
    cfg = with_changes(load(None), {"camera.backend": "v4l2", "camera.source": "/dev/video2", "camera.v4l2_format": "mjpeg"})
    cam = camera_from_config(cfg.camera)
    assert isinstance(cam, V4L2Camera) and cam.device == "/dev/video2" and cam.input_format == "mjpeg"
    from firmware_py.config.schema import ConfigError

    with pytest.raises(ConfigError, match=r"camera\.source"):
        with_changes(load(None), {"camera.backend": "v4l2", "camera.source": "video0"})
    with pytest.raises(ConfigError, match="reopen_backoff_s"):
        with_changes(load(None), {"camera.reopen_backoff_s": 60.0, "camera.reopen_backoff_max_s": 10.0})
