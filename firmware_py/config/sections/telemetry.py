"""[telemetry]: health reporting."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class TelemetryConfig(Section):
    """Health reporting (R14): periodic telemetry and the alarms derived from it."""

    interval_s: float = setting(60.0, ge=1, le=86400, doc="Seconds between telemetry messages on the telemetry topic.")

    no_face_alarm_s: float = setting(
        0.0, ge=0, le=604800, doc="Raise camera.no_face when no face was seen for this many seconds (0 = never; e.g. 14400 at a busy gate)."
    )
