"""The picamera2 driver, exercised with a stand-in ``picamera2`` module (this machine has no Pi camera).

The stand-in behaves like Picamera2's API as the driver uses it:
``global_camera_info``, ``create_video_configuration``, ``configure``,
``start``, ``capture_array(wait=False)`` returning a job, ``wait(job,
timeout)`` returning the frame or raising ``TimeoutError``, ``stop``, ``close``.
Frames come as XBGR8888, which picamera2 stores as R, G, B, 255 (kaoclock's RGBX frame layout).
It is also the camera behind the stall / loss / recovery tests, since it can
be told to stall and fail on cue.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from firmware_py.capture import CameraError, LatestFrame, PiCamera2Camera, backoff_delay, camera_from_config
from firmware_py.config import load
from firmware_py.config.loader import with_changes
from firmware_py.events import Event, EventBus


class StandInPicamera2:
    """One camera instance; ``plan`` says how many frames it gives before stalling (None: forever)."""

    world: dict[str, Any]

    def __init__(self, camera_num: int = 0) -> None:
        w = self.world
        w["opened"].append(time.monotonic())
        step = w["plan"].pop(0) if w["plan"] else None
        if isinstance(step, Exception):
            raise step
        self.camera_num = camera_num
        self.frames_left = step
        self.serial = len(w["opened"])
        self.count = 0
        self.config: dict[str, Any] | None = None
        self.started = self.closed = False
        self.calls: list[str] = []
        w["instances"].append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [{"Model": "imx708", "Num": 0}]

    def create_video_configuration(self, main: dict[str, Any], buffer_count: int, controls: dict[str, Any]) -> dict[str, Any]:
        return {"use_case": "video", "main": dict(main), "buffer_count": buffer_count, "controls": dict(controls)}

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera must be configured before starting")
        self.started = True
        self.calls.append("start")

    def capture_array(self, name: str = "main", wait: Any = None) -> Any:
        assert name == "main" and wait is False
        return ("job", self.serial)

    def wait(self, job: Any, timeout: float | None = None) -> np.ndarray:
        if self.world.get("fail_read"):
            raise RuntimeError("Device timeout detected, attempting a restart")
        if self.frames_left is not None and self.frames_left <= 0:
            time.sleep(timeout or 0)
            raise TimeoutError("stand-in camera stalled")
        if self.frames_left is not None:
            self.frames_left -= 1
        self.count += 1
        time.sleep(self.world["period"])
        w, h = self.config["main"]["size"]
        frame = np.empty((h, w, 4), np.uint8)
        frame[..., 0], frame[..., 1], frame[..., 2], frame[..., 3] = 30, 20, 10, 255  # XBGR8888: R, G, B, X in memory
        frame[0, 0, 2], frame[0, 0, 1] = self.serial, self.count % 256
        return frame

    def stop(self) -> None:
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        self.calls.append("close")
        self.closed = True


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Install the stand-in as the ``picamera2`` module; yields its shared state."""
    state: dict[str, Any] = {"plan": [], "opened": [], "instances": [], "period": 0.002}
    cls = type("Picamera2", (StandInPicamera2,), {"world": state})
    module = types.ModuleType("picamera2")
    module.Picamera2 = cls  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    yield state


def events_of(bus: EventBus) -> list[Event]:
    got: list[Event] = []
    bus.subscribe(got.append, "camera.")
    return got


