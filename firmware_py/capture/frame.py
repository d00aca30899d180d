"""The unit of capture: one RGB image and when it was taken.

Cameras deliver 4 bytes per pixel (R, G, B, X): picamera2's ``XBGR8888``
and PyAV's ``rgba`` are laid out that way, and it is the layout Pillow keeps
RGB images in, so the vision code wraps a frame in a Pillow image without
copying it (:func:`rgbx_pil`).  ``Frame.image`` is the (H, W, 3) RGB view of
those pixels, for numpy consumers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Frame:
    """One camera frame.

    - ``image``: ``(H, W, 3)`` uint8 RGB.  For frames from a camera or a
      replay (built by :meth:`from_rgbx`) it is a view of ``rgbx``, so its
      rows are contiguous but its pixels are 4 bytes apart: slice it, index
      it, read it; ``np.ascontiguousarray`` of a large region is slow (numpy
      copies 3 bytes at a time), so hand Pillow :meth:`pil` instead.
    - ``ts``: seconds.  Live cameras: UTC epoch time of capture.  Replay:
      the frame's media timestamp (video: its presentation time; image
      folder: index / fps), continuing upwards across loops.
    - ``index``: 0, 1, 2, ... in the order the source produced frames
      (counts dropped frames too, so gaps show where frames were dropped).
    - ``source``: where it came from (device, file or folder path).
    - ``rgbx``: the same pixels as ``(H, W, 4)`` uint8 R, G, B, X
      (C-contiguous), or ``None`` for a frame made from a plain RGB array.
    """

    image: np.ndarray
    ts: float
    index: int
    source: str
    rgbx: np.ndarray | None = None

    @classmethod
    def from_rgbx(cls, rgbx: np.ndarray, ts: float, index: int, source: str) -> Frame:
        """A frame over 4-byte R, G, B, X pixels ``(H, W, 4)`` (made C-contiguous if it is not)."""
        if rgbx.ndim != 3 or rgbx.shape[2] != 4 or rgbx.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 4) uint8 RGBX pixels, got {rgbx.dtype} {rgbx.shape}")
        rgbx = np.ascontiguousarray(rgbx)
        return cls(rgbx[:, :, :3], ts, index, source, rgbx)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def pixels(self) -> np.ndarray:
        """What the vision code reads: ``rgbx`` when the frame has it, else ``image``."""
        return self.rgbx if self.rgbx is not None else self.image

    def pil(self) -> Image.Image:
        """The frame as a Pillow ``RGB`` image: shares the pixels of an RGBX frame, a copy otherwise."""
        if self.rgbx is not None:
            return rgbx_pil(self.rgbx)
        return Image.fromarray(np.ascontiguousarray(self.image))


def to_rgbx(image: np.ndarray) -> np.ndarray:
    """``(H, W, 4)`` RGBX pixels of an RGB ``(H, W, 3)`` uint8 image (a copy; X = 255)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).convert("RGBX"))


def _map_rgb(rgbx: np.ndarray) -> Image.Image:
    # Pillow stores RGB as 4 bytes per pixel: its own buffer mapper (what Image.frombuffer uses for
    # RGBX/RGBA) can present our pixels as an "RGB" image without copying them.  frombuffer itself
    # only maps 4-byte *raw* modes, which would make every crop RGBX (4 channels) downstream.
    h, w = rgbx.shape[:2]
    core = Image.core.map_buffer(rgbx, (w, h), "raw", 0, ("RGB", w * 4, 1))
    im = Image.Image()._new(core)
    im.readonly = 1
    return im


def _copy_rgb(rgbx: np.ndarray) -> Image.Image:
    h, w = rgbx.shape[:2]
    return Image.frombuffer("RGBX", (w, h), rgbx, "raw", "RGBX", 0, 1).convert("RGB")


def _mapper_works() -> bool:
    """Whether this Pillow maps an RGBX buffer as an RGB image that reads the right pixels."""
    probe = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    try:
        im = _map_rgb(probe)
        return im.mode == "RGB" and im.size == (3, 2) and np.array_equal(np.asarray(im), probe[:, :, :3])
    except Exception:  # an older or newer Pillow without the mapper: copy instead
        return False


_ZERO_COPY = _mapper_works()


def rgbx_pil(rgbx: np.ndarray) -> Image.Image:
    """A Pillow ``RGB`` image of ``(H, W, 4)`` C-contiguous RGBX pixels, sharing their memory.

    The image reads ``rgbx`` directly (keep the array alive and unchanged
    while the image is used); on a Pillow whose mapper does not allow this
    it is a copy (:data:`ZERO_COPY` says which).
    """
    if rgbx.ndim != 3 or rgbx.shape[2] != 4 or rgbx.dtype != np.uint8 or not rgbx.flags.c_contiguous:
        raise ValueError(f"expected C-contiguous (H, W, 4) uint8 RGBX pixels, got {rgbx.dtype} {rgbx.shape}")
    return _map_rgb(rgbx) if _ZERO_COPY else _copy_rgb(rgbx)


ZERO_COPY = _ZERO_COPY
