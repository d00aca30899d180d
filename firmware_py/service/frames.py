"""Read a few frames from the configured camera, for the health check.

Uses the capture package's own backends (:func:`firmware_py.capture.camera_from_config`),
so the health check opens the camera exactly as the daemon does: replay of a
video file or image folder, V4L2, or picamera2. The whole probe runs in a
thread with a deadline, because opening a wedged device can block.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    pass


class NoCameraToCheck(Exception):
    """The configured source is the built-in demo: there is no camera to probe."""


@dataclass(frozen=True)
class FrameProbe:
    frames: int
    width: int
    height: int
    seconds: float
    source: str


def _read(camera_cfg: Any, count: int, deadline: float) -> list[np.ndarray]:
    from firmware_py.capture import EndOfStream, camera_from_config

    frames: list[np.ndarray] = []
    with camera_from_config(camera_cfg) as cam:
        while len(frames) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                frame = cam.read(timeout=remaining)
            except EndOfStream:
                break  # a short replay file or folder: what it has is enough
            if frame is None:
                break
            frames.append(frame.image)
    return frames


def read_frames(camera_cfg: Any, count: int = 3, timeout: float = 10.0) -> FrameProbe:
    """Read up to ``count`` frames from ``camera_cfg`` (a [camera] section) within ``timeout`` seconds.

    Raises :class:`NoCameraToCheck` for the built-in demo, the capture package's
    ``CameraError`` when the camera cannot be opened, and ``TimeoutError``
    when no frame arrives in time.
    """
    if camera_cfg.backend == "replay" and not camera_cfg.source:
        raise NoCameraToCheck("camera.source is '' (the built-in demo): no camera to check")
    result: dict[str, Any] = {}
    t0 = time.monotonic()

    def work() -> None:
        try:
            result["frames"] = _read(camera_cfg, count, t0 + timeout)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=work, name="health-frames", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    seconds = time.monotonic() - t0
    if thread.is_alive():
        raise TimeoutError(f"the {camera_cfg.backend} camera did not open within {timeout:.0f} s")
    if "error" in result:
        raise result["error"]
    frames = result["frames"]
    if not frames:
        raise TimeoutError(f"no frame from the {camera_cfg.backend} camera {camera_cfg.source or ''} within {timeout:.0f} s".replace("  ", " "))
    h, w = frames[0].shape[:2]
    return FrameProbe(len(frames), w, h, seconds, camera_cfg.source or camera_cfg.backend)
