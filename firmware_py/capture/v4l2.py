"""V4L2 / USB webcams through PyAV's ``v4l2`` input (FFmpeg's libavdevice)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.capture.base import Camera, CameraError


class V4L2Camera(Camera):
    """A webcam such as ``/dev/video0``.

    :param device: the V4L2 device node.
    :param size: requested (width, height); the driver picks the nearest mode.
    :param fps: requested frame rate.
    :param input_format: V4L2 pixel format to ask for, e.g. ``"mjpeg"`` (USB
        webcams deliver 640x480 at 30 fps only compressed); ``""`` lets the
        driver choose.
    :param open_timeout: seconds to wait for the device to answer on open.

    ``Frame.ts`` is the UTC epoch time at which the frame was read.
    """

    def __init__(
        self,
        device: str = "/dev/video0",
        *,
        size: tuple[int, int] = (640, 480),
        fps: float = 15.0,
        input_format: str = "",
        open_timeout: float = 5.0,
        rotation: int = 0,
        hflip: bool = False,
    ) -> None:
        super().__init__(rotation=rotation, hflip=hflip)
        self.device = device
        self.name = device
        self.size = size
        self.fps = fps
        self.input_format = input_format
        self.open_timeout = open_timeout
        self._container: Any = None
        self._frames: Iterator[Any] | None = None

    @property
    def is_open(self) -> bool:
        return self._container is not None

    def open(self) -> None:
        import av

        if not Path(self.device).exists():
            raise CameraError(
                f"v4l2 camera {self.device} not found (fix: plug in the webcam, check `ls /dev/video*`, or set camera.source to its device node)"
            )
        options = {"video_size": f"{self.size[0]}x{self.size[1]}", "framerate": f"{self.fps:g}"}
        if self.input_format:
            options["input_format"] = self.input_format
        try:
            # timeout: (open, read) in seconds, so a dead device cannot hang the capture thread forever.
            self._container = av.open(self.device, format="v4l2", options=options, timeout=(self.open_timeout, self.open_timeout))
        except PermissionError:
            raise CameraError(f"v4l2 camera {self.device}: permission denied (fix: add the service user to the 'video' group)") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise CameraError(f"cannot open v4l2 camera {self.device}: {exc} (fix: check the device and that no other program holds it)") from None
        stream = self._container.streams.video[0]
        self._frames = self._container.decode(stream)

    def _read_image(self, timeout: float | None) -> tuple[np.ndarray, float] | None:
        import av

        if self._frames is None:
            raise CameraError(f"v4l2 camera {self.device} is not open")
        try:
            vf = next(self._frames)
        except StopIteration:
            raise CameraError(f"v4l2 camera {self.device} stopped delivering frames") from None
        except av.error.FFmpegError as exc:
            raise CameraError(f"v4l2 camera {self.device} read failed: {exc}") from None
        ts = time.time()
        return np.ascontiguousarray(vf.to_ndarray(format="rgba")), ts  # 4 bytes per pixel: see capture/frame.py

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # a dying device may fail to close; it is released anyway
                pass
            finally:
                self._container = None
                self._frames = None
