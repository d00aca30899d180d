"""The backend's state directory: its signing key, the device registry and the punch database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("KAOCLOCK_BACKEND_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "kaoclock-backend"


@dataclass(frozen=True)
class BackendHome:
    root: Path

    @property
    def key_file(self) -> Path:
        return self.root / "backend_ed25519.pem"

    @property
    def devices_dir(self) -> Path:
        return self.root / "devices"

    @property
    def template_key(self) -> Path:
        """AES-256 key of the HR master's photos and templates (mode 0600; back it up apart from the database)."""
        return self.root / "templates.key"

    @property
    def db_file(self) -> Path:
        return self.root / "punches.sqlite"
