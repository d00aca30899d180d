"""`kaoclock bench transfer`: how fast a file travels to a reader as signed chunks (JSON on stdout).

A local mosquitto, the reader's real device link and transfer commands, the
backend's real sender: a gallery snapshot of ``--persons`` people (one
template each) is sent in ``--chunk-kib`` chunks, each chunk a signed command
that is verified, nonce-checked (synced), hash-checked and written (synced)
before its result comes back; then committed (whole-file hash, every
template decoded, one SQLite transaction).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.errors import UsageError
from firmware_py.telemetry.latency import percentile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer", help="signed chunked transfer to a reader over a local mosquitto: throughput and per-chunk round trip")
    p.add_argument("--persons", type=int, default=3000, help="people in the gallery snapshot sent (default 3000, about 2.3 MB)")
    p.add_argument("--chunk-kib", type=int, default=128, help="chunk size in KiB (default 128)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format; accepted for symmetry)")
    p.set_defaults(func=cmd_bench_transfer)


def _snapshot(n: int, version: str) -> bytes:
    from firmware_py.gallery.store import Person, Template, content_hash
    from firmware_py.provision.gallery_sync import encode_template

    rng = np.random.default_rng(0)
    persons, decoded = [], []
    for i in range(n):
        d = rng.normal(0, 0.1, 128).astype(np.float32)
        persons.append({"person_id": f"p{i:05d}", "name": f"Person {i}", "sites": ["bench"], "templates": [encode_template(d, version)]})
        decoded.append(Person(f"p{i:05d}", f"Person {i}", ("bench",), (Template(d, version),)))
    return json.dumps({"persons": persons, "hash": content_hash(decoded)}).encode()


def run(persons: int, chunk_size: int, tmp: Path) -> dict[str, Any]:
    from firmware_py.backend.commands import CommandSession
    from firmware_py.backend.transfer import send_file
    from firmware_py.config import load, with_changes
    from firmware_py.devtools.broker import LocalBroker
    from firmware_py.events import EventBus
    from firmware_py.gallery.store import GalleryStore
    from firmware_py.keys.jwk import public_jwk
    from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key
    from firmware_py.mqtt.commands.registry import CommandRegistry
    from firmware_py.mqtt.device_link import DeviceLink
    from firmware_py.outbox.store import Outbox
    from firmware_py.provision.gallery_sync import GallerySync, SnapshotReceiver
    from firmware_py.update.staging import Staging
    from firmware_py.update.transfer import TransferCommands

    data = _snapshot(persons, "bench")
    broker = LocalBroker(tmp / "mosquitto").start()
    try:
        cfg = with_changes(
            load(None), {"device.data_dir": str(tmp / "data"), "device.site": "bench", "device.id": "reader", "mqtt.brokers": [broker.url]}
        )
        backend = Ed25519PrivateKey.generate()
        backend_public_path(cfg.device.data_dir).parent.mkdir(parents=True, exist_ok=True)
        backend_public_path(cfg.device.data_dir).write_text(json.dumps(public_jwk(backend)))
        init_private_key(device_key_path(cfg.device.data_dir))
        bus = EventBus()
        registry = CommandRegistry()
        sync = GallerySync(lambda: GalleryStore.open(tmp / "gallery.sqlite", tmp / "gallery.key", create=True), "bench", "bench")
        TransferCommands(Staging(tmp / "incoming"), [SnapshotReceiver(sync)], bus=bus, command_max_bytes=cfg.mqtt.command_max_bytes).register(
            registry
        )
        outbox = Outbox.from_config(cfg, bus)
        link = DeviceLink(cfg, bus, outbox=outbox, registry=registry)
        link.start()
        try:
            if link.link.wait_connected(10) is None:
                raise UsageError("the local mosquitto did not accept the reader's connection")
            with CommandSession([broker.url], "bench", "reader", backend) as s:
                t0 = time.perf_counter()
                calls: list[tuple[str, float]] = []
                real_call = s.call

                def timed(cmd: str, args: dict[str, Any], wait_s: float = 30.0) -> dict[str, Any] | None:
                    start = time.perf_counter()
                    out = real_call(cmd, args, wait_s)
                    calls.append((cmd, (time.perf_counter() - start) * 1000))
                    return out

                s.call = timed  # type: ignore[method-assign]
                result = send_file(
                    s,
                    "gallery.snapshot",
                    data,
                    chunk_size=chunk_size,
                )
                total = time.perf_counter() - t0
        finally:
            link.stop()
            outbox.close()
    finally:
        broker.stop()
    chunk_ms = sorted(ms for cmd, ms in calls if cmd == "transfer.chunk")
    commit_ms = next(ms for cmd, ms in calls if cmd == "transfer.commit")
    sending = total - commit_ms / 1000
    return {
        "persons": persons,
        "bytes": len(data),
        "chunk_bytes": chunk_size,
        "chunks": len(chunk_ms),
        "total_s": round(total, 3),
        "transfer_s": round(sending, 3),
        "transfer_mb_per_s": round(len(data) / sending / 1e6, 3),
        "chunk_roundtrip_ms_p50": round(percentile(chunk_ms, 50), 2),
        "chunk_roundtrip_ms_p95": round(percentile(chunk_ms, 95), 2),
        "commit_ms": round(commit_ms, 1),
        "applied_persons": result["persons"],
        "broker": "local mosquitto",
        "per_chunk": "backend signs; reader verifies Ed25519, stores the nonce (fsync), checks sha256, writes the chunk (fsync), signs its result",
    }


def cmd_bench_transfer(args: argparse.Namespace) -> int:
    if not 1 <= args.persons <= 200_000:
        raise UsageError("--persons must be from 1 to 200000")
    if not 1 <= args.chunk_kib <= 142:
        raise UsageError("--chunk-kib must be from 1 to 142 (a chunk must fit a 256 KiB command)")
    with tempfile.TemporaryDirectory(prefix="kaoclock-bench-transfer-") as tmp:
        result = run(args.persons, args.chunk_kib << 10, Path(tmp))
    print(json.dumps(result, indent=2))
    return 0
