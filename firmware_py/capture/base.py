"""The camera interface every capture backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType

import numpy as np

from firmware_py.capture.frame import Frame
from firmware_py.errors import ExitCode, KaoclockError


class CameraError(KaoclockError):
    """A camera cannot be opened or read: the message names the device or file and the fix."""

    exit_code = ExitCode.UNAVAILABLE


class EndOfStream(Exception):
    """A finite source (a replayed file or folder, not looping) has no more frames."""


class Camera(ABC):
    """A frame source.

    Use as a context manager, or call :meth:`open` / :meth:`close`.
    :meth:`read` returns the next :class:`Frame`, ``None`` if none arrived
    within ``timeout`` seconds, raises :class:`EndOfStream` when a finite
    source is exhausted, and :class:`CameraError` when the device fails
    (the caller may :meth:`close` and :meth:`open` it again).

    ``rotation`` (0, 90, 180, 270 degrees clockwise) and ``hflip`` turn the
    image the way the camera is mounted; they are applied after capture by
    every backend alike.
    """

    name: str = "camera"

    def __init__(self, *, rotation: int = 0, hflip: bool = False) -> None:
        if rotation not in (0, 90, 180, 270):
            raise ValueError(f"rotation must be 0, 90, 180 or 270, got {rotation}")
        self.rotation = rotation
        self.hflip = hflip
        self._index = 0

    @abstractmethod
    def open(self) -> None:
        """Acquire the device or file; raises :class:`CameraError` naming it when it cannot."""

    @abstractmethod
    def _read_image(self, timeout: float | None) -> tuple[np.ndarray, float] | None:
        """Backend hook: the next (image, ts), or None on timeout.

        The image is ``(H, W, 4)`` R, G, B, X (what cameras deliver, kept
        without a copy: see :mod:`firmware_py.capture.frame`) or ``(H, W, 3)`` RGB.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the device or file (safe to call twice)."""

    @property
    def is_open(self) -> bool:
        return False

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or ``None`` after ``timeout`` seconds without one."""
        got = self._read_image(timeout)
        if got is None:
            return None
        image, ts = got
        image = self._orient(image)
        if image.shape[2] == 4:
            frame = Frame.from_rgbx(image, ts, self._index, self.name)
        else:
            frame = Frame(image=image, ts=ts, index=self._index, source=self.name)
        self._index += 1
        return frame

    def _orient(self, image: np.ndarray) -> np.ndarray:
        if self.rotation:
            image = np.rot90(image, k=-(self.rotation // 90))
        if self.hflip:
            image = image[:, ::-1]
        return image if image.flags.c_contiguous else np.ascontiguousarray(image)

    def __enter__(self) -> Camera:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def frames_of(camera: Camera, limit: int | None = None) -> Iterator[Frame]:
    """An open camera's frames until it ends (end of stream, or no frame in time), at most ``limit``."""
    n = 0
    while limit is None or n < limit:
        try:
            frame = camera.read()
        except EndOfStream:
            return
        if frame is None:
            return
        n += 1
        yield frame
