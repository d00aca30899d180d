"""[camera]: which capture backend feeds the pipeline, and how capture is watched."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Problem, Section, setting


@dataclass(frozen=True)
class CameraConfig(Section):
    """The frame source: a Pi camera, a V4L2 webcam, or replayed files."""

    backend: Literal["replay", "v4l2", "picamera2"] = setting("replay", doc="Capture backend.")
    source: str = setting(
        "",
        doc="replay: a video file or image folder ('' = the built-in demo); v4l2: a device such as /dev/video0; picamera2: camera number ('' = 0).",
    )
    width: int = setting(640, ge=64, le=4096, doc="Frame width in pixels.")
    height: int = setting(480, ge=48, le=4096, doc="Frame height in pixels.")
    fps: float = setting(15.0, gt=0, le=120, doc="Requested frame rate (replay of an image folder: frames per second).")
    rotation: Literal[0, 90, 180, 270] = setting(0, doc="Rotate frames clockwise by this many degrees (how the camera is mounted).")
    hflip: bool = setting(False, doc="Mirror frames left-right.")
    v4l2_format: str = setting("", doc="v4l2: pixel format to request, e.g. 'mjpeg' ('' = the driver's choice).", pattern=r"[a-z0-9_]{0,16}")
    replay_realtime: bool = setting(
        True, doc="replay: deliver frames at their own timestamps like a camera (false: as fast as they are taken, none dropped)."
    )
    replay_loop: bool = setting(False, doc="replay: start again at the end instead of finishing.")
    replay_resize: bool = setting(False, doc="replay: scale frames to width x height like a camera mode (false: keep their own size).")
    stall_timeout_s: float = setting(3.0, gt=0, le=600, doc="Seconds without a frame after which the camera counts as stalled and is reopened.")
    reopen_backoff_s: float = setting(0.5, gt=0, le=600, doc="First delay before reopening a stalled or lost camera; doubles on each failure.")
    reopen_backoff_max_s: float = setting(30.0, gt=0, le=3600, doc="Longest delay between reopen attempts.")

    def check(self) -> Iterator[Problem]:
        if self.reopen_backoff_s > self.reopen_backoff_max_s:
            yield Problem(
                "reopen_backoff_s",
                f"{self.reopen_backoff_s} exceeds reopen_backoff_max_s {self.reopen_backoff_max_s}",
                "set it <= reopen_backoff_max_s",
            )
        if self.backend == "picamera2" and self.source and not self.source.isdigit():
            yield Problem("source", f"{self.source!r} is not a Pi camera number", "use '' or a number such as '0'")
        if self.backend == "v4l2" and self.source and not self.source.startswith("/dev/"):
            yield Problem("source", f"{self.source!r} is not a device node", "use a device such as '/dev/video0' (or '' for it)")
