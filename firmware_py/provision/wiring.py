"""Wiring the provisioning room's commands into an assembled reader (called by :func:`firmware_py.reader.build_reader`)."""

from __future__ import annotations

from typing import Any

from firmware_py.events import EventBus
from firmware_py.mqtt.commands.registry import CommandRegistry
from firmware_py.provision.gallery_sync import GallerySync
from firmware_py.provision.live_enrol import LiveEnrolment


def register_gallery_commands(registry: CommandRegistry, cfg: Any, pipeline: Any, bus: EventBus | None = None) -> LiveEnrolment:
    """Register gallery.add/update/remove/snapshot and gallery.enrol_live; returns the live-enrolment frame hook.

    Every change hands the running ``pipeline`` the new matrix (``set_gallery``),
    so matching and the telemetry's gallery section follow at once.
    """
    sync = GallerySync.from_config(cfg, pipeline.embedder.version, pipeline.set_gallery)
    sync.register(registry)
    live = LiveEnrolment(sync, pipeline.analyzer, pipeline.embedder, bus=bus, mirror=pipeline.mirror)
    live.register(registry)
    return live
