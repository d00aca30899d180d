"""Build the configured camera and its latest-frame buffer from the [camera] config section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_py.capture.base import Camera, CameraError
from firmware_py.capture.latest import LatestFrame
from firmware_py.capture.picamera2_backend import PiCamera2Camera
from firmware_py.capture.replay import replay
from firmware_py.capture.v4l2 import V4L2Camera
from firmware_py.config.model import Config
from firmware_py.config.sections.camera import CameraConfig
from firmware_py.events import EventBus


def camera_from_config(cam: CameraConfig, source: str | Path | None = None) -> Camera:
    """The :class:`Camera` that ``[camera]`` describes; ``source`` overrides ``camera.source``."""
    src = str(source) if source is not None else cam.source
    orient: dict[str, Any] = {"rotation": cam.rotation, "hflip": cam.hflip}
    size = (cam.width, cam.height)
    if cam.backend == "replay":
        if not src:
            raise CameraError(
                "camera.source is empty: the replay backend needs a video file or an image folder (fix: set camera.source or pass --source)"
            )
        return replay(
            src,
            fps=cam.fps,
            realtime=cam.replay_realtime,
            loop=cam.replay_loop,
            size=size if cam.replay_resize else None,
            **orient,
        )
    if cam.backend == "v4l2":
        return V4L2Camera(src or "/dev/video0", size=size, fps=cam.fps, input_format=cam.v4l2_format, **orient)
    if cam.backend == "picamera2":
        return PiCamera2Camera(int(src or 0), size=size, fps=cam.fps, **orient)
    raise CameraError(f"camera.backend {cam.backend!r} is unknown (fix: use replay, v4l2 or picamera2)")


def latest_frame_from_config(cfg: Config, bus: EventBus | None = None, source: str | Path | None = None) -> LatestFrame:
    """The configured camera wrapped in a :class:`LatestFrame` (not started: call ``start()``)."""
    cam = cfg.camera
    camera = camera_from_config(cam, source)
    return LatestFrame(
        camera,
        bus,
        stall_timeout_s=cam.stall_timeout_s,
        backoff_initial_s=cam.reopen_backoff_s,
        backoff_max_s=cam.reopen_backoff_max_s,
        lossless=cam.backend == "replay" and not cam.replay_realtime,
    )
