"""The whole configuration: one section per room."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_py.config.schema import Section, setting
from firmware_py.config.sections.camera import CameraConfig
from firmware_py.config.sections.decision import DecisionConfig
from firmware_py.config.sections.device import DeviceConfig
from firmware_py.config.sections.gallery import GalleryConfig
from firmware_py.config.sections.liveness import LivenessConfig
from firmware_py.config.sections.logging import LoggingConfig
from firmware_py.config.sections.models import ModelsConfig
from firmware_py.config.sections.recognition import RecognitionConfig


@dataclass(frozen=True)
class Config(Section):
    """kaoclock configuration (TOML). Every key is optional; defaults form the embedded demo."""

    schema_version: int = setting(1, ge=1, le=1, doc="Version of this configuration format.")
    device: DeviceConfig = setting(default_factory=DeviceConfig, doc="This reader's identity and state directory.")
    models: ModelsConfig = setting(default_factory=ModelsConfig, doc="Model files.")
    camera: CameraConfig = setting(default_factory=CameraConfig, doc="Frame source.")
    liveness: LivenessConfig = setting(default_factory=LivenessConfig, doc="Presentation-attack detection.")
    logging: LoggingConfig = setting(default_factory=LoggingConfig, doc="Logging.")
    recognition: RecognitionConfig = setting(default_factory=RecognitionConfig, doc="Embedding and 1:N matching.")
    decision: DecisionConfig = setting(default_factory=DecisionConfig, doc="Per-track decision state machine.")
    gallery: GalleryConfig = setting(default_factory=GalleryConfig, doc="Encrypted template store.")
