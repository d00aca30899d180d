"""The face front-end the liveness evaluation and training run on: the daemon's own.

Everything that touches the vision package (detector, landmarks, tracker) goes
through this one module, so evaluation, training and the daemon see the same
faces the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from firmware_py.errors import ExitCode, KaoclockError

if TYPE_CHECKING:
    from firmware_py.config import Config


class FrontEndMissing(KaoclockError):
    """The vision front-end (firmware_py.vision.analyzer) is not in this build."""

    exit_code = ExitCode.UNAVAILABLE


class FrontEnd:
    """One vision ``FaceAnalyzer`` for every presentation, its tracker reset between them (tracks never leak).

    Loading the LiteRT models once, not per presentation, keeps a full dev
    evaluation to a couple of minutes.
    """

    def __init__(self, cfg: Config) -> None:
        try:
            from firmware_py.capture.frame import Frame
            from firmware_py.vision.analyzer import FaceAnalyzer
        except ImportError as exc:
            raise FrontEndMissing(
                f"the face front-end is missing ({exc}): liveness evaluation and training need "
                "firmware_py.vision.analyzer and firmware_py.capture.frame (the vision package)"
            ) from None
        self._cfg = cfg
        self._frame_cls = Frame
        self._analyzer_cls = FaceAnalyzer
        self._analyzer: Any = None
        self.reset()

    def reset(self) -> None:
        """Start a new presentation: forget every track."""
        reset = getattr(self._analyzer, "reset", None)
        if callable(reset):
            reset()
        else:
            self._analyzer = self._analyzer_cls.from_config(self._cfg)

    def analyze(self, image: NDArray[np.uint8], ts: float, index: int, source: str = "eval") -> tuple[Any, list[Any]]:
        """(the Frame, its face observations, largest first as the analyzer gives them)."""
        frame = self._frame_cls(image=image, ts=ts, index=index, source=source)
        return frame, list(self._analyzer.analyze(frame))


def largest(observations: list[Any]) -> Any | None:
    """The observation with the largest face box (the person at the reader)."""
    if not observations:
        return None

    def area(o: Any) -> float:
        x0, y0, x1, y1 = o.detection.box
        return float((x1 - x0) * (y1 - y0))

    return max(observations, key=area)
