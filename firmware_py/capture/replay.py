"""Replay: a video file (through PyAV) or a folder of images as a camera.

For development, tests, evaluation and the demo.  :class:`VideoReplay`
decodes a file with its real presentation timestamps; :class:`ImageFolderReplay`
plays the images of a folder in file-name order at a fixed frame rate.

Both can *pace* frames in real time (``realtime=True``: a frame is not
returned before its timestamp has elapsed since the first one, as a camera
would deliver it) and *loop* (start again at the end, timestamps continuing
upwards so a tracker never sees time run backwards).  Without looping,
:meth:`~firmware_py.capture.base.Camera.read` raises
:class:`~firmware_py.capture.base.EndOfStream` at the end.

``size=(width, height)`` scales every frame like a camera mode would; by
default frames keep their own size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from firmware_py.capture.base import Camera, CameraError, EndOfStream
from firmware_py.capture.still import open_still

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff"})


class _Pacer:
    """Sleeps so that media time and wall time advance together."""

    def __init__(self) -> None:
        self._t0: float | None = None
        self._ts0 = 0.0

    def reset(self) -> None:
        self._t0 = None

    def wait(self, ts: float, timeout: float | None) -> bool:
        """Block until ``ts`` is due; False if that is further away than ``timeout``."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0, self._ts0 = now, ts
            return True
        delay = (self._t0 + (ts - self._ts0)) - now
        if delay <= 0:
            return True
        if timeout is not None and delay > timeout:
            time.sleep(timeout)
            return False
        time.sleep(delay)
        return True


class _ReplayBase(Camera):
    def __init__(
        self,
        path: Path | str,
        *,
        realtime: bool = False,
        loop: bool = False,
        size: tuple[int, int] | None = None,
        rotation: int = 0,
        hflip: bool = False,
    ) -> None:
        super().__init__(rotation=rotation, hflip=hflip)
        self.path = Path(path)
        self.name = str(self.path)
        self.realtime = realtime
        self.loop = loop
        self.size = size
        self._pacer = _Pacer()
        self._pending: tuple[np.ndarray, float] | None = None
        self._ts_offset = 0.0  # added to media timestamps after each loop
        self._last_ts: float | None = None
        self._period = 1 / 15

    def _next_raw(self) -> tuple[np.ndarray, float] | None:
        """The source's next (image, media ts), None at its end."""
        raise NotImplementedError

    def _rewind(self) -> None:
        raise NotImplementedError

    def _read_image(self, timeout: float | None) -> tuple[np.ndarray, float] | None:
        if self._pending is None:
            got = self._next_raw()
            if got is None:
                if not self.loop or self._last_ts is None:
                    raise EndOfStream(self.name)
                # Continue the clock one frame period after the last frame.
                self._rewind()
                first = self._next_raw()
                if first is None:
                    raise EndOfStream(self.name)
                self._ts_offset = self._last_ts + self._period - first[1]
                got = first
            image, ts = got
            self._pending = (image, ts + self._ts_offset)
        image, ts = self._pending
        if self.realtime and not self._pacer.wait(ts, timeout):
            return None
        self._pending = None
        if self._last_ts is not None and ts > self._last_ts:
            self._period = min(max(ts - self._last_ts, 1e-3), 1.0)
        self._last_ts = ts
        return image, ts


class VideoReplay(_ReplayBase):
    """A video file decoded with PyAV; ``Frame.ts`` is each frame's presentation time in seconds."""

    def __init__(self, path: Path | str, **kw: Any) -> None:
        super().__init__(path, **kw)
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._fallback_rate = 25.0
        self._decoded = 0

    @property
    def is_open(self) -> bool:
        return self._container is not None

    def open(self) -> None:
        import av

        if not self.path.is_file():
            raise CameraError(f"replay source {self.path} does not exist or is not a file (fix: give a video file or an image folder)")
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise CameraError(f"cannot open video {self.path}: {exc} (fix: give a readable video file, e.g. H.264 .mp4)") from None
        if not self._container.streams.video:
            self._container.close()
            self._container = None
            raise CameraError(f"{self.path} has no video stream (fix: give a video file)")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self._fallback_rate = float(rate) if rate else 25.0
        self._period = 1 / self._fallback_rate
        self._frames = self._container.decode(stream)
        self._decoded = 0
        self._pacer.reset()

    def _rewind(self) -> None:
        self.close()
        self.open()

    def _next_raw(self) -> tuple[np.ndarray, float] | None:
        import av

        if self._frames is None:
            raise CameraError(f"video {self.path} is not open (fix: call open() first)")
        try:
            vf = next(self._frames)
        except StopIteration:
            return None
        except av.error.FFmpegError as exc:
            raise CameraError(f"cannot decode {self.path} after frame {self._decoded}: {exc}") from None
        ts = float(vf.time) if vf.time is not None else self._decoded / self._fallback_rate
        self._decoded += 1
        # RGBA (alpha 255): the 4-byte layout cameras deliver and Pillow wraps without a copy (capture/frame.py).
        image = vf.to_ndarray(format="rgba", width=self.size[0], height=self.size[1]) if self.size else vf.to_ndarray(format="rgba")
        return np.ascontiguousarray(image), ts

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None
                self._frames = None


class ImageFolderReplay(_ReplayBase):
    """The images of a folder in file-name order as frames ``1/fps`` seconds apart.

    An image that cannot be decoded is skipped with a warning (counted in
    :attr:`skipped`), so one corrupt file does not end a replay.
    """

    def __init__(self, path: Path | str, *, fps: float = 15.0, **kw: Any) -> None:
        super().__init__(path, **kw)
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = float(fps)
        self._period = 1 / self.fps
        self._files: list[Path] = []
        self._pos = 0
        self._opened = False
        self.skipped = 0

    @property
    def is_open(self) -> bool:
        return self._opened

    def open(self) -> None:
        if not self.path.is_dir():
            raise CameraError(f"replay folder {self.path} does not exist (fix: give a folder of images or a video file)")
        self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._files:
            raise CameraError(f"replay folder {self.path} holds no images (fix: add {', '.join(sorted(IMAGE_SUFFIXES))} files or give a video file)")
        self._pos = 0
        self._opened = True
        self._pacer.reset()

    def _rewind(self) -> None:
        self._pos = 0

    def _next_raw(self) -> tuple[np.ndarray, float] | None:
        if not self._opened:
            raise CameraError(f"replay folder {self.path} is not open (fix: call open() first)")
        while self._pos < len(self._files):
            i = self._pos
            self._pos += 1
            try:
                with open_still(self._files[i]) as im:  # pixel limit checked before decoding
                    rgb = im.convert("RGB")
                    if self.size and rgb.size != self.size:
                        rgb = rgb.resize(self.size, Image.Resampling.BILINEAR)
                    image = np.asarray(rgb.convert("RGBX"))  # 4 bytes per pixel, like a camera's
            except (UnidentifiedImageError, OSError, ValueError) as exc:  # ImageTooLarge is a ValueError
                self.skipped += 1
                log.warning("replay: skipping unreadable image %s: %s", self._files[i], exc)
                continue
            return image, i / self.fps
        return None

    def close(self) -> None:
        self._opened = False


def replay(path: Path | str, *, fps: float = 15.0, **kw: Any) -> _ReplayBase:
    """A replay camera for ``path``: a folder of images or a video file."""
    p = Path(path)
    if p.is_dir():
        return ImageFolderReplay(p, fps=fps, **kw)
    return VideoReplay(p, **kw)
