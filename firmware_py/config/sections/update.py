"""[update]: A/B release slots, the release key, and how long a new release gets to prove itself."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from firmware_py.config.schema import Section, setting


def default_slots_root() -> Path:
    """$KAOCLOCK_SLOTS, else /opt/kaoclock."""
    env = os.environ.get("KAOCLOCK_SLOTS")
    return Path(env).expanduser() if env else Path("/opt/kaoclock")


@dataclass(frozen=True)
class UpdateConfig(Section):
    """Signed release bundles installed into A/B slots, health-checked, rolled back on failure."""

    slots_root: Path = setting(default_factory=default_slots_root, doc="Directory holding slots/a, slots/b, venvs/ and the current/committed links.")
    public_key: Path = setting(
        Path("/etc/kaoclock/release.pub"), doc="The vendor's Ed25519 release public key(s), PEM; bundles signed by another key are refused."
    )
    health_deadline: float = setting(
        120.0, ge=5, le=3600, doc="Seconds a new release has to pass its health check after the switch; then it is rolled back."
    )
    max_boot_attempts: int = setting(3, ge=1, le=20, doc="Starts of a release on trial without a passed health check before it is rolled back.")
    max_bundle_mb: int = setting(512, ge=1, le=8192, doc="Largest bundle accepted (compressed and unpacked), in MiB.")
    service: str = setting(
        "kaoclock.service", pattern=r"([A-Za-z0-9@._-]+\.service)?", doc="systemd unit restarted after a switch ('' = do not restart)."
    )
    restart_command: str = setting("", doc="Shell command that restarts the reader where systemd is not used ('' = systemd or nothing).")
    service_user: str = setting("kaoclock", doc="User the health check runs as when the updater runs as root (the unit's User=).")
