"""PunchService: the whole punch path built from the config, for the daemon to wire in one call.

    service = PunchService.from_config(cfg, bus, door=door, config=running_config,
                                       pipeline=stage_times.snapshot, gallery=..., camera=...)
    service.start()
    gate = GateController(recorder=service.recorder, ...)   # the PunchRecorder port
    ...
    service.stop()

With ``[mqtt] enabled = false`` (the embedded demo) punches are still signed
and stored durably; they wait in the outbox until a broker is configured.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_py.config import Config
from firmware_py.decision.ports import Door
from firmware_py.errors import ExitCode, KaoclockError
from firmware_py.events import EventBus
from firmware_py.keys.jwk import KeyFileError, key_id
from firmware_py.keys.store import device_key_path, init_private_key, keys_dir, load_private_key
from firmware_py.mqtt.commands.builtin import RunningConfig
from firmware_py.mqtt.device_link import DeviceLink
from firmware_py.outbox.store import Outbox
from firmware_py.punch.recorder import SignedPunchRecorder
from firmware_py.telemetry.clock import ClockSync
from firmware_py.telemetry.collector import Provider, TelemetryCollector
from firmware_py.topics import Topics

PUBLIC_JWK_NAME = "device.jwk"  # written by `kaoclock provision`: its presence means "provisioned"


class DeviceKeyError(KaoclockError):
    """A provisioned reader's device key is missing, unreadable or not the provisioned one: it refuses to run."""

    exit_code = ExitCode.KEY_REFUSED


def check_device_key(key_file: Path, data_dir: Path) -> None:
    """On a provisioned reader (``<data_dir>/keys/device.jwk`` exists) the device key must be there, readable,
    and the very key that was provisioned; a new identity is never made at run time (every punch it signed
    would be refused by the backend as unknown_key while the outbox emptied).  Raises :class:`DeviceKeyError`."""
    public = keys_dir(data_dir) / PUBLIC_JWK_NAME
    if not public.exists():
        return  # not provisioned (development, the demo): the first start makes the key
    try:
        kid = json.loads(public.read_text()).get("kid")
    except (OSError, ValueError, AttributeError):
        kid = None
    fix = "restore the key from its backup, or re-provision the reader (`kaoclock provision`) and register the new key at the backend"
    try:
        key = load_private_key(key_file)
    except KeyFileError as exc:
        raise DeviceKeyError(f"refusing to start: this reader was provisioned, but its device key cannot be used: {exc}. {fix}") from None
    if kid is not None and key_id(key) != kid:
        raise DeviceKeyError(
            f"refusing to start: the device key {key_file} (kid {key_id(key)}) is not the provisioned one ({public}: kid {kid}). {fix}"
        )


class PunchService:
    """Outbox + signed punch recorder + telemetry + (when enabled) the MQTT device link."""

    def __init__(self, outbox: Outbox, recorder: SignedPunchRecorder, telemetry: TelemetryCollector, link: DeviceLink | None) -> None:
        self.outbox = outbox
        self.recorder = recorder
        self.telemetry = telemetry
        self.link = link

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        bus: EventBus,
        *,
        door: Door | None = None,
        config: RunningConfig | None = None,
        create_key: bool = False,
        **providers: Provider,
    ) -> PunchService:
        """Build the punch path; ``create_key`` makes the device key when there is none (never replaces one).

        ``providers`` are telemetry hooks: ``pipeline``, ``gallery``, ``camera``, ``models``.
        """
        key_file = cfg.punch.key_file or device_key_path(cfg.device.data_dir)
        check_device_key(key_file, cfg.device.data_dir)
        if create_key and not key_file.exists():
            init_private_key(key_file)
        outbox = Outbox.from_config(cfg, bus)
        recorder = recorder_from_config(cfg, bus, outbox)
        telemetry = TelemetryCollector.from_config(cfg, bus, outbox=outbox, **providers)
        link = DeviceLink.from_config(cfg, bus, outbox=outbox, telemetry=telemetry, door=door, config=config) if cfg.mqtt.enabled else None
        return cls(outbox, recorder, telemetry, link)

    @property
    def commands(self) -> Any:
        """The command registry (None without MQTT): ``service.commands.register("gallery.add", handler)``."""
        return self.link.commands if self.link is not None else None

    def start(self) -> None:
        if self.link is not None:
            self.link.start()

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()
        self.outbox.close()


def recorder_from_config(
    cfg: Config, bus: EventBus | None, outbox: Outbox, *, clock_synced: Callable[[], bool | None] | None = None
) -> SignedPunchRecorder:
    """The recorder for ``cfg``: key from ``[punch] key_file`` (default ``<data_dir>/keys/device_ed25519.pem``)."""
    key = load_private_key(cfg.punch.key_file or device_key_path(cfg.device.data_dir))
    return SignedPunchRecorder(
        outbox,
        key,
        site=cfg.device.site,
        device=cfg.device.id,
        topics=Topics(cfg.device.site, cfg.device.id, cfg.mqtt.topic_prefix),
        clock_synced=clock_synced or ClockSync().synced,
        liveness_policy=cfg.liveness.policy,
        timezone=cfg.device.timezone,
        bus=bus,
    )
