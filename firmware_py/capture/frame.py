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


def rgbx_of(image: np.ndarray) -> np.ndarray | None:
    """The ``(H, W, 4)`` RGBX pixels behind ``image``, or ``None`` if it has none.

    ``image`` may be RGBX pixels themselves (returned if C-contiguous) or the
    ``(H, W, 3)`` RGB view of them (a frame's ``image``): then the 4-byte
    layout is found through the array that owns the memory, so any code
    handed ``frame.image`` can still read the pixels in place.
    """
    if image.ndim != 3 or image.dtype != np.uint8:
        return None
    h, w, c = image.shape
    if c == 4:
        return image if image.flags.c_contiguous else None
    if c != 3 or h == 0 or w == 0 or image.strides != (w * 4, 4, 1):
        return None
    owner = image.base
    while isinstance(owner, np.ndarray) and not owner.flags.c_contiguous and isinstance(owner.base, np.ndarray):
        owner = owner.base
    if not isinstance(owner, np.ndarray) or not owner.flags.c_contiguous:
        return None
    lo = owner.__array_interface__["data"][0]
    start = image.__array_interface__["data"][0]
    if start < lo or start + h * w * 4 > lo + owner.nbytes:  # the X byte of every pixel must be there too
        return None
    return np.ndarray((h, w, 4), np.uint8, buffer=owner.reshape(-1).view(np.uint8), offset=start - lo)


def pil_region(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """A Pillow RGB image holding at least ``image[y0:y1, x0:x1]``, and the frame position of its (0, 0).

    For a frame's RGB view of RGBX pixels it is the whole frame, mapped
    without a copy (origin (0, 0)); for a plain RGB array, a copy of only
    the region (origin (x0, y0)).  Pillow copies 3-byte pixels into its own
    4-byte layout, and numpy copies a view 3 bytes at a time, so either way
    this is the cheap path to Pillow.
    """
    px = rgbx_of(image)
    if px is not None:
        return rgbx_pil(px), (0, 0)
    x0, y0, x1, y1 = box
    return Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])), (x0, y0)
