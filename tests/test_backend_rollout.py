"""Rollouts in waves: `kaoclock backend rollout` updates 20 simulated readers over a real mosquitto, halts after the wave
in which the second reader rolls back, leaves the later waves untouched, and resumes on a re-run; bad input is refused.

Each simulated reader is the real reader update path, made light: its MQTT side (DeviceLink with the signed
transfer commands and the firmware receiver), the real updater with A/B slots in a temp dir, and the reporter
that publishes the outcome. The release is a tiny tree whose `device/bin/kaoclock health --json` is a shell
script: it passes, unless a file `health-fails` lies beside the reader's config (a broken camera).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.backend.db import Database
from firmware_py.backend.registry import DbDeviceRegistry
from firmware_py.backend.rollout import RolloutStore, plan_waves, rollout_id
from firmware_py.cli.main import main
from firmware_py.config import load
from firmware_py.devtools.broker import LocalBroker
from firmware_py.errors import ExitCode
from firmware_py.events import Event, EventBus
from firmware_py.keys.jwk import public_jwk
from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key, load_private_key
from firmware_py.mqtt.commands.registry import CommandRegistry
from firmware_py.mqtt.device_link import DeviceLink
from firmware_py.outbox.store import Outbox
from firmware_py.update.bundle import build_bundle
from firmware_py.update.control import NoControl
from firmware_py.update.errors import BundleError, UpdateError
from firmware_py.update.remote import FirmwareReceiver, UpdateReporter, staging_dir
from firmware_py.update.signing import public_pem
from firmware_py.update.staging import Staging
from firmware_py.update.transfer import TransferCommands
from firmware_py.update.updater import Settings, Updater

SITE = "hq"
HEALTH = """#!/bin/sh
# The test release's health check (called as: kaoclock health --json --config PATH).
if [ -e "$(dirname "$4")/health-fails" ]; then
  echo '{"ok": false, "checks": [{"name": "camera", "status": "fail", "detail": "no frames (simulated broken camera)", "permanent": true}]}'
else
  echo '{"ok": true, "checks": [{"name": "camera", "status": "ok", "detail": "frames arrive"}]}'
