"""[liveness]: presentation-attack detection policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class LivenessConfig(Section):
    """Presentation-attack detection (photos, screens, replayed video)."""

    policy: Literal["off", "passive", "strict"] = setting(
        "off", doc="off: no check; passive: decide within the walk-up window; strict: longer window, every cue must pass."
    )
