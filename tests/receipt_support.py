"""A reference backend for tests: device registry, punch store and a consumer that publishes signed receipts."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.backend.consumer import PunchConsumer
from firmware_py.backend.registry import DeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.keys.jwk import public_jwk
from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key, load_private_key
from firmware_py.mqtt.link import MqttLink


class Backend:
    """Registry + store + receipt-publishing consumer; ``trust(home)`` makes a reader trust its key."""

    def __init__(self, directory: Path, key: Ed25519PrivateKey | None = None) -> None:
        self.dir = directory
        self.key = key or Ed25519PrivateKey.generate()
        self.registry = DeviceRegistry(directory / "devices")
        self.store = PunchStore(directory / "punches.sqlite")
        self.consumer: PunchConsumer | None = None

    def register(self, home: Path, site: str = "site-a", device: str = "reader-1") -> None:
        """Register the reader's device key (made if missing) and install this backend's public key on it."""
        path = device_key_path(home)
        if not path.exists():
            init_private_key(path)
        self.registry.add(site, device, public_jwk(load_private_key(path)))
        self.trust(home)

    def trust(self, home: Path) -> None:
        dest = backend_public_path(home)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(public_jwk(self.key)))

    def start(self, url: str, client_id: str = "backend-test", **kw: object) -> MqttLink:
        self.consumer = PunchConsumer(self.store, self.registry, receipt_key=self.key)
        kw.setdefault("reconnect_min_s", 0.05)
        kw.setdefault("reconnect_max_s", 0.3)
        link = self.consumer.connect([url], client_id=client_id, **kw)  # type: ignore[arg-type]
        assert link.wait_connected(10) is not None
        return link

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()
            self.consumer = None
