"""Replay cameras: a real video file made with PyAV from real photos, and image folders."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from firmware_py.capture import CameraError, EndOfStream, Frame, ImageFolderReplay, VideoReplay, camera_from_config, replay
from firmware_py.config import load
from firmware_py.config.loader import with_changes


def make_video(path: Path, photos: list[np.ndarray], n: int = 12, fps: int = 10, size: tuple[int, int] = (320, 240)) -> Path:
    """An MPEG-4 video of ``n`` frames cycling through ``photos``, each scaled to ``size``."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.asarray(Image.fromarray(photos[i % len(photos)]).resize(size))
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture
def video(tmp_path: Path, grace_hopper: np.ndarray, astronaut: np.ndarray) -> Path:
    return make_video(tmp_path / "walkup.mp4", [grace_hopper, astronaut])


def read_all(cam: VideoReplay | ImageFolderReplay, limit: int = 1000) -> list[Frame]:
    frames = []
    with cam:
        for _ in range(limit):
            try:
                f = cam.read(timeout=5)
            except EndOfStream:
                break
            assert f is not None
            frames.append(f)
    return frames


def test_video_frames_have_increasing_media_timestamps(video: Path) -> None:
    frames = read_all(VideoReplay(video))
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    assert [round(f.ts, 3) for f in frames] == [round(i / 10, 3) for i in range(12)]
    f = frames[0]
    assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
    # 4 bytes per pixel like a camera's: the RGB image is a view of the RGBX pixels (X = 255).
    assert f.rgbx is not None and f.rgbx.shape == (240, 320, 4) and f.rgbx.flags.c_contiguous
    assert np.shares_memory(f.image, f.rgbx) and (f.rgbx[:, :, 3] == 255).all()
    assert f.source == str(video)
    # Real content: Grace Hopper's blue background on the first frame, the astronaut's on the second.
    assert f.image[:, :, 2].mean() > f.image[:, :, 0].mean()
    assert not np.array_equal(frames[0].image, frames[1].image)


def test_video_loop_keeps_time_running_forward(video: Path) -> None:
    frames = read_all(VideoReplay(video, loop=True), limit=30)
    ts = [f.ts for f in frames]
    assert len(frames) == 30
    assert all(b > a for a, b in itertools.pairwise(ts))
    assert ts[12] == pytest.approx(1.2, abs=1e-6)  # the loop continues one frame period on


def test_video_resized_like_a_camera_mode_and_rotated(video: Path) -> None:
    (f, *_) = read_all(VideoReplay(video, size=(640, 480)), limit=1)
    assert f.image.shape == (480, 640, 3)
    (g, *_) = read_all(VideoReplay(video, rotation=90), limit=1)
    assert g.image.shape == (320, 240, 3) and g.rgbx is not None and g.rgbx.flags.c_contiguous
    (upright, *_) = read_all(VideoReplay(video), limit=1)
    assert np.array_equal(g.image, np.rot90(upright.image, k=-1))  # 90 degrees clockwise, RGBX kept through the turn


def test_video_realtime_pacing(video: Path) -> None:
    cam = VideoReplay(video, realtime=True)
    with cam:
        t0 = time.monotonic()
        for _ in range(6):
            assert cam.read(timeout=2) is not None
        elapsed = time.monotonic() - t0
    assert 0.45 <= elapsed < 1.5  # frames 0..5 at 10 fps: 0.5 s
    # A timeout shorter than the next frame's due time returns None instead of blocking.
    cam = VideoReplay(video, realtime=True)
    with cam:
        assert cam.read(timeout=1) is not None
        assert cam.read(timeout=0.01) is None
        assert cam.read(timeout=1) is not None


def test_missing_and_corrupt_videos_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="does not exist"):
        VideoReplay(tmp_path / "nope.mp4").open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(CameraError, match="cannot open video"):
        VideoReplay(junk).open()


def test_image_folder_is_a_sequence_at_the_configured_fps(tmp_path: Path, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    Image.fromarray(grace_hopper).save(folder / "001.jpg")
    Image.fromarray(astronaut).save(folder / "002.png")
    Image.fromarray(grace_hopper).convert("L").save(folder / "003.png")  # greyscale becomes RGB
    (folder / "004.jpg").write_bytes(b"this is not a jpeg")  # skipped, not fatal
    (folder / "notes.txt").write_text("ignored")
    cam = ImageFolderReplay(folder, fps=4)
    frames = read_all(cam)
    assert [f.ts for f in frames] == [0.0, 0.25, 0.5]
    assert frames[0].image.shape == grace_hopper.shape and frames[1].image.shape == astronaut.shape
    assert frames[2].image.ndim == 3 and frames[2].image.shape[2] == 3
    assert cam.skipped == 1
    looped = read_all(ImageFolderReplay(folder, fps=4, loop=True), limit=7)
    assert [f.ts for f in looped] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    sized = read_all(ImageFolderReplay(folder, fps=4, size=(320, 240)), limit=1)
    assert sized[0].image.shape == (240, 320, 3)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="does not exist"):
        ImageFolderReplay(tmp_path / "missing").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="holds no images"):
        ImageFolderReplay(tmp_path / "empty").open()


def test_replay_picks_the_backend_and_config_builds_it(tmp_path: Path, video: Path) -> None:
    assert isinstance(replay(video), VideoReplay)
    assert isinstance(replay(tmp_path), ImageFolderReplay)
    cfg = with_changes(load(None), {"camera.source": str(video), "camera.replay_loop": True, "camera.replay_resize": True, "camera.hflip": True})
    cam = camera_from_config(cfg.camera)
    assert isinstance(cam, VideoReplay) and cam.loop and cam.size == (640, 480) and cam.hflip
    with pytest.raises(CameraError, match=r"camera\.source is empty"):
        camera_from_config(load(None).camera)
