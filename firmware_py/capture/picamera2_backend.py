"""Raspberry Pi camera modules through picamera2 (libcamera).

picamera2 is imported only when this backend opens, so the rest of kaoclock
runs where it is absent.  On a reader it comes from Raspberry Pi OS
(``apt install python3-picamera2``; the venv is created with
``--system-site-packages``).

Frames are requested as ``XBGR8888``, which picamera2 documents as 32 bits
per pixel stored as **R, G, B, 255**: exactly the RGBX layout kaoclock's
frames use (see :mod:`firmware_py.capture.frame`), so the frame is handed on
without a copy (``RGB888``, stored B, G, R, needed a channel swap copying
the whole frame in the capture thread).  Reads wait for a frame with picamera2's job API
(``capture_array(wait=False)`` then ``wait(job, timeout)``), so a stalled
sensor times out instead of hanging the capture thread.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from firmware_py.capture.base import Camera, CameraError


class PiCamera2Camera(Camera):
    """A Pi camera module.

    :param camera_num: which camera (0 for the first CSI port).
    :param size: (width, height) of the main stream.
    :param fps: frame rate (sets the ``FrameDurationLimits`` control).
    :param buffer_count: libcamera buffers; few keeps latency low.

    ``Frame.ts`` is the UTC epoch time at which the frame was read.
    """

    def __init__(
        self,
        camera_num: int = 0,
        *,
        size: tuple[int, int] = (640, 480),
        fps: float = 15.0,
        buffer_count: int = 2,
        rotation: int = 0,
        hflip: bool = False,
    ) -> None:
        super().__init__(rotation=rotation, hflip=hflip)
        self.camera_num = camera_num
        self.name = f"picamera2:{camera_num}"
        self.size = size
        self.fps = fps
        self.buffer_count = buffer_count
        self._cam: Any = None
        self._job: Any = None  # a capture that timed out is waited for again, not abandoned

    @property
    def is_open(self) -> bool:
        return self._cam is not None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise CameraError(
                "picamera2 is not installed (fix: on Raspberry Pi OS `sudo apt install python3-picamera2` and create the venv with "
                "--system-site-packages; elsewhere set camera.backend to 'v4l2' or 'replay')"
            ) from None
        try:
            cams = Picamera2.global_camera_info()
        except Exception:  # older picamera2 lacks it; opening will tell
            cams = None
        if cams is not None and self.camera_num >= len(cams):
            raise CameraError(
                f"Pi camera {self.camera_num} not found ({len(cams)} camera(s) detected) "
                "(fix: check the ribbon cable and `rpicam-hello --list-cameras`)"
            )
        cam = None
        try:
            cam = Picamera2(self.camera_num)
            frame_us = int(1_000_000 / self.fps)
            config = cam.create_video_configuration(
                main={"size": tuple(self.size), "format": "XBGR8888"},
                buffer_count=self.buffer_count,
                controls={"FrameDurationLimits": (frame_us, frame_us)},
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:  # libcamera raises RuntimeError, IndexError, OSError...
            if cam is not None:
                with contextlib.suppress(Exception):
                    cam.close()
            raise CameraError(
                f"cannot start Pi camera {self.camera_num}: {exc} (fix: check the cable, and that no other program uses the camera)"
            ) from None
        self._cam = cam

    def _read_image(self, timeout: float | None) -> tuple[np.ndarray, float] | None:
        cam = self._cam
        if cam is None:
            raise CameraError(f"Pi camera {self.camera_num} is not open")
        try:
            if self._job is None:
                self._job = cam.capture_array("main", wait=False)
            try:
                pixels = cam.wait(self._job, timeout=timeout)
            except TypeError:  # picamera2 older than 0.3.13: no timeout
                pixels = cam.wait(self._job)
            self._job = None
        except TimeoutError:
            return None
        except Exception as exc:
            self._job = None
            raise CameraError(f"Pi camera {self.camera_num} read failed: {exc}") from None
        ts = time.time()
        arr = np.asarray(pixels)
        if arr.ndim != 3 or arr.shape[2] != 4 or arr.dtype != np.uint8:
            raise CameraError(f"Pi camera {self.camera_num} gave a frame of {arr.dtype} {arr.shape}, expected XBGR8888 (H, W, 4) uint8")
        return arr, ts  # R, G, B, X in memory: the frame's own layout

    def close(self) -> None:
        cam, self._cam = self._cam, None
        self._job = None
        if cam is None:
            return
        for step in (cam.stop, cam.close):
            with contextlib.suppress(Exception):  # a lost camera may fail to stop; it is released anyway
                step()
