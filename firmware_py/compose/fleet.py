"""Wiring the fleet parts into an assembled reader (called by :func:`firmware_py.reader.build_reader`).

Gallery sync, live enrolment, chunked transfers (firmware, gallery snapshots)
and the update outcome report, built from the config; the MQTT commands are
registered when the reader has a command registry (MQTT enabled), the live
enrolment also serves the serial console.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware_py.events import EventBus
from firmware_py.mqtt.commands.registry import CommandRegistry
from firmware_py.pipeline.build import choose_threshold
from firmware_py.provision.gallery_sync import GallerySync, SnapshotReceiver
from firmware_py.provision.live_enrol import LiveEnrolment
from firmware_py.update.remote import FirmwareReceiver, UpdateReporter, staging_dir
from firmware_py.update.staging import Staging
from firmware_py.update.transfer import Receiver, TransferCommands

if TYPE_CHECKING:
    from firmware_py.config import Config

log = logging.getLogger(__name__)


@dataclass
class FleetParts:
    sync: GallerySync
    live: LiveEnrolment  # also the frame hook that collects enrolment frames
    transfers: TransferCommands
    reporter: UpdateReporter  # a service: reports update outcomes at start

    def register(self, registry: CommandRegistry) -> None:
        """gallery.add/update/remove/snapshot, gallery.enrol_live*, transfer.*."""
        self.sync.register(registry)
        self.live.register(registry)
        self.transfers.register(registry)


def build_fleet(cfg: Config, pipeline: Any, bus: EventBus, threshold: float | None = None) -> FleetParts:
    """Every gallery change hands the running ``pipeline`` the new matrix (``set_gallery``),
    so matching and the telemetry's gallery section follow at once.

    The threshold is chosen again for the new gallery (as at start): a reader
    is usually provisioned empty and filled by sync, and a threshold estimated
    from an empty gallery is only the config's default, which is too loose for
    people of one population (gallery/README.md, "Threshold").
    """
    live: LiveEnrolment | None = None

    def follow(matrix: Any) -> None:
        with sync.open_store() as store:
            choice = choose_threshold(cfg, store, pipeline.embedder.version, matrix)
        if choice.value != pipeline.threshold:
            log.info("threshold %.3f -> %.3f (%s: %s)", pipeline.threshold, choice.value, choice.source, choice.detail)
        pipeline.threshold = choice.value
        pipeline.set_gallery(matrix)
        if live is not None:
            live.threshold = choice.value

    sync = GallerySync.from_config(cfg, pipeline.embedder.version, follow)
    live = LiveEnrolment(sync, pipeline.analyzer, pipeline.embedder, bus=bus, mirror=pipeline.mirror, threshold=threshold)
    snapshots = SnapshotReceiver(sync)
    staging = Staging(staging_dir(cfg), max(cfg.update.max_bundle_mb << 20, snapshots.max_bytes))
    receivers: list[Receiver] = [FirmwareReceiver.from_config(cfg, staging, bus), snapshots]
    transfers = TransferCommands(staging, receivers, bus=bus, command_max_bytes=cfg.mqtt.command_max_bytes)
    return FleetParts(sync, live, transfers, UpdateReporter.from_config(cfg, bus))
