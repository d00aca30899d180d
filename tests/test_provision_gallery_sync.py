"""Gallery sync through signed commands: the real registry, processor, nonce store and encrypted store."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.backend.commands import command_claims, sign_command
from firmware_py.backend.transfer import send_file
from firmware_py.cli.main import main
from firmware_py.config import load, with_changes
from firmware_py.gallery.store import GalleryStore, Person, Template, content_hash
from firmware_py.keys.jwk import parse_public_jwk, public_jwk
from firmware_py.mqtt.commands.nonces import NonceStore
from firmware_py.mqtt.commands.processor import CommandProcessor
from firmware_py.mqtt.commands.registry import CommandRegistry
from firmware_py.provision.gallery_sync import GallerySync, encode_template

SITE, DEVICE, EMB = "hq", "gate-01", "dlib-resnet-test-int8"
rng = np.random.default_rng(7)


def _desc() -> np.ndarray:
    return rng.normal(0, 0.1, 128).astype(np.float32)


def _person(pid: str, n: int = 2, version: str = EMB, sites: list[str] | None = None) -> dict[str, Any]:
    return {"person_id": pid, "name": f"Person {pid}", "sites": sites or [SITE], "templates": [encode_template(_desc(), version) for _ in range(n)]}


def _hash(people: list[dict[str, Any]], version: str) -> str:
    """The content hash the backend sends with a snapshot, over what it sends, decoded the same way."""
    decoded = [
        Person(
            p["person_id"],
            p["name"],
            tuple(p["sites"]),
            tuple(Template(np.frombuffer(base64.b64decode(t["embedding"]), "<f4"), version) for t in p["templates"]),
        )
        for p in people
    ]
    return content_hash(decoded)


@pytest.fixture
def rig(tmp_path: Path) -> dict[str, Any]:
    backend = Ed25519PrivateKey.generate()
    pub = parse_public_jwk(public_jwk(backend))
    db, key = tmp_path / "gallery.sqlite", tmp_path / "keys" / "gallery.key"
    matrices: list[Any] = []
    sync = GallerySync(lambda: GalleryStore.open(db, key, create=True), SITE, EMB, matrices.append)
    registry = CommandRegistry()
    sync.register(registry)
    proc = CommandProcessor(registry, lambda: {pub.kid: pub}, NonceStore(tmp_path / "nonces.sqlite"), site=SITE, device=DEVICE, skew_s=30)

    def send(name: str, args: dict[str, Any], key: Ed25519PrivateKey = backend, **over: Any) -> dict[str, Any]:
        return proc.process(sign_command(key, command_claims(SITE, DEVICE, name, args) | over))

    def store() -> GalleryStore:
        return GalleryStore.open(db, key, create=False)

    return {"send": send, "store": store, "matrices": matrices, "proc": proc, "backend": backend}


def test_add_update_remove_and_the_matrix_follows(rig: dict[str, Any]) -> None:
    send = rig["send"]
    r = send("gallery.add", _person("e1"))
    assert r["status"] == "done", r
    assert (r["result"]["version"], r["result"]["size"], r["result"]["site_size"]) == (1, 1, 1)
    r = send("gallery.add", _person("e2", 1, sites=["other-site"]))
    assert r["result"]["size"] == 2 and r["result"]["site_size"] == 1  # scoped: not this site's
    assert rig["matrices"][-1].persons == 1 and len(rig["matrices"][-1]) == 2

    r = send("gallery.add", _person("e1", 1))  # add: templates accumulate
    with rig["store"]() as s:
        assert len(s.get_person("e1").templates) == 3
        assert r["result"]["hash"] == s.content_hash and r["result"]["version"] == s.version == 3
    new = _person("e1", 1)
    new["name"] = "Renamed"
    send("gallery.update", new)  # update: replaces the templates
    with rig["store"]() as s:
        p = s.get_person("e1")
        assert p.name == "Renamed" and len(p.templates) == 1
        sent = np.frombuffer(base64.b64decode(new["templates"][0]["embedding"]), "<f4")
        assert np.array_equal(p.templates[0].descriptor, sent) and p.templates[0].source == "sync"

    r = send("gallery.remove", {"person_id": "e1"})
    assert r["status"] == "done" and r["result"]["removed"] is True and r["result"]["size"] == 1
    assert send("gallery.remove", {"person_id": "e1"})["result"]["removed"] is False
    with rig["store"]() as s:
        assert s.get_person("e1") is None
    assert rig["matrices"][-1].persons == 0


def test_bad_templates_refused_and_nothing_changes(rig: dict[str, Any]) -> None:
    send = rig["send"]
    send("gallery.add", _person("e1"))
    with rig["store"]() as s:
        before = (s.version, s.content_hash)
    r = send("gallery.add", _person("e9", version="dlib-float-old"))
    assert (r["status"], r["reason"]) == ("refused", "model_mismatch")
    assert "dlib-float-old" in r["detail"] and EMB in r["detail"]
    short = _person("e9")
    short["templates"][0]["embedding"] = base64.b64encode(b"\0" * 100).decode()
    r = send("gallery.add", short)
    assert r["reason"] == "bad_args" and "512 bytes" in r["detail"]
    nan = _person("e9")
    nan["templates"][0] = encode_template(np.full(128, np.nan, np.float32), EMB)
    assert send("gallery.add", nan)["reason"] == "bad_args"
    assert send("gallery.add", _person("e9") | {"sites": ["Bad Site"]})["reason"] == "bad_args"
    assert send("gallery.add", _person("bad id!"))["reason"] == "gallery_refused"
    assert send("gallery.add", {**_person("e9"), "extra": 1})["reason"] == "bad_args"  # the registry's own check
    with rig["store"]() as s:
        assert (s.version, s.content_hash) == before and s.get_person("e9") is None


def test_snapshot_applied_only_when_its_hash_matches(rig: dict[str, Any]) -> None:
    send = rig["send"]
    send("gallery.add", _person("old"))
    people = [_person("s1"), _person("s2", 3)]
    # The backend computes the hash over what it sends, decoded the same way.
    good = _hash(people, EMB)
    r = send("gallery.snapshot", {"persons": people, "hash": "0" * 64})
    assert (r["status"], r["reason"]) == ("refused", "hash_mismatch")
    with rig["store"]() as s:
        assert [p.person_id for p in s.list_persons()] == ["old"]
    r = send("gallery.snapshot", {"persons": people, "hash": good})
    assert r["status"] == "done" and r["result"]["hash"] == good and r["result"]["size"] == 2
    with rig["store"]() as s:
        assert [p.person_id for p in s.list_persons()] == ["s1", "s2"] and s.content_hash == good
    mixed = [_person("s1"), _person("s3", version="other-embedder")]
    assert send("gallery.snapshot", {"persons": mixed, "hash": good})["reason"] == "model_mismatch"
    with rig["store"]() as s:
        assert s.content_hash == good


def test_forged_expired_and_replayed_commands_never_touch_the_gallery(rig: dict[str, Any]) -> None:
    send = rig["send"]
    forger = Ed25519PrivateKey.generate()
    assert send("gallery.add", _person("f1"), key=forger)["reason"] == "unknown_key"
    token = sign_command(rig["backend"], command_claims(SITE, DEVICE, "gallery.add", _person("f2")))
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["args"]["person_id"] = "f3"  # tampered in transit, signature kept
    body2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert rig["proc"].process(f"{head}.{body2}.{sig}")["reason"] == "bad_signature"
    now = time.time()
    assert send("gallery.remove", {"person_id": "x"}, iat=int(now - 600), exp=int(now - 300))["reason"] == "expired"
    assert rig["proc"].process(token)["status"] == "done"
    assert rig["proc"].process(token)["reason"] == "replayed"
    with rig["store"]() as s:
        assert [p.person_id for p in s.list_persons()] == ["f2"] and s.version == 1


def test_the_assembled_reader_syncs_and_reports_it(tmp_path: Path, grace_hopper_path: Path) -> None:
    from firmware_py.reader import build_reader

    backend = Ed25519PrivateKey.generate()
    (tmp_path / "backend.jwk").write_text(json.dumps(public_jwk(backend)))
    cfg_path = tmp_path / "kaoclock.toml"
    argv = ["provision", "--device-id", DEVICE, "--site", SITE, "--broker", "mqtt://127.0.0.1:1", "--config-out", str(cfg_path)]
    assert main([*argv, "--data-dir", str(tmp_path / "data"), "--backend-key", str(tmp_path / "backend.jwk")]) == 0
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0001.jpg").write_bytes(grace_hopper_path.read_bytes())
    cfg = with_changes(load(cfg_path), {"camera.source": str(frames), "gpio.pin_factory": "mock", "console.device": ""})
    reader = build_reader(cfg)
    try:
        assert {"gallery.add", "gallery.update", "gallery.remove", "gallery.snapshot"} <= set(reader.punch.commands.names())
        emb = reader.daemon.pipeline.embedder.version
        proc = reader.punch.link.processor
        r = proc.process(sign_command(backend, command_claims(SITE, DEVICE, "gallery.add", _person("e5", 2, version=emb))))
        assert r["status"] == "done", r
        tele = reader.punch.telemetry.snapshot()["gallery"]
        assert tele["size"] == 1 and tele["templates"] == 2 and tele["version"] == str(r["result"]["version"])
        r = proc.process(sign_command(backend, command_claims(SITE, DEVICE, "gallery.add", _person("e6", 1, version="old-float"))))
        assert r["reason"] == "model_mismatch"
        assert reader.punch.telemetry.snapshot()["gallery"]["size"] == 1
        # The same reader takes a snapshot as a chunked transfer; matching and telemetry follow it.
        names = set(reader.punch.commands.names())
        assert {"transfer.begin", "transfer.chunk", "transfer.status", "transfer.commit", "transfer.abort"} <= names
        assert {"gallery.enrol_live", "gallery.enrol_live_status", "gallery.enrol_live_confirm", "gallery.enrol_live_cancel"} <= names
        people = [_person(f"s{i}", 1, version=emb) for i in range(3)]

        class Session:
            def call(self, cmd: str, args: dict[str, Any], wait_s: float = 30.0) -> dict[str, Any]:
                return proc.process(sign_command(backend, command_claims(SITE, DEVICE, cmd, args)))

        doc = json.dumps({"persons": people, "hash": _hash(people, emb)}).encode()
        out = send_file(Session(), "gallery.snapshot", doc, chunk_size=1024)
        assert out["persons"] == 3 and reader.punch.telemetry.snapshot()["gallery"]["size"] == 3
        assert reader.daemon.pipeline.gallery.persons == 3
    finally:
        for close in reader.closers:
            close()


def test_a_reader_filled_by_sync_chooses_its_threshold_for_the_new_gallery(tmp_path: Path) -> None:
    """Provisioned empty (the config's default threshold), then synced: the threshold follows the gallery."""
    from firmware_py.gallery.store import open_from_config
    from firmware_py.pipeline.build import choose_threshold
    from firmware_py.reader import build_reader

    backend = Ed25519PrivateKey.generate()
    (tmp_path / "backend.jwk").write_text(json.dumps(public_jwk(backend)))
    cfg_path = tmp_path / "kaoclock.toml"
    argv = ["provision", "--device-id", DEVICE, "--site", SITE, "--broker", "mqtt://127.0.0.1:1", "--config-out", str(cfg_path)]
    assert main([*argv, "--data-dir", str(tmp_path / "data"), "--backend-key", str(tmp_path / "backend.jwk")]) == 0
    frames = tmp_path / "frames"
    frames.mkdir()
    cfg = with_changes(load(cfg_path), {"camera.source": str(frames), "gpio.pin_factory": "mock", "console.device": ""})
    reader = build_reader(cfg)
    try:
        pipeline = reader.daemon.pipeline
        assert reader.threshold.source == "config" and pipeline.threshold == cfg.recognition.threshold
        emb = pipeline.embedder.version
        proc = reader.punch.link.processor
        # People who look alike (one population, one camera): their faces sit close together.
        local = np.random.default_rng(7)
        base = local.normal(0, 0.1, 128)
        for i in range(12):
            centre = base + local.normal(0, 0.02, 128)
            templates = [encode_template((centre + local.normal(0, 0.004, 128)).astype(np.float32), emb) for _ in range(2)]
            person = {"person_id": f"p{i}", "name": f"Person {i}", "sites": [SITE], "templates": templates}
            assert proc.process(sign_command(backend, command_claims(SITE, DEVICE, "gallery.add", person)))["status"] == "done"
        with open_from_config(cfg, create=False) as store:
            expected = choose_threshold(cfg, store, emb, pipeline.gallery)
        assert expected.source == "gallery-estimate" and expected.value < cfg.recognition.threshold
        assert pipeline.threshold == expected.value and pipeline.matcher.threshold == expected.value
    finally:
        for close in reader.closers:
            close()
