"""Helpers shared by the backend tests: simulated readers that sign real punches."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.decision.outcome import Decision
from firmware_py.outbox.store import Outbox
from firmware_py.punch.recorder import SignedPunchRecorder


class Reader:
    """A device key and recorder producing real signed punch tokens."""

    def __init__(self, tmp: Path, site: str = "site-a", device: str = "reader-1", tz: str = "Asia/Tokyo") -> None:
        self.key = Ed25519PrivateKey.generate()
        self.site, self.device = site, device
        self.outbox = Outbox(tmp / f"{site}-{device}.sqlite")
        self.rec = SignedPunchRecorder(self.outbox, self.key, site=site, device=device, timezone=tz)
        self.topic = f"kaoclock/v1/{site}/{device}/punch"

    def punch(self, person: str = "emp-1", direction: str = "in", ts: float | None = None) -> bytes:
        d = Decision(True, "match", 1, person_id=person, distance=0.4, threshold=0.55, ts=ts or time.time())
        pid = self.rec.record(d, direction)  # type: ignore[arg-type]
        msg = next(m for m in self.outbox.pending(0, 10**6) if m.id == pid)
        return msg.payload

    def punches(self, n: int) -> list[bytes]:
        """``n`` punches, signed and stored in the outbox in one go (faster than :meth:`punch` one by one)."""
        before = {m.id for m in self.outbox.pending(0, 10**7)}
        for i in range(n):
            d = Decision(True, "match", 1, person_id=f"emp-{i % 50}", distance=0.4, threshold=0.55, ts=time.time())
            self.rec.record(d, "in" if i % 2 == 0 else "out")
        return [m.payload for m in self.outbox.pending(0, 10**7) if m.id not in before]


class Gate:
    """A reader's MQTT side as the daemon wires it (DeviceLink: signed commands, nonce store, signed results,
    retained status with Last Will) with the real encrypted gallery and its gallery.* commands; no camera."""

    def __init__(self, tmp: Path, broker_url: str, site: str, device: str, backend_key: Any, embedder_version: str) -> None:
        import json

        from firmware_py.config import load, with_changes
        from firmware_py.events import EventBus
        from firmware_py.keys.jwk import public_jwk
        from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key, load_private_key
        from firmware_py.mqtt.commands.registry import CommandRegistry
        from firmware_py.mqtt.device_link import DeviceLink
        from firmware_py.outbox.store import Outbox
        from firmware_py.provision.gallery_sync import GallerySync

        self.site, self.device, self.embedder_version = site, device, embedder_version
        self.cfg = with_changes(
            load(None),
            {
                "device.site": site,
                "device.id": device,
                "device.data_dir": str(tmp / f"{site}-{device}"),
                "mqtt.brokers": [broker_url],
                "mqtt.reconnect_min_s": 0.2,
                "mqtt.reconnect_max_s": 1.0,
            },
        )
        data = self.cfg.device.data_dir
        backend_public_path(data).parent.mkdir(parents=True, exist_ok=True)
        backend_public_path(data).write_text(json.dumps(public_jwk(backend_key)))
        init_private_key(device_key_path(data))
        self.public_jwk = public_jwk(load_private_key(device_key_path(data)))
        self.bus = EventBus()
        registry = CommandRegistry()
        self.sync = GallerySync.from_config(self.cfg, embedder_version)
        self.sync.register(registry)
        self.link = DeviceLink(self.cfg, self.bus, outbox=Outbox.from_config(self.cfg, self.bus), registry=registry)

    def start(self) -> Gate:
        self.link.start()
        assert self.link.link.wait_connected(10) is not None
        return self

    def stop(self) -> None:
        self.link.stop()

    def people(self) -> dict[str, Any]:
        from firmware_py.gallery.store import open_from_config

        with open_from_config(self.cfg) as store:
            return {p.person_id: p for p in store.export_snapshot().persons}