fi
"""


def tiny_tree(dest: Path, version: str) -> Path:
    """The smallest tree a slot accepts: the files a bundle must hold, and a health check that needs no models."""
    files = {
        "pyproject.toml": f'[project]\nname = "kaoclock"\nversion = "{version}"\nrequires-python = ">=3.11"\ndependencies = []\n',
        "firmware_py/__init__.py": f'__version__ = "{version}"\n',
        "firmware_py/__main__.py": "",
        "models/manifest.toml": "",
        "device/bin/kaoclock": HEALTH,
    }
    for rel, text in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    (dest / "device/bin/kaoclock").chmod(0o755)
    return dest


class SimReader:
    """One reader: MQTT side with the transfer commands, the updater with A/B slots, the update reporter."""

    def __init__(self, root: Path, device: str, broker: str, release_pub: bytes, backend_jwk: dict[str, Any], first: Path) -> None:
        self.root, self.device = root, device
        root.mkdir(parents=True)
        (root / "release.pub").write_bytes(release_pub)
        self.config = root / "kaoclock.toml"
        self.config.write_text(
            f'[device]\ndata_dir = "{root / "data"}"\nsite = "{SITE}"\nid = "{device}"\n\n'
            f'[mqtt]\nbrokers = ["{broker}"]\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n\n'
            f'[update]\nslots_root = "{root / "opt"}"\npublic_key = "{root / "release.pub"}"\nservice = ""\n'
        )
        self.cfg = load(self.config)
        data = self.cfg.device.data_dir
        backend_public_path(data).parent.mkdir(parents=True, exist_ok=True)
        backend_public_path(data).write_text(json.dumps(backend_jwk))
        init_private_key(device_key_path(data))
        self.jwk = public_jwk(load_private_key(device_key_path(data)))
        settings = Settings(root / "opt", data / "update", root / "release.pub", self.config, health_deadline=20.0, retry_interval=0.2)
        self.updater = Updater(settings, NoControl(), say=lambda _line: None)
        assert self.updater.init(first, venv=Path(sys.prefix)).action == "installed"
        self.bus = EventBus()
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.staging = Staging(staging_dir(self.cfg))
        registry = CommandRegistry()
        receiver = FirmwareReceiver.from_config(self.cfg, self.staging, self.bus)
        TransferCommands(self.staging, [receiver], bus=self.bus, command_max_bytes=self.cfg.mqtt.command_max_bytes).register(registry)
        self.outbox = Outbox.from_config(self.cfg, self.bus)
        self.link = DeviceLink(self.cfg, self.bus, outbox=self.outbox, registry=registry)
        self.reporter = UpdateReporter(data / "update", data / "update_reported.json", self.bus, poll_s=0.1)
        self.updates: list[threading.Thread] = []
        self.bus.subscribe(self._staged, "update.staged")

    def _staged(self, _event: Event) -> None:
        # What kaoclock-update.path starts: kaoclock-update.service runs `kaoclock update --staged` (the reporter tells the outcome).
        t = threading.Thread(target=self._update_service, daemon=True)
        self.updates.append(t)
        t.start()

    def _update_service(self) -> None:
        with contextlib.suppress(BundleError, UpdateError):  # a refusal is recorded in the history as staged-refused
            self.updater.apply_staged(self.staging.dir)

    def start(self) -> None:
        self.link.start()
        self.reporter.start()  # the first start: the history so far is not news

    def stop(self) -> None:
        for t in self.updates:
            t.join(30)
        self.reporter.stop()
        self.link.stop()
        self.outbox.close()

    def slots(self) -> tuple[str | None, str | None, str | None]:
        """(current slot, committed slot, the committed slot's version)."""
        st = self.updater.status()
        com = st["committed"]
        return st["current"], com, st["slots"][com].get("version") if com else None

    def sent(self) -> int:
        """How many transfers this reader was sent (transfer.started events)."""
        return sum(e.type == "transfer.started" for e in self.events)


def make_city(tmp_path: Path, broker: str, n: int, db: str) -> dict[str, Any]:
    """``n`` readers at site hq (plus one registered at another site), a backend home and its database, a signed release 0.2.0."""
    release_key, backend_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    home = tmp_path / "backend"
    home.mkdir()
    (home / "backend_ed25519.pem").write_bytes(
        backend_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (home / "backend_ed25519.pem").chmod(0o600)
    (home / "release.pub").write_bytes(public_pem(release_key.public_key()))
    first = tiny_tree(tmp_path / "tree-0.1.0", "0.1.0")
    bundle = tmp_path / "kaoclock-0.2.0.bundle"
    build_bundle(tiny_tree(tmp_path / "tree-0.2.0", "0.2.0"), bundle, release_key, source="test")
    registry = DbDeviceRegistry(Database.open(db))
    readers = {}
    for i in range(1, n + 1):
        name = f"gate-{i:02d}"
        r = SimReader(tmp_path / name, name, broker, public_pem(release_key.public_key()), public_jwk(backend_key), first)
        registry.add(SITE, name, r.jwk)
        readers[name] = r
    registry.add("depot", "gate-01", public_jwk(Ed25519PrivateKey.generate()))  # another site: never part of --site hq
    return {"readers": readers, "bundle": bundle, "args": ["--broker", broker, "--home", str(home), "--db", db], "db": db}


@pytest.fixture
def city(tmp_path: Path, mosquitto: LocalBroker) -> Any:
    """20 readers on SQLite."""
    c = make_city(tmp_path, mosquitto.url, 20, str(tmp_path / "backend.sqlite"))
    for r in c["readers"].values():
        r.start()
    yield c
    for r in c["readers"].values():
        r.stop()


def rollout(city: Any, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any], str]:
    capsys.readouterr()
    rc = main(["backend", "rollout", str(city["bundle"]), "--site", SITE, "--canary", "2", "--wave-size", "6", "--halt-on-failures", "2",
               "--commit-timeout", "30", "--wait", "15", "--json", *city["args"], *extra])  # fmt: skip
    out = capsys.readouterr()
    return rc, json.loads(out.out), out.err


def test_a_rollout_to_20_readers_halts_after_the_wave_with_the_second_failure_and_resumes(city: Any, capsys: pytest.CaptureFixture[str]) -> None:
    readers = city["readers"]
    for broken in ("gate-04", "gate-07"):  # both in wave 2 (canary: gate-01, gate-02; wave 2: gate-03 .. gate-08)
        (readers[broken].root / "health-fails").touch()
    rc, doc, err = rollout(city, capsys)
    assert rc == ExitCode.UPDATE_FAILED, err
    assert doc["state"] == "halted" and doc["version"] == "0.2.0" and "halted after wave 2 of 4" in doc["detail"]
    by_name = {r["device"]: r for r in doc["readers"]}
    assert set(by_name) == set(readers)  # the depot reader is not in a --site hq rollout
    assert {r["device"]: r["reason"] for r in doc["failed"]} == {"gate-04": "rolled_back", "gate-07": "rolled_back"}
    assert all("simulated broken camera" in r["detail"] for r in doc["failed"])
    assert doc["counts"] == {"committed": 6, "failed": 2, "not_reached": 12}
    assert [by_name[f"gate-{i:02d}"]["wave"] for i in range(1, 21)] == [1] * 2 + [2] * 6 + [3] * 6 + [4] * 6
    assert "gate-04 (rolled_back)" in err and "gate-07 (rolled_back)" in err and "canary wave: hq/gate-01, hq/gate-02" in err
    for name, r in readers.items():
        n = int(name[-2:])
        if n <= 8 and name not in ("gate-04", "gate-07"):
            assert by_name[name]["state"] == "committed" and r.slots() == ("b", "b", "0.2.0"), name
        elif n <= 8:  # installed into slot b, failed its health check, rolled back to slot a
            assert by_name[name]["state"] == "failed" and r.slots() == ("a", "a", "0.1.0"), name
            assert r.updater.status()["slots"]["b"]["status"] == "bad"
        else:  # later waves: never sent the bundle, the old slot untouched
            assert by_name[name]["state"] == "not_reached" and r.slots() == ("a", "a", "0.1.0"), name
            assert r.sent() == 0 and (not r.staging.dir.exists() or not any(r.staging.dir.iterdir())), name
            assert r.updater.status()["slots"]["b"]["installed"] is False
    # The state is in the database: `rollout status ID` shows the same.
    capsys.readouterr()
    assert main(["backend", "rollout", "status", doc["id"], "--json", *city["args"]]) == ExitCode.UPDATE_FAILED
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "halted" and status["counts"] == doc["counts"] and status["runs"] == 1

    # The technician fixes both cameras and runs the same command: committed readers are not sent it again.
    for broken in ("gate-04", "gate-07"):
        (readers[broken].root / "health-fails").unlink()
    rc, again, err = rollout(city, capsys)
    assert rc == 0, err
    assert again["id"] == doc["id"] and again["state"] == "done" and again["run"] == 2 and again["counts"] == {"committed": 20}
    assert "6 committed before" in err and "14 in 3 wave(s)" in err
    for name, r in readers.items():
        assert r.slots() == ("b", "b", "0.2.0"), name
        assert r.sent() == (2 if name in ("gate-04", "gate-07") else 1), name
    attempts = {r["device"]: r["attempts"] for r in again["readers"]}
    assert attempts["gate-04"] == attempts["gate-07"] == 2 and attempts["gate-01"] == attempts["gate-20"] == 1


def test_an_unanswering_and_a_refusing_reader_halt_a_rollout_kept_in_postgresql(
    tmp_path: Path, mosquitto: LocalBroker, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    c = make_city(tmp_path, mosquitto.url, 3, pg_url)
    readers = c["readers"]
    # gate-01 (the canary) is switched off; gate-02 has a staged release waiting for its updater, so it refuses another.
    (readers["gate-02"].staging.dir).mkdir(parents=True, exist_ok=True)
    (readers["gate-02"].staging.dir / "READY").write_text("other.bundle\n")
    for name in ("gate-02", "gate-03"):
        readers[name].start()
    try:
        capsys.readouterr()
        rc = main(["backend", "rollout", str(c["bundle"]), "--site", SITE, "--canary", "1", "--wave-size", "1", "--halt-on-failures", "2",
                   "--wait", "1", "--json", *c["args"]])  # fmt: skip
        out = capsys.readouterr()
    finally:
        for name in ("gate-02", "gate-03"):
            readers[name].stop()
        readers["gate-01"].outbox.close()
    assert rc == ExitCode.UPDATE_FAILED, out.err
    doc = json.loads(out.out)
    assert doc["state"] == "halted" and doc["counts"] == {"failed": 2, "not_reached": 1}
    failed = {r["device"]: r for r in doc["failed"]}
    assert failed["gate-01"]["reason"] == "no_answer" and "no answer from the reader" in failed["gate-01"]["detail"]
    assert failed["gate-02"]["reason"] == "busy" and "a staged release is waiting" in failed["gate-02"]["detail"]
    assert readers["gate-03"].sent() == 0 and readers["gate-03"].slots() == ("a", "a", "0.1.0")
    assert all(r.slots() == ("a", "a", "0.1.0") for r in readers.values())
    rows = Database.open(pg_url).query("SELECT device, state, wave FROM rollout_readers ORDER BY device")
    assert rows == [("gate-01", "failed", 1), ("gate-02", "failed", 2), ("gate-03", "not_reached", 3)]


def test_plan_waves() -> None:
    keys = [("s", f"d{i}") for i in range(7)]
    assert [len(w) for w in plan_waves(keys, 2, 3)] == [2, 3, 2]
    assert [len(w) for w in plan_waves(keys, 10, 3)] == [7]
    assert plan_waves([], 1, 1) == []


@pytest.fixture
def backend(tmp_path: Path) -> Any:
    """A backend home with a release key and one reader registered at site hq (no broker: bad input stops before it)."""
    release_key = Ed25519PrivateKey.generate()
    home = tmp_path / "backend"
    home.mkdir()
    (home / "backend_ed25519.pem").write_bytes(
        Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (home / "backend_ed25519.pem").chmod(0o600)
    (home / "release.pub").write_bytes(public_pem(release_key.public_key()))
    db_file = tmp_path / "backend.sqlite"
    reg = DbDeviceRegistry(Database.open(db_file))
    reg.add(SITE, "gate-01", public_jwk(Ed25519PrivateKey.generate()))
    good = tmp_path / "kaoclock-0.2.0.bundle"
    build_bundle(tiny_tree(tmp_path / "tree", "0.2.0"), good, release_key, source="test")
    forged = tmp_path / "forged.bundle"
    build_bundle(tmp_path / "tree", forged, Ed25519PrivateKey.generate(), source="test")
    plain = tmp_path / "not-a-bundle.tar.gz"
    plain.write_bytes(os.urandom(2000))
    return {"args": ["--broker", "mqtt://127.0.0.1:9", "--home", str(home), "--db", str(db_file)], "good": good, "forged": forged,
            "plain": plain, "db": db_file, "home": home}  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--site", "harbour"], ExitCode.USAGE, "--site harbour: unknown site (known: hq)"),
        (["--site", SITE, "--canary", "0"], ExitCode.USAGE, "--canary must be at least 1"),
        (["--site", SITE, "--wave-size", "0"], ExitCode.USAGE, "--wave-size must be at least 1"),
        (["--site", SITE, "--halt-on-failures", "0"], ExitCode.USAGE, "--halt-on-failures must be at least 1"),
        ([], ExitCode.USAGE, "choose the readers: --site SITE, or --all"),
    ],
)
def test_bad_rollout_arguments_are_refused_before_anything_is_sent(
    backend: Any, capsys: pytest.CaptureFixture[str], extra: list[str], code: int, message: str
) -> None:
    capsys.readouterr()
    assert main(["backend", "rollout", str(backend["good"]), *extra, *backend["args"]]) == code
    assert message in capsys.readouterr().err
    assert Database.open(backend["db"]).query("SELECT count(*) FROM rollouts")[0][0] == 0


def test_unsigned_or_foreign_bundles_and_no_readers_are_refused(backend: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for bundle, message in ((backend["forged"], "signed by release key"), (backend["plain"], "truncated or corrupt")):
        capsys.readouterr()
        assert main(["backend", "rollout", str(bundle), "--site", SITE, *backend["args"]]) == ExitCode.BUNDLE_REFUSED
        assert message in capsys.readouterr().err
    capsys.readouterr()
    assert main(["backend", "rollout", str(backend["good"]), "--site", SITE, *backend["args"][2:], "--broker", "mqtt://127.0.0.1:9",
                 "--release-key", str(backend["home"] / "missing.pub")]) == ExitCode.USAGE  # fmt: skip
    assert "no release public key" in capsys.readouterr().err
    # A site with no reader, and an empty registry.
    db = Database.open(backend["db"])
    with db.tx() as cur:
        cur.execute("INSERT INTO sites(site, added) VALUES('library', 0)")
    assert main(["backend", "rollout", str(backend["good"]), "--site", "library", *backend["args"]]) == ExitCode.USAGE
    assert "no readers registered at site library" in capsys.readouterr().err
    with db.tx() as cur:
        cur.execute("DELETE FROM devices")
    assert main(["backend", "rollout", str(backend["good"]), "--all", *backend["args"]]) == ExitCode.USAGE
    assert "no readers registered at all" in capsys.readouterr().err
    assert main(["backend", "rollout", "status", "0.2.0-hq-12345678", *backend["args"]]) == ExitCode.USAGE
    assert "no rollout '0.2.0-hq-12345678'; none has been started" in capsys.readouterr().err
    assert db.query("SELECT count(*) FROM rollouts")[0][0] == 0


def test_a_rollout_another_process_is_running_is_not_run_twice(backend: Any, capsys: pytest.CaptureFixture[str]) -> None:
    good = backend["good"]
    rid = rollout_id("0.2.0", SITE, hashlib.sha256(good.read_bytes()).hexdigest())
    RolloutStore(Database.open(backend["db"])).begin(rid, "0.2.0", "x", good.name, SITE, 1, 1, 1)  # someone else's live run
    capsys.readouterr()
    assert main(["backend", "rollout", str(good), "--site", SITE, *backend["args"]]) == ExitCode.USAGE
    assert f"rollout {rid} is being run by another process" in capsys.readouterr().err
    # --takeover runs it anyway; here the broker is down: exit 3, nothing sent, the rollout marked interrupted.
    assert main(["backend", "rollout", str(good), "--site", SITE, "--takeover", "--wait", "1", *backend["args"]]) == ExitCode.UNAVAILABLE
    assert "nothing was sent" in capsys.readouterr().err
    status = RolloutStore(Database.open(backend["db"])).status(rid)
    assert status["state"] == "interrupted" and status["runs"] == 2 and status["readers"] == []
