"""The watchdog is petted only while frames are processed: it stops when the camera stalls and resumes when frames flow.

Real parts: frames decoded by Pillow from a real photo in a replay folder, a
real petting thread, a real AF_UNIX datagram socket standing in for systemd.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.config import with_changes
from firmware_py.config.model import Config
from firmware_py.service.health import check_camera
from firmware_py.service.heartbeat import Heartbeat, read_live
from firmware_py.service.notify import Notifier
from firmware_py.service.watchdog import Watchdog


class StallableCamera:
    """Replays a folder of images as fast as the pipeline takes them; ``stall()`` makes it deliver nothing."""

    def __init__(self, folder: Path) -> None:
        self.paths = sorted(folder.iterdir())
        self.flowing = threading.Event()
        self.flowing.set()
        self.i = 0

    def next_frame(self) -> np.ndarray:
        self.flowing.wait()  # a stalled camera: the read blocks
        with Image.open(self.paths[self.i % len(self.paths)]) as im:
            self.i += 1
            return np.asarray(im.convert("RGB"))


def pipeline(camera: StallableCamera, wd: Watchdog, stop: threading.Event) -> None:
    while not stop.is_set():
        frame = camera.next_frame()
        assert frame.ndim == 3
        wd.frame_processed()
        time.sleep(0.01)


def wait_for(sock: socket.socket, predicate, timeout: float = 10.0) -> list[str]:
    """Datagrams until one satisfies ``predicate`` (fails after ``timeout``)."""
    got: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append(msg)
        if predicate(msg):
            return got
    pytest.fail(f"no expected datagram within {timeout} s; got {got}")


def drain(sock: socket.socket) -> list[str]:
    sock.settimeout(0.0)
    out = []
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out


def test_petting_stops_when_the_camera_stalls_and_resumes_when_frames_flow(
    tmp_path: Path, grace_hopper_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "camera"
    folder.mkdir()
    for i in range(3):
        Image.open(grace_hopper_path).save(folder / f"{i}.png")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    beat_path = tmp_path / "run" / "heartbeat.json"
    wd = Watchdog(Notifier(str(tmp_path / "notify.sock")), timeout=0.2, stall_after=0.4, heartbeat=Heartbeat(beat_path))
    camera = StallableCamera(folder)
    stop = threading.Event()
    worker = threading.Thread(target=pipeline, args=(camera, wd, stop), daemon=True)
    wd.start()
    worker.start()
    try:
        wait_for(sock, lambda m: m == "WATCHDOG=1")
        assert wd.frames > 0

        camera.flowing.clear()  # the camera stalls
        wait_for(sock, lambda m: m.startswith("STATUS=camera stalled"))
        drain(sock)
        pets = wd.pets
        time.sleep(5 * wd.interval)
        quiet = drain(sock)
        assert "WATCHDOG=1" not in quiet and wd.pets == pets, quiet
        beat = read_live(beat_path)
        assert beat is not None and beat["stalled"] is True

        # `kaoclock health` sees the stall through the heartbeat (the daemon holds the camera).
        cfg = with_changes(Config(), {"device.data_dir": str(tmp_path), "service.frame_stall_seconds": 0.4})
        monkeypatch.setenv("RUNTIME_DIRECTORY", str(beat_path.parent))
        check = check_camera(cfg, 1, 5.0)
        assert check.status == "fail" and "has processed no frame" in check.detail

        camera.flowing.set()  # frames flow again
        wait_for(sock, lambda m: m == "STATUS=processing frames")
        wait_for(sock, lambda m: m == "WATCHDOG=1")  # petted again
        time.sleep(2 * wd.interval)
        assert check_camera(cfg, 1, 5.0).status == "ok"
    finally:
        stop.set()
        camera.flowing.set()
        wd.stop()
        worker.join(2)
        sock.close()
    assert not beat_path.exists()


def test_a_pipeline_that_never_delivers_a_first_frame_is_not_petted_after_the_grace(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n.sock"))
    wd = Watchdog(Notifier(str(tmp_path / "n.sock")), timeout=0.2, stall_after=0.3)
    wd.start()
    try:
        wait_for(sock, lambda m: m.startswith("STATUS=camera stalled"))
        drain(sock)
        time.sleep(4 * wd.interval)
        assert "WATCHDOG=1" not in drain(sock)
    finally:
        wd.stop()
        sock.close()


def test_without_watchdogsec_status_is_still_kept_but_nothing_is_petted(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n.sock"))
    clock = [0.0]
    wd = Watchdog(Notifier(str(tmp_path / "n.sock")), timeout=None, stall_after=1.0, clock=lambda: clock[0])
    wd.frame_processed()
    assert wd.tick() is False and drain(sock) == []
    clock[0] = 2.0
    wd.tick()
    assert drain(sock) == ["STATUS=camera stalled: no frame processed for 2.0 s; watchdog not petted"]
    sock.close()