def wait_for(cond: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_driver_configures_reads_rgb_and_releases(world: dict[str, Any]) -> None:
    cam = PiCamera2Camera(0, size=(320, 240), fps=20, rotation=180)
    with cam:
        inst = world["instances"][0]
        assert inst.config["main"] == {"size": (320, 240), "format": "XBGR8888"}
        assert inst.config["controls"]["FrameDurationLimits"] == (50000, 50000)
        assert inst.started
        f = cam.read(timeout=1)
        assert f is not None and f.image.shape == (240, 320, 3)
        assert f.rgbx is not None and f.rgbx.shape == (240, 320, 4) and f.rgbx.flags.c_contiguous
        assert np.shares_memory(f.image, f.rgbx)  # the RGB view of the camera's own pixels
        # R, G, B, X in memory -> R, G, B; rotated 180 degrees (pixel (0,0) moved to the far corner).
        assert f.image[5, 5].tolist() == [30, 20, 10]
        assert np.array_equal(np.asarray(f.pil()), f.image)
        assert f.image[-1, -1, 2] == inst.serial
        assert f.source == "picamera2:0" and f.ts == pytest.approx(time.time(), abs=2)
    assert inst.calls[-2:] == ["stop", "close"] and not cam.is_open


def test_driver_errors_are_clear(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CameraError, match="Pi camera 3 not found"):
        PiCamera2Camera(3).open()
    world["plan"] = [RuntimeError("Failed to acquire camera: Device or resource busy")]
    with pytest.raises(CameraError, match="Device or resource busy"):
        PiCamera2Camera(0).open()
    cam = PiCamera2Camera(0)
    cam.open()
    world["fail_read"] = True
    with pytest.raises(CameraError, match="read failed"):
        cam.read(timeout=0.1)
    cam.close()
    monkeypatch.setitem(sys.modules, "picamera2", None)  # not installed
    with pytest.raises(CameraError, match="picamera2 is not installed"):
        PiCamera2Camera(0).open()


def test_stall_times_out_instead_of_hanging(world: dict[str, Any]) -> None:
    world["plan"] = [1]
    with PiCamera2Camera(0, size=(64, 48)) as cam:
        assert cam.read(timeout=1) is not None
        t = time.monotonic()
        assert cam.read(timeout=0.1) is None
        assert time.monotonic() - t < 1


def test_config_builds_the_picamera2_backend(world: dict[str, Any]) -> None:
    cfg = with_changes(load(None), {"camera.backend": "picamera2", "camera.source": "0", "camera.width": 800, "camera.height": 600})
    cam = camera_from_config(cfg.camera)
    assert isinstance(cam, PiCamera2Camera) and cam.size == (800, 600) and cam.camera_num == 0


def test_stalled_then_lost_camera_is_reported_and_reopened_with_backoff(world: dict[str, Any]) -> None:
    # Camera 1 gives 5 frames then stalls; reopening fails twice (camera gone); camera 4 works.
    world["plan"] = [5, RuntimeError("no camera"), RuntimeError("no camera"), None]
    bus = EventBus()
    got = events_of(bus)
    cam = PiCamera2Camera(0, size=(64, 48))
    lf = LatestFrame(cam, bus, stall_timeout_s=0.2, backoff_initial_s=0.05, backoff_max_s=1.0)
    with lf:
        assert wait_for(lambda: any(e.type == "camera.recovered" for e in got))
        frame = lf.get(timeout=2)
        assert frame is not None and int(frame.image[0, 0, 2]) == 4  # comes from the 4th camera
        stats = lf.stats()
    types_ = [e.type for e in got]
    assert types_ == ["camera.stalled", "camera.lost", "camera.recovered"]
    stalled, lost, recovered = got
    assert stalled.severity == "warning" and stalled.data["no_frame_for_s"] >= 0.2
    assert lost.severity == "fault" and "no camera" in lost.data["error"]
    assert recovered.data["attempts"] == 3 and recovered.data["outage_s"] >= 0.2
    assert stats.stalls == 1 and stats.errors == 2 and stats.reopens == 1 and stats.state == "running"
    # Reopen attempts back off: the waits between attempts 2->3 and 3->4 grow (equal jitter keeps
    # each delay within [d/2, d] of 0.05, 0.1, 0.2 s).
    opened = world["opened"]
    gaps = np.diff(opened[1:])
    assert len(opened) == 4
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1
    assert all(c.closed for c in world["instances"][:1])


def test_read_errors_count_as_loss(world: dict[str, Any]) -> None:
    world["plan"] = [None, None]
    bus = EventBus()
    got = events_of(bus)
    lf = LatestFrame(PiCamera2Camera(0, size=(64, 48)), bus, stall_timeout_s=5, backoff_initial_s=0.02, backoff_max_s=0.05)
    with lf:
        assert lf.get(timeout=2) is not None
        world["fail_read"] = True
        assert wait_for(lambda: any(e.type == "camera.lost" for e in got))
        assert lf.state == "lost"
        world["fail_read"] = False
        assert wait_for(lambda: any(e.type == "camera.recovered" for e in got))
    assert "read failed" in got[0].data["error"]


def test_backoff_doubles_with_jitter_and_caps() -> None:
    import random

    rng = random.Random(7)
    for attempt, d in enumerate([0.5, 1, 2, 4, 8, 10, 10]):
        v = backoff_delay(attempt, 0.5, 10, rng)
        assert d / 2 <= v <= d
    values = {round(backoff_delay(3, 0.5, 10, rng), 6) for _ in range(20)}
    assert len(values) > 10  # jittered, not lock-step


def test_slow_consumer_gets_the_newest_frame_and_never_blocks_capture(world: dict[str, Any]) -> None:
    world["period"] = 0.005  # ~200 fps
    lf = LatestFrame(PiCamera2Camera(0, size=(64, 48)), None, stall_timeout_s=2)
    with lf:
        first = lf.get(timeout=2)
        assert first is not None
        before = lf.stats().captured
        time.sleep(0.3)  # the pipeline is busy: capture goes on
        assert lf.stats().captured - before >= 20
        newest = lf.get(timeout=1)
        assert newest is not None and newest.index - first.index >= 20
        counts = []
        for _ in range(3):
            f = lf.get(timeout=1)
            assert f is not None
            counts.append(f.index)
            time.sleep(0.05)
        s = lf.stats()
    assert s.dropped >= 20
    assert s.captured >= s.delivered + s.dropped - 1  # every frame was delivered, dropped, or is waiting
    assert all(b > a for a, b in itertools.pairwise(counts))


def test_stop_is_prompt_even_while_retrying(world: dict[str, Any]) -> None:
    world["plan"] = [RuntimeError("gone")] * 100
    lf = LatestFrame(PiCamera2Camera(0), None, backoff_initial_s=5, backoff_max_s=5)
    lf.start()
    assert wait_for(lambda: lf.state == "lost")
    t = time.monotonic()
    lf.stop()
    assert time.monotonic() - t < 1
    assert lf.finished and lf.get(timeout=0.1) is None
    assert not any(t.name.startswith("capture:") and t.is_alive() for t in threading.enumerate())
