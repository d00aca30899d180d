"""Per-stage latency percentiles and frame rate over a sliding window: a ready-made pipeline provider.

The pipeline calls :meth:`StageTimes.record` for each stage of each frame,
:meth:`StageTimes.frame` once per processed frame and :meth:`StageTimes.face`
when a face is in view; the telemetry collector calls :meth:`snapshot`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` (0-100) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class StageTimes:
    """Rolling latency samples (last ``window`` per stage) and frame times (last ``fps_window_s``)."""

    def __init__(self, window: int = 300, fps_window_s: float = 10.0) -> None:
        self.window = window
        self.fps_window_s = fps_window_s
        self._stages: dict[str, deque[float]] = {}
        self._frames: deque[float] = deque()
        self._last_face: float | None = None
        self._lock = threading.Lock()

    def record(self, stage: str, ms: float) -> None:
        with self._lock:
            q = self._stages.get(stage)
            if q is None:
                q = self._stages[stage] = deque(maxlen=self.window)
            q.append(float(ms))

    def frame(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._frames.append(now)
            while self._frames and self._frames[0] < now - self.fps_window_s:
                self._frames.popleft()

    def face(self, ts: float | None = None) -> None:
        """A face is in view (epoch seconds); feeds the no-face-for-a-long-time alarm."""
        self._last_face = time.time() if ts is None else ts

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """``{"fps", "stages": {name: {"p50_ms", "p95_ms", "n"}}, "last_face_ts"}`` (the pipeline provider contract)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._frames and self._frames[0] < now - self.fps_window_s:
                self._frames.popleft()
            frames = list(self._frames)
            stages = {k: sorted(v) for k, v in self._stages.items() if v}
        fps = (len(frames) - 1) / (frames[-1] - frames[0]) if len(frames) >= 2 and frames[-1] > frames[0] else 0.0
        return {
            "fps": round(fps, 2),
            "stages": {k: {"p50_ms": round(percentile(v, 50), 3), "p95_ms": round(percentile(v, 95), 3), "n": len(v)} for k, v in stages.items()},
            "last_face_ts": self._last_face,
        }
