"""Read a few frames from the configured camera, for the health check.

The capture room (``firmware_py.capture``, built by another helper) owns the
real frame pipeline; it is not on main yet, so this small function reads
frames directly: Pillow for a replay folder of images, PyAV for a replay video
file or a V4L2 device, picamera2 for a Pi camera. When the capture room lands,
this should call its backends instead so the health check exercises the very
code the daemon runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm")


class NoCameraToCheck(Exception):
    """The configured source is the built-in demo: there is no camera to probe."""


@dataclass(frozen=True)
class FrameProbe:
    frames: int
    width: int
    height: int
    seconds: float
    source: str


def _replay(source: str, count: int) -> list[np.ndarray]:
    if not source:
        raise NoCameraToCheck("camera.source is '' (the built-in demo): no camera to check")
    path = Path(source)
    if path.is_dir():
        from PIL import Image

        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise OSError(f"replay folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        frames = []
        for p in images[:count]:
            with Image.open(p) as im:
                frames.append(np.asarray(im.convert("RGB")))
        return frames
    if not path.is_file():
        raise OSError(f"replay source {path} does not exist")
    return _pyav(str(path), count, None, {})


def _pyav(url: str, count: int, fmt: str | None, options: dict[str, str]) -> list[np.ndarray]:
    import av

    frames: list[np.ndarray] = []
    with av.open(url, format=fmt, options=options) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= count:
                break
    if not frames:
        raise OSError(f"{url} gave no video frame")
    return frames


def _picamera2(width: int, height: int, count: int) -> list[np.ndarray]:
    from picamera2 import Picamera2

    cam = Picamera2()
    try:
        cam.configure(cam.create_video_configuration(main={"size": (width, height), "format": "RGB888"}))
        cam.start()
        return [cam.capture_array() for _ in range(count)]
    finally:
        cam.close()


def read_frames(camera: Any, count: int = 3, timeout: float = 10.0) -> FrameProbe:
    """Read ``count`` frames from ``camera`` (a [camera] config section) within ``timeout`` seconds."""
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            if camera.backend == "replay":
                result["frames"] = _replay(camera.source, count)
            elif camera.backend == "v4l2":
                opts = {"video_size": f"{camera.width}x{camera.height}", "framerate": f"{camera.fps:g}"}
                result["frames"] = _pyav(camera.source or "/dev/video0", count, "v4l2", opts)
            else:
                result["frames"] = _picamera2(camera.width, camera.height, count)
        except BaseException as exc:
            result["error"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=work, name="health-frames", daemon=True)
    thread.start()
    thread.join(timeout)
    seconds = time.monotonic() - t0
    if thread.is_alive():
        raise TimeoutError(f"no {count} frames from the {camera.backend} camera within {timeout:.0f} s")
    if "error" in result:
        raise result["error"]
    frames = result["frames"]
    h, w = frames[0].shape[:2]
    return FrameProbe(len(frames), w, h, seconds, camera.source or camera.backend)
