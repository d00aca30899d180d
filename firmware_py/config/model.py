"""The whole configuration: one section per room."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_py.config.schema import Section, setting
from firmware_py.config.sections.camera import CameraConfig
from firmware_py.config.sections.device import DeviceConfig
from firmware_py.config.sections.liveness import LivenessConfig
from firmware_py.config.sections.logging import LoggingConfig
from firmware_py.config.sections.models import ModelsConfig
from firmware_py.config.sections.service import ServiceConfig
from firmware_py.config.sections.update import UpdateConfig


@dataclass(frozen=True)
class Config(Section):
    """kaoclock configuration (TOML). Every key is optional; defaults form the embedded demo."""

    schema_version: int = setting(1, ge=1, le=1, doc="Version of this configuration format.")
    device: DeviceConfig = setting(default_factory=DeviceConfig, doc="This reader's identity and state directory.")
    models: ModelsConfig = setting(default_factory=ModelsConfig, doc="Model files.")
    camera: CameraConfig = setting(default_factory=CameraConfig, doc="Frame source.")
    liveness: LivenessConfig = setting(default_factory=LivenessConfig, doc="Presentation-attack detection.")
    logging: LoggingConfig = setting(default_factory=LoggingConfig, doc="Logging.")
    update: UpdateConfig = setting(default_factory=UpdateConfig, doc="Signed release updates (A/B slots).")
    service: ServiceConfig = setting(default_factory=ServiceConfig, doc="systemd readiness and watchdog.")
