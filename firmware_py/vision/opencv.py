"""OpenCV, set up once for the reader's per-frame pixel work (the detector's letterbox, the FaceMesh crop).

OpenCV's warps read a camera frame in place (RGB or RGBX, any row stride it
is given as a C-contiguous array) with SIMD fixed-point arithmetic: on fresh
640x480 frames, about half the time of the numpy / Pillow paths they
replaced (``firmware_py/vision/README.md``, "Per-frame cost").
"""

from __future__ import annotations

import cv2
import numpy as np

from firmware_py.capture.frame import rgbx_of

# One thread: each warp writes 12k-37k pixels, too few for OpenCV's pool to pay for waking
# itself, and the reader's other core belongs to capture and the backend link.
cv2.setNumThreads(1)


def warp_source(image: np.ndarray) -> np.ndarray:
    """``image`` as the C-contiguous RGB ``(H, W, 3)`` or RGBX ``(H, W, 4)`` uint8 array OpenCV's warps read.

    A frame's RGB view is swapped for the RGBX pixels behind it (read in
    place, not copied 3 bytes at a time); any other non-contiguous array is
    copied.  Anything else is refused with its dtype and shape.
    """
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3) or RGBX pixels (H, W, 4), got {image.dtype} {image.shape}")
    if image.flags.c_contiguous:
        return image
    px = rgbx_of(image)
    return px if px is not None else np.ascontiguousarray(image)


__all__ = ["cv2", "warp_source"]
