"""Readers' command sides for the backend's tests and bench: the daemon's own MQTT side without a camera.

A :class:`Gate` is a reader's :class:`~firmware_py.mqtt.device_link.DeviceLink`
(signed commands checked against the backend key, nonce store, signed
results, retained status with Last Will) with the real encrypted gallery and
its ``gallery.*`` commands.  ``python -m firmware_py.bench.gates`` hosts many
of them in one process for the sync bench, apart from the backend's process.
Tooling only: nothing on the reader imports this.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


class Gate:
    """A reader's MQTT side as the daemon wires it (DeviceLink: signed commands, nonce store, signed results,
    retained status with Last Will) with the real encrypted gallery and its gallery.* commands; no camera."""

    def __init__(
        self, tmp: Path, broker_url: str, site: str, device: str, backend_key: Any, embedder_version: str, *, transfers: bool = True
    ) -> None:
        from firmware_py.config import load, with_changes
        from firmware_py.events import EventBus
        from firmware_py.keys.jwk import public_jwk
        from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key, load_private_key
        from firmware_py.mqtt.commands.registry import CommandRegistry
        from firmware_py.mqtt.device_link import DeviceLink
        from firmware_py.outbox.store import Outbox
        from firmware_py.provision.gallery_sync import GallerySync, SnapshotReceiver
        from firmware_py.update.staging import Staging
        from firmware_py.update.transfer import TransferCommands

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
        jwk = dict(backend_key) if isinstance(backend_key, dict) else public_jwk(backend_key)  # a JWK, or the key itself
        backend_public_path(data).write_text(json.dumps(jwk))
        init_private_key(device_key_path(data))
        self.public_jwk = public_jwk(load_private_key(device_key_path(data)))
        self.bus = EventBus()
        registry = CommandRegistry()
        self.sync = GallerySync.from_config(self.cfg, embedder_version)
        self.sync.register(registry)
        if transfers:  # gallery snapshots in signed chunks, as the daemon wires them (compose/fleet.py); False: an older reader
            receiver = SnapshotReceiver(self.sync)
            staging = Staging(data / "update" / "incoming", receiver.max_bytes)
            TransferCommands(staging, [receiver], bus=self.bus, command_max_bytes=self.cfg.mqtt.command_max_bytes).register(registry)
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


def main(argv: list[str] | None = None) -> int:
    """Host one gate per ``site/device``; print each device's public JWK as a JSON line, then "ready"; stop at stdin EOF."""
    from firmware_py.keys.jwk import parse_public_jwk

    ap = argparse.ArgumentParser(prog="python -m firmware_py.bench.gates")
    ap.add_argument("--broker", required=True)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--backend-jwk", type=Path, required=True)
    ap.add_argument("--embedder", required=True)
    ap.add_argument("devices", nargs="+", help="site/device")
    args = ap.parse_args(argv)
    backend = parse_public_jwk(json.loads(args.backend_jwk.read_text()))
    gates = []
    for sd in args.devices:
        site, device = sd.split("/")
        g = Gate(args.dir, args.broker, site, device, dict(backend.jwk), args.embedder).start()
        gates.append(g)
        print(json.dumps({"site": site, "device": device, "jwk": g.public_jwk}), flush=True)
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        for g in gates:
            g.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
