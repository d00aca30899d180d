"""[device]: who this reader is and where it keeps its state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from firmware_py.config.schema import Problem, Section, setting

ID_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"


def default_data_dir() -> Path:
    """$KAOCLOCK_HOME, else ~/.local/share/kaoclock (a board sets /var/lib/kaoclock)."""
    env = os.environ.get("KAOCLOCK_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "kaoclock"


@dataclass(frozen=True)
class DeviceConfig(Section):
    """Identity of this reader and where it keeps its state."""

    id: str = setting("demo-reader", doc="Device id, used in MQTT topics and punches (lowercase letters, digits, '-').", pattern=ID_PATTERN)
    site: str = setting("demo-site", doc="Site id, used in MQTT topics and to scope the gallery.", pattern=ID_PATTERN)
    timezone: str = setting("Asia/Tokyo", doc="IANA time zone of the site; the attendance day and 'auto' direction use it.")
    data_dir: Path = setting(default_factory=default_data_dir, doc="Directory for the device's state: keys, gallery, outbox, logs.")

    def check(self) -> Iterator[Problem]:
        try:
            ZoneInfo(self.timezone)
        except Exception:
            yield Problem("timezone", f"unknown time zone {self.timezone!r}", 'use an IANA name such as "Asia/Tokyo"')
