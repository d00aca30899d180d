"""The unit of capture: one RGB image and when it was taken."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One camera frame.

    - ``image``: ``(H, W, 3)`` uint8 RGB, C-contiguous (ready for numpy and Pillow).
    - ``ts``: seconds.  Live cameras: UTC epoch time of capture.  Replay:
      the frame's media timestamp (video: its presentation time; image
      folder: index / fps), continuing upwards across loops.
    - ``index``: 0, 1, 2, ... in the order the source produced frames
      (counts dropped frames too, so gaps show where frames were dropped).
    - ``source``: where it came from (device, file or folder path).
    """

    image: np.ndarray
    ts: float
    index: int
    source: str

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])
