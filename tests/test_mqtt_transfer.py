"""Files larger than one command over signed chunks: a real release installed over a real mosquitto,
interrupted and resumed; forged, stale and corrupted transfers refused with the running slot untouched;
gallery snapshots larger than one command applied atomically."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lifecycle_support import Reader, RecordingControl, make_reader

from firmware_py.backend.commands import CommandSession, command_claims, sign_command, verify_result
from firmware_py.backend.registry import DeviceRegistry
from firmware_py.backend.transfer import TransferFailed, send_file
from firmware_py.cli.main import main
from firmware_py.config import load, with_changes
from firmware_py.events import EventBus
from firmware_py.gallery.store import GalleryStore, Person, Template, content_hash
from firmware_py.keys.jwk import parse_public_jwk, public_jwk
from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key, load_private_key
from firmware_py.mqtt.commands.nonces import NonceStore
from firmware_py.mqtt.commands.processor import CommandProcessor
from firmware_py.mqtt.commands.registry import CommandRegistry
from firmware_py.mqtt.device_link import DeviceLink
from firmware_py.mqtt.event_catalogue import CATALOGUE
from firmware_py.outbox.store import Outbox
from firmware_py.provision.gallery_sync import GallerySync, SnapshotReceiver, encode_template
from firmware_py.update.remote import FirmwareReceiver, UpdateReporter, staging_dir
from firmware_py.update.staging import READY, Staging
from firmware_py.update.transfer import TransferCommands, max_chunk_size

SITE, DEVICE = "hq", "gate-01"
CHUNK = 128 << 10


@pytest.fixture
def reader(tmp_path: Path, grace_hopper_path: Path) -> Reader:
    return make_reader(tmp_path / "reader", grace_hopper_path)


@pytest.fixture
def backend_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def reader_config(reader: Reader, broker: str | None = None) -> Any:
    changes: dict[str, Any] = {
        "device.site": SITE,
        "device.id": DEVICE,
        "mqtt.reconnect_min_s": 0.2,
        "mqtt.reconnect_max_s": 1.0,
    }
    if broker:
        changes["mqtt.brokers"] = [broker]
    return with_changes(load(reader.config), changes)


def trust(cfg: Any, backend_key: Ed25519PrivateKey) -> None:
    path = backend_public_path(cfg.device.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(public_jwk(backend_key)))
    if not device_key_path(cfg.device.data_dir).exists():
        init_private_key(device_key_path(cfg.device.data_dir))


def fleet_link(cfg: Any, bus: EventBus) -> tuple[DeviceLink, Outbox]:
    """The reader's MQTT side with the transfer commands, as build_reader wires them (no camera pipeline needed)."""
    registry = CommandRegistry()
    staging = Staging(staging_dir(cfg))
    sync = GallerySync.from_config(cfg, "emb-test")
    receivers = [FirmwareReceiver.from_config(cfg, staging, bus), SnapshotReceiver(sync)]
    TransferCommands(staging, receivers, bus=bus, command_max_bytes=cfg.mqtt.command_max_bytes).register(registry)
    outbox = Outbox.from_config(cfg, bus)
    return DeviceLink(cfg, bus, outbox=outbox, registry=registry), outbox


