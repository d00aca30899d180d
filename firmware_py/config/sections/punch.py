"""[punch]: signed attendance punches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class PunchConfig(Section):
    """Signed punches (JWS, EdDSA) under the device's own key."""

    key_file: Path | None = setting(None, doc="The device's Ed25519 private key (PEM, mode 0600); unset = <data_dir>/keys/device_ed25519.pem.")
