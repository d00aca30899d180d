"""[camera]: which capture backend feeds the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class CameraConfig(Section):
    """The frame source: a Pi camera, a V4L2 webcam, or replayed files."""

    backend: Literal["replay", "v4l2", "picamera2"] = setting("replay", doc="Capture backend.")
    source: str = setting("", doc="replay: a video file or image folder ('' = the built-in demo); v4l2: a device such as /dev/video0.")
    width: int = setting(640, ge=64, le=4096, doc="Frame width in pixels.")
    height: int = setting(480, ge=48, le=4096, doc="Frame height in pixels.")
    fps: float = setting(15.0, gt=0, le=120, doc="Requested frame rate.")
