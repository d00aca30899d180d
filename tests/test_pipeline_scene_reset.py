"""A lost camera is a new scene: the daemon ends open tracks and the tracker starts afresh.

The camera is the real image-folder replay; only the USB fault is injected
(a read that fails once, as an unplugged webcam's does), and the real
:class:`LatestFrame` reports it and reopens the camera.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from firmware_py.capture.base import Camera, CameraError
from firmware_py.capture.latest import LatestFrame
from firmware_py.capture.replay import ImageFolderReplay
from firmware_py.config import load, with_changes
from firmware_py.events import EventBus
from firmware_py.gallery.store import open_from_config


class UnpluggedOnce(Camera):
    """The real folder replay, whose first session fails after ``fail_after`` frames (USB unplugged).

    Reopened, it plays the folder from the start with its timestamps from 0
    again, like a camera whose clock restarted.
    """

    def __init__(self, folder: Path, fail_after: int) -> None:
        super().__init__()
        self.inner = ImageFolderReplay(folder, fps=10.0)
        self.name = "usb-webcam"
        self.fail_after = fail_after
        self.sessions = 0
        self._served = 0

    @property
    def is_open(self) -> bool:
        return self.inner.is_open

    def open(self) -> None:
        self.inner.open()
        self.sessions += 1
        self._served = 0

    def _read_image(self, timeout: float | None) -> tuple[np.ndarray, float] | None:
        if self.sessions == 1 and self._served >= self.fail_after:
            raise CameraError("usb-webcam: read failed (device unplugged)")
        self._served += 1
        return self.inner._read_image(timeout)

    def close(self) -> None:
        self.inner.close()


def test_camera_loss_ends_the_open_track_and_the_reopened_scene_is_a_new_walk_up(tmp_path, models_dir, grace_hopper, grace_hopper_path):
    from firmware_py.gallery.enrol import enrol_photos
    from firmware_py.pipeline.build import build_analyzer, build_pipeline
    from firmware_py.pipeline.daemon import Daemon
    from firmware_py.vision.embedding import load_embedder

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(grace_hopper).save(folder / f"f{i:02d}.png", compress_level=1)
    # A still photo replayed for 0.6 s: liveness (passive by default) would rightly not let it in.
    cfg = with_changes(load(None), {"liveness.policy": "off"})
    embedder = load_embedder(cfg)
    log: list[tuple] = []
    bus = EventBus()
    bus.subscribe(lambda e: log.append(("event", e.type)), "camera.")
    with open_from_config(cfg) as store:
        enrol_photos(store, build_analyzer(cfg, enrolment=True), embedder, "grace", "Grace Hopper", [cfg.device.site], [grace_hopper_path])
        pipeline, _ = build_pipeline(cfg, store=store, embedder=embedder, bus=bus)

        class Sink:
            def on_decision(self, d):
                log.append(("decision", d.track_id, d.accepted, d.reason))

        # Two frames (fewer than the 3 agreeing frames a decision needs), then the camera fails.
        camera = UnpluggedOnce(folder, fail_after=2)
        source = LatestFrame(camera, bus, stall_timeout_s=5.0, backoff_initial_s=0.01, backoff_max_s=0.02, lossless=True)
        daemon = Daemon(source, pipeline, [Sink()], bus=bus, on_frame=[lambda r: log.append(("frame", r.track_id))])
        watchdog = threading.Timer(60, daemon.stop)  # never hang the suite
        watchdog.start()
        try:
            daemon.run()
        finally:
            watchdog.cancel()

    assert camera.sessions == 2
    events = [e[1] for e in log if e[0] == "event"]
    assert events[:2] == ["camera.lost", "camera.recovered"]
    first = next(e[1] for e in log if e[0] == "frame")
    # The track open at the loss was decided when the loss was reported (too few frames: timeout) ...
    ended = [e for e in log if e[0] == "decision" and e[1] == first]
    assert len(ended) == 1 and not ended[0][2] and ended[0][3] == "timeout"
    assert log.index(ended[0]) > log.index(("event", "camera.lost"))
    # ... and no later frame joined it: the reopened camera's frames are a new walk-up.
    after = [e[1] for e in log[log.index(ended[0]) :] if e[0] == "frame"]
    assert len(after) >= 6 and first not in after
    # That walk-up is decided on its own: Grace is let in.
    accepts = [e for e in log if e[0] == "decision" and e[2]]
    assert len(accepts) == 1 and accepts[0][1] in after
