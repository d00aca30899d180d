"""[service]: how the daemon tells systemd it is alive."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class ServiceConfig(Section):
    """Readiness, watchdog and heartbeat of the daemon under systemd."""

    frame_stall_seconds: float = setting(
        10.0,
        gt=0,
        le=600,
        doc="Without a processed frame for this long the daemon stops petting the systemd watchdog (systemd then restarts it).",
    )
    heartbeat: bool = setting(True, doc="Write <data_dir>/run/heartbeat.json while running, so `kaoclock health` sees frames flowing.")
