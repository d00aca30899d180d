"""OpenCV, set up once for the reader's per-frame pixel work (the detector's letterbox, the FaceMesh crop).

OpenCV's warps read a camera frame in place (RGB or RGBX, any row stride it
is given as a C-contiguous array) with SIMD fixed-point arithmetic: on fresh
640x480 frames, about half the time of the numpy / Pillow paths they
replaced (``firmware_py/vision/README.md``, "Per-frame cost").
"""

from __future__ import annotations

import cv2

# One thread: each warp writes 12k-37k pixels, too few for OpenCV's pool to pay for waking
# itself, and the reader's other core belongs to capture and the backend link.
cv2.setNumThreads(1)

__all__ = ["cv2"]
