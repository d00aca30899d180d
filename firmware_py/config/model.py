"""The whole configuration: one section per package."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from firmware_py.config.schema import Problem, Section, setting
from firmware_py.config.sections.camera import CameraConfig
from firmware_py.config.sections.card_reader import CardReaderConfig
from firmware_py.config.sections.console import ConsoleConfig
from firmware_py.config.sections.decision import DecisionConfig
from firmware_py.config.sections.device import DeviceConfig
from firmware_py.config.sections.direction import DirectionConfig
from firmware_py.config.sections.door import DoorConfig
from firmware_py.config.sections.feedback import FeedbackConfig
from firmware_py.config.sections.gallery import GalleryConfig
from firmware_py.config.sections.gpio import GpioConfig, check_hardware
from firmware_py.config.sections.liveness import LivenessConfig
from firmware_py.config.sections.logging import LoggingConfig
from firmware_py.config.sections.models import ModelsConfig
from firmware_py.config.sections.mqtt import MqttConfig
from firmware_py.config.sections.outbox import OutboxConfig
from firmware_py.config.sections.punch import PunchConfig
from firmware_py.config.sections.recognition import RecognitionConfig
from firmware_py.config.sections.service import ServiceConfig
from firmware_py.config.sections.telemetry import TelemetryConfig
from firmware_py.config.sections.update import UpdateConfig
from firmware_py.config.sections.vision import VisionConfig


@dataclass(frozen=True)
class Config(Section):
    """kaoclock configuration (TOML). Every key is optional; defaults form the embedded demo."""

    schema_version: int = setting(1, ge=1, le=1, doc="Version of this configuration format.")
    device: DeviceConfig = setting(default_factory=DeviceConfig, doc="This reader's identity and state directory.")
    models: ModelsConfig = setting(default_factory=ModelsConfig, doc="Model files.")
    camera: CameraConfig = setting(default_factory=CameraConfig, doc="Frame source.")
    vision: VisionConfig = setting(default_factory=VisionConfig, doc="Face detection, tracking, landmarks, alignment and quality limits.")
    liveness: LivenessConfig = setting(default_factory=LivenessConfig, doc="Presentation-attack detection.")
    logging: LoggingConfig = setting(default_factory=LoggingConfig, doc="Logging.")
    gpio: GpioConfig = setting(default_factory=GpioConfig, doc="GPIO back end and pins.")
    door: DoorConfig = setting(default_factory=DoorConfig, doc="Door lock and sensors.")
    feedback: FeedbackConfig = setting(default_factory=FeedbackConfig, doc="Status LEDs and buzzer.")
    direction: DirectionConfig = setting(default_factory=DirectionConfig, doc="Punch direction.")
    console: ConsoleConfig = setting(default_factory=ConsoleConfig, doc="Technician serial console.")
    card_reader: CardReaderConfig = setting(default_factory=CardReaderConfig, doc="Serial card reader.")
    mqtt: MqttConfig = setting(default_factory=MqttConfig, doc="MQTT link to the backend.")
    outbox: OutboxConfig = setting(default_factory=OutboxConfig, doc="Durable outbox of punches.")
    punch: PunchConfig = setting(default_factory=PunchConfig, doc="Signed punches.")
    telemetry: TelemetryConfig = setting(default_factory=TelemetryConfig, doc="Health reporting.")
    recognition: RecognitionConfig = setting(default_factory=RecognitionConfig, doc="Embedding and 1:N matching.")
    decision: DecisionConfig = setting(default_factory=DecisionConfig, doc="Per-track decision state machine.")
    gallery: GalleryConfig = setting(default_factory=GalleryConfig, doc="Encrypted template store.")
    update: UpdateConfig = setting(default_factory=UpdateConfig, doc="Signed release updates (A/B slots).")
    service: ServiceConfig = setting(default_factory=ServiceConfig, doc="systemd readiness and watchdog.")

    def check(self) -> Iterator[Problem]:
        yield from check_hardware(self)