def test_a_release_sent_in_chunks_over_mqtt_is_resumed_after_a_restart_staged_and_installed(
    reader: Reader, backend_key: Ed25519PrivateKey, mosquitto: Any, contract: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = reader_config(reader, mosquitto.url)
    trust(cfg, backend_key)
    reporter_bus = EventBus()
    reported: list[Any] = []
    reporter_bus.subscribe(reported.append, "update.")
    reporter = UpdateReporter.from_config(cfg, reporter_bus)
    assert reporter.report() == []  # first start: the history so far is not news
    data = reader.bundle("0.2.0").read_bytes()
    assert len(data) > 3 * CHUNK
    # Backend side: verifies every result against the device's registered key.
    devices = DeviceRegistry(reader.root / "backend-devices")
    devices.add(SITE, DEVICE, public_jwk(load_private_key(device_key_path(cfg.device.data_dir))))
    results: list[dict[str, Any]] = []

    class Checked(CommandSession):
        def call(self, cmd: str, args: dict[str, Any], wait_s: float = 30.0) -> dict[str, Any] | None:
            r = super().call(cmd, args, wait_s)
            if r is not None:
                contract.check(f"kaoclock/v1/{SITE}/{DEVICE}/command_results", json.dumps(r).encode())
                assert verify_result(r, devices) == "verified"
                results.append(r)
            return r

    bus = EventBus()
    events: list[Any] = []
    bus.subscribe(events.append, "transfer.")
    bus.subscribe(events.append, "update.")
    link, outbox = fleet_link(cfg, bus)
    link.start()
    try:
        with Checked([mosquitto.url], SITE, DEVICE, backend_key) as s:
            partial = send_file(s, "firmware", data, transfer_id="rel-020", chunk_size=CHUNK, meta={"version": "0.2.0"}, stop_after=2)
    finally:
        link.stop()
        outbox.close()
    assert partial["received"] == 2 and partial["missing_count"] == partial["chunks"] - 2
    # The daemon restarts (power cut, new connection): the transfer resumes where it stopped.
    link, outbox = fleet_link(cfg, bus)
    link.start()
    results.clear()
    try:
        with Checked([mosquitto.url], SITE, DEVICE, backend_key) as s:
            done = send_file(s, "firmware", data, transfer_id="rel-020", chunk_size=CHUNK, meta={"version": "0.2.0"})
        # The backend CLI sends a gallery snapshot over the same facility (the reader's link is still up).
        doc, _ = _snapshot(300)
        snap = reader.root / "snapshot.json.gz"
        snap.write_bytes(gzip.compress(json.dumps(doc).encode()))
        bhome = reader.root / "backend"
        bhome.mkdir()
        (bhome / "backend_ed25519.pem").write_bytes(
            backend_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        (bhome / "backend_ed25519.pem").chmod(0o600)
        capsys.readouterr()
        assert main(["backend", "send", SITE, DEVICE, str(snap), "--kind", "gallery.snapshot", "--broker", mosquitto.url, "--home", str(bhome)]) == 0
        sent = json.loads(capsys.readouterr().out)
        assert sent["persons"] == 300 and sent["hash"] == doc["hash"] and sent["kind"] == "gallery.snapshot"
    finally:
        link.stop()
        outbox.close()
    begun = next(r for r in results if r["cmd"] == "transfer.begin")["result"]
    assert begun["resumed"] is True and begun["received"] == 2
    assert sum(r["cmd"] == "transfer.chunk" for r in results) == partial["chunks"] - 2  # only the missing ones were sent
    assert done["staged"] is True and done["version"] == "0.2.0" and done["bundle_sha256"] == hashlib.sha256(data).hexdigest()
    types = [e.type for e in events if e.data.get("kind") != "gallery.snapshot"]
    assert [e.type for e in events if e.data.get("kind") == "gallery.snapshot"][-1] == "transfer.completed"
    assert types.count("transfer.started") == 2 and "transfer.progress" in types
    assert types[-2:] == ["update.staged", "transfer.completed"]
    assert set(types) <= set(CATALOGUE)
    incoming = staging_dir(cfg)
    assert (incoming / READY).read_text().strip() == "rel-020.bundle"
    assert reader.link("current") == "a"  # the daemon only staged it

    # What kaoclock-update.path starts: kaoclock-update.service runs `kaoclock update --staged`.
    outcome = reader.updater(RecordingControl()).apply_staged(incoming)
    assert outcome.action == "committed" and outcome.version == "0.2.0", outcome
    assert (reader.link("current"), reader.link("committed")) == ("b", "b")
    assert not (incoming / READY).exists() and list(incoming.iterdir()) == []
    # The restarted daemon reports the outcome once.
    (event,) = reporter.report()
    assert event["event"] == "committed" and event["version"] == "0.2.0"
    assert [e.type for e in reported] == ["update.committed"] and reporter.report() == []


@pytest.fixture
def rig(reader: Reader, backend_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The transfer commands behind the real processor (signature, expiry, nonce), without a broker."""
    cfg = reader_config(reader)
    pub = parse_public_jwk(public_jwk(backend_key))
    bus = EventBus()
    events: list[Any] = []
    bus.subscribe(events.append)
    staging = Staging(staging_dir(cfg))
    db, gkey = reader.root / "gallery.sqlite", reader.root / "gallery.key"
    sync = GallerySync(lambda: GalleryStore.open(db, gkey, create=True), SITE, "emb-test")
    transfers = TransferCommands(staging, [FirmwareReceiver.from_config(cfg, staging, bus), SnapshotReceiver(sync)], bus=bus)
    registry = CommandRegistry()
    transfers.register(registry)
    sync.register(registry)
    proc = CommandProcessor(registry, lambda: {pub.kid: pub}, NonceStore(reader.root / "nonces.sqlite"), site=SITE, device=DEVICE, skew_s=30)

    def send(name: str, args: dict[str, Any], key: Ed25519PrivateKey = backend_key, **over: Any) -> dict[str, Any]:
        return proc.process(sign_command(key, command_claims(SITE, DEVICE, name, args) | over))

    class Session:
        def call(self, cmd: str, args: dict[str, Any], wait_s: float = 30.0) -> dict[str, Any]:
            return send(cmd, args)

    return {
        "send": send,
        "proc": proc,
        "session": Session(),
        "staging": staging,
        "events": events,
        "store": lambda: GalleryStore.open(db, gkey, create=False),
    }


def chunk_args(tid: str, data: bytes, index: int, size: int = CHUNK) -> dict[str, Any]:
    part = data[index * size : (index + 1) * size]
    return {"transfer_id": tid, "index": index, "data": base64.b64encode(part).decode(), "sha256": hashlib.sha256(part).hexdigest()}


def test_forged_corrupted_and_stale_transfers_are_refused_and_nothing_is_installed(
    reader: Reader, rig: dict[str, Any], backend_key: Ed25519PrivateKey
) -> None:
    send, staging = rig["send"], rig["staging"]
    # A bundle signed by someone else's release key arrives intact: refused at commit, deleted, nothing staged.
    forged = reader.bundle("0.2.0", key=Ed25519PrivateKey.generate()).read_bytes()
    with pytest.raises(TransferFailed) as exc:
        send_file(rig["session"], "firmware", forged, transfer_id="forged", chunk_size=CHUNK)
    assert exc.value.result["reason"] == "bad_bundle" and "signed by release key" in exc.value.result["detail"]
    assert not (staging.dir / READY).exists() and list(staging.dir.iterdir()) == []

    data = reader.bundle("0.2.0").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    begin = {"transfer_id": "t1", "kind": "firmware", "size": len(data), "sha256": digest, "chunk_size": CHUNK}
    assert send("transfer.begin", begin)["status"] == "done"
    # A corrupted chunk, a chunk out of range, a chunk of the wrong size.
    bad = chunk_args("t1", data, 0) | {"data": base64.b64encode(b"X" * CHUNK).decode()}
    assert send("transfer.chunk", bad)["reason"] == "chunk_hash_mismatch"
    assert send("transfer.chunk", chunk_args("t1", data, 0) | {"index": 10_000})["reason"] == "bad_chunk"
    assert send("transfer.chunk", chunk_args("t1", data, 0) | {"data": "bm90IGEgY2h1bms=", "sha256": hashlib.sha256(b"not a chunk").hexdigest()})[
        "reason"
    ] == ("bad_chunk")
    assert send("transfer.chunk", chunk_args("t1", data, 0) | {"data": "%%%"})["reason"] == "bad_args"
    # Stale, forged and replayed chunk commands never reach the transfer.
    now = time.time()
    assert send("transfer.chunk", chunk_args("t1", data, 0), iat=int(now - 600), exp=int(now - 300))["reason"] == "expired"
    assert send("transfer.chunk", chunk_args("t1", data, 0), key=Ed25519PrivateKey.generate())["reason"] == "unknown_key"
    token = sign_command(backend_key, command_claims(SITE, DEVICE, "transfer.chunk", chunk_args("t1", data, 1)))
    assert rig["proc"].process(token)["status"] == "done"
    assert rig["proc"].process(token)["reason"] == "replayed"
    first = send("transfer.status", {"transfer_id": "t1"})
    assert first["result"]["received"] == 1 and first["result"]["missing"] == [[0, 0], [2, first["result"]["chunks"] - 1]]
    # Commit before every chunk is there: refused, the transfer kept.
    assert send("transfer.commit", {"transfer_id": "t1"})["reason"] == "incomplete"
    # A wrong announced total: every chunk matches its own hash, the whole does not -> refused and discarded.
    wrong = begin | {"transfer_id": "t2", "sha256": hashlib.sha256(b"another file").hexdigest()}
    assert send("transfer.begin", wrong)["status"] == "done"
    assert not staging.exists("t1")  # one transfer per kind: t2 replaced t1
    for i in range((len(data) + CHUNK - 1) // CHUNK):
        assert send("transfer.chunk", chunk_args("t2", data, i))["status"] == "done"
    r = send("transfer.commit", {"transfer_id": "t2"})
    assert r["reason"] == "hash_mismatch" and "discarded" in r["detail"]
    assert not staging.exists("t2") and list(staging.dir.iterdir()) == []
    # Refused before any chunk: an older release, a chunk that cannot fit a command, an unknown kind.
    assert send("transfer.begin", begin | {"transfer_id": "t3", "meta": {"version": "0.0.9"}})["reason"] == "downgrade"
    r = send("transfer.begin", begin | {"transfer_id": "t3", "chunk_size": 1 << 20})
    assert r["reason"] == "bad_args" and r["result"]["max_chunk_size"] == max_chunk_size(256 * 1024)
    assert send("transfer.begin", begin | {"transfer_id": "t3", "kind": "ringtone"})["reason"] == "bad_args"
    assert send("transfer.commit", {"transfer_id": "nope"})["reason"] == "unknown_transfer"
    # Abort forgets a transfer and its data.
    assert send("transfer.begin", begin | {"transfer_id": "t4"})["status"] == "done"
    assert send("transfer.chunk", chunk_args("t4", data, 0))["result"]["received"] == 1
    assert send("transfer.abort", {"transfer_id": "t4"})["result"]["aborted"] is True
    assert list(staging.dir.iterdir()) == []
    refused = [e.data["reason"] for e in rig["events"] if e.type == "transfer.refused"]
    assert {"bad_bundle", "chunk_hash_mismatch", "hash_mismatch"} <= set(refused)
    assert {e.type for e in rig["events"]} <= set(CATALOGUE)
    # The running release was never touched.
    assert (reader.link("current"), reader.link("committed")) == ("a", "a")
    assert reader.updater().apply_staged(staging.dir).action == "nothing"


def _snapshot(n: int, version: str = "emb-test") -> tuple[dict[str, Any], list[Person]]:
    rng = np.random.default_rng(3)
    persons, decoded = [], []
    for i in range(n):
        desc = rng.normal(0, 0.1, 128).astype(np.float32)
        persons.append({"person_id": f"p{i:04d}", "name": f"Person {i}", "sites": [SITE], "templates": [encode_template(desc, version)]})
        decoded.append(Person(f"p{i:04d}", f"Person {i}", (SITE,), (Template(desc, version),)))
    return {"persons": persons, "hash": content_hash(decoded)}, decoded


def test_a_gallery_snapshot_larger_than_one_command_is_applied_atomically(rig: dict[str, Any]) -> None:
    send, session = rig["send"], rig["session"]
    assert send("gallery.add", _snapshot(1)[0]["persons"][0] | {"person_id": "old"})["status"] == "done"
    doc, _ = _snapshot(500)
    raw = json.dumps(doc).encode()
    assert len(raw) > 256 * 1024  # more than one command can carry
    assert send("gallery.snapshot", doc)["reason"] == "oversized"
    # A wrong content hash, and a template of another embedder: refused, the stored gallery unchanged.
    with rig["store"]() as s:
        before = (s.version, s.content_hash)
    for bad, reason in (
        (doc | {"hash": "0" * 64}, "hash_mismatch"),
        ({"persons": [*doc["persons"][:-1], _snapshot(1, "emb-old")[0]["persons"][0]], "hash": doc["hash"]}, "model_mismatch"),
        ({"persons": doc["persons"]}, "bad_args"),
    ):
        with pytest.raises(TransferFailed) as exc:
            send_file(session, "gallery.snapshot", json.dumps(bad).encode(), chunk_size=CHUNK)
        assert exc.value.result["reason"] == reason, exc.value.result
    with pytest.raises(TransferFailed) as exc:
        send_file(session, "gallery.snapshot", b"\x1f\x8b not gzip at all", chunk_size=1024)
    assert exc.value.result["reason"] == "bad_args"
    with rig["store"]() as s:
        assert (s.version, s.content_hash) == before and s.get_person("old") is not None
    # Sent gzip-compressed: applied in one transaction, the old person gone.
    out = send_file(session, "gallery.snapshot", gzip.compress(raw), chunk_size=64 << 10)
    assert out["persons"] == 500 and out["size"] == 500 and out["hash"] == doc["hash"]
    with rig["store"]() as s:
        assert s.content_hash == doc["hash"] and s.get_person("old") is None and len(s.list_persons()) == 500
    assert list(rig["staging"].dir.iterdir()) == []


def test_bench_transfer_prints_its_measurements(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "transfer", "--persons", "40", "--chunk-kib", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["applied_persons"] == 40 and out["chunks"] == -(-out["bytes"] // 8192)
    assert out["transfer_mb_per_s"] > 0 and out["chunk_roundtrip_ms_p95"] >= out["chunk_roundtrip_ms_p50"] > 0
    assert main(["bench", "transfer", "--chunk-kib", "500"]) != 0
