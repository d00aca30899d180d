"""Capture: cameras and replayed files behind one small interface.

- :class:`Frame`: one RGB image with its timestamp, index and source.
- :class:`Camera`: ``open()``, ``read(timeout) -> Frame | None``, ``close()``,
  context manager.  Backends: :class:`PiCamera2Camera` (Pi camera modules),
  :class:`V4L2Camera` (USB webcams through PyAV), :class:`VideoReplay` and
  :class:`ImageFolderReplay` (files, for development, tests and evaluation).
- :class:`LatestFrame`: runs a camera in its own thread into a one-slot
  buffer, watches for stalls and loss, reopens with backoff, reports
  ``camera.*`` events.
- :func:`latest_frame_from_config`: the configured camera in a :class:`LatestFrame`.
"""

from firmware_py.capture.base import Camera, CameraError, EndOfStream
from firmware_py.capture.factory import camera_from_config, latest_frame_from_config
from firmware_py.capture.frame import Frame
from firmware_py.capture.latest import CaptureStats, LatestFrame, backoff_delay
from firmware_py.capture.picamera2_backend import PiCamera2Camera
from firmware_py.capture.replay import ImageFolderReplay, VideoReplay, replay
from firmware_py.capture.v4l2 import V4L2Camera

__all__ = [
    "Camera",
    "CameraError",
    "CaptureStats",
    "EndOfStream",
    "Frame",
    "ImageFolderReplay",
    "LatestFrame",
    "PiCamera2Camera",
    "V4L2Camera",
    "VideoReplay",
    "backoff_delay",
    "camera_from_config",
    "latest_frame_from_config",
    "replay",
]
