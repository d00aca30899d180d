"""Signed commands: every refusal has its reason, the built-ins work, nothing crashes the daemon."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.backend.commands import command_claims, sign_command
from firmware_py.cli.main import main
from firmware_py.config import load, with_changes
from firmware_py.devtools.broker import Capture, LocalBroker
from firmware_py.events import EventBus
from firmware_py.keys.jwk import public_jwk
from firmware_py.keys.jws import COMMAND_TYP, PUNCH_TYP, sign
from firmware_py.keys.store import device_key_path, init_private_key
from firmware_py.mqtt.commands.builtin import RunningConfig, register_builtin
from firmware_py.mqtt.commands.nonces import NonceStore
from firmware_py.mqtt.commands.processor import CommandProcessor
from firmware_py.mqtt.commands.registry import CommandRefused, CommandRegistry
from firmware_py.mqtt.device_link import DeviceLink
from firmware_py.outbox.store import Outbox

SITE, DEVICE = "site-a", "reader-1"


class RecordingDoor:
    """Stands in for the GPIO package's relay: records every grant."""

    def __init__(self) -> None:
        self.grants: list[str] = []

    def grant(self, reason: str) -> None:
        self.grants.append(reason)


@pytest.fixture
def backend_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def rig(tmp_path: Path, backend_key: Ed25519PrivateKey, contract: Any) -> dict[str, Any]:
    from firmware_py.keys.jwk import parse_public_jwk

    pub = parse_public_jwk(public_jwk(backend_key))
    registry = CommandRegistry()
    door = RecordingDoor()
    cfg_file = tmp_path / "kaoclock.toml"
    cfg_file.write_text("[camera]\nfps = 12.0\n")
    running = RunningConfig(load(cfg_file), cfg_file)
    changes: list[Any] = []
    running.on_change(changes.append)
    register_builtin(registry, door=door, config=running, status=lambda: {"outbox_depth": 0})
    registry.register("boom", lambda ctx: 1 / 0)
    bus = EventBus()
    events: list[Any] = []
    bus.subscribe(events.append)
    keys = {pub.kid: pub}
    proc = CommandProcessor(
        registry,
        lambda: keys,
        NonceStore(tmp_path / "nonces.sqlite"),
        site=SITE,
        device=DEVICE,
        bus=bus,
        max_bytes=4096,
        max_ttl_s=600,
        skew_s=30,
    )

    def run(token: str | bytes) -> dict[str, Any]:
        result = proc.process(token)
        contract.check(f"kaoclock/v1/{SITE}/{DEVICE}/command_results", json.dumps(result).encode())
        return result

    return {"proc": proc, "run": run, "door": door, "running": running, "changes": changes, "events": events, "keys": keys, "cfg_file": cfg_file}


def cmd(key: Ed25519PrivateKey, name: str, args: dict | None = None, **over: Any) -> str:
    claims = command_claims(SITE, DEVICE, name, args, ttl_s=60) | over
    return sign_command(key, claims)


def test_builtin_commands_run(rig: dict, backend_key: Ed25519PrivateKey) -> None:
    run = rig["run"]
    r = run(cmd(backend_key, "ping", {"echo": "hi"}))
    assert (r["status"], r["reason"], r["result"]) == ("done", None, {"pong": True, "echo": "hi"})
    r = run(cmd(backend_key, "door.open", {"reason": "delivery"}))
    assert r["status"] == "done" and len(rig["door"].grants) == 1 and "delivery" in rig["door"].grants[0]
    assert run(cmd(backend_key, "status.request"))["result"] == {"outbox_depth": 0}
    # config.reload with changes: validated, applied, reported
    r = run(cmd(backend_key, "config.reload", {"changes": {"camera.fps": 10.0}}))
    assert r["status"] == "done" and r["result"]["changed"] == ["camera.fps"]
    assert rig["running"].current.camera.fps == 10.0 and len(rig["changes"]) == 1
    # config.reload from the file
    rig["cfg_file"].write_text("[camera]\nfps = 7.5\n")
    r = run(cmd(backend_key, "config.reload"))
    assert r["status"] == "done" and rig["running"].current.camera.fps == 7.5


def test_refused_config_leaves_the_running_one(rig: dict, backend_key: Ed25519PrivateKey) -> None:
    run = rig["run"]
    before = rig["running"].current
    r = run(cmd(backend_key, "config.reload", {"changes": {"camera.fps": -3, "camera.nope": 1}}))
    assert (r["status"], r["reason"]) == ("refused", "config_invalid")
    assert any("camera.fps" in p for p in r["result"]["problems"]) and any("camera.nope" in p for p in r["result"]["problems"])
    rig["cfg_file"].write_text("[camera\nfps = ")
    r = run(cmd(backend_key, "config.reload"))
    assert r["reason"] == "config_invalid" and "TOML" in r["result"]["problems"][0]
    r = run(cmd(backend_key, "config.reload", {"changes": ["camera.fps"]}))
    assert r["reason"] == "bad_args"
    assert rig["running"].current is before and rig["changes"] == []


def test_every_refusal_has_its_reason(rig: dict, backend_key: Ed25519PrivateKey) -> None:
    run = rig["run"]
    other = Ed25519PrivateKey.generate()
    now = time.time()
    good = cmd(backend_key, "ping")
    h, p, s = good.split(".")
    cases: dict[str, str | bytes] = {
        "oversized": cmd(backend_key, "ping", {"echo": "x" * 5000}),
        "malformed": b"\x00\xffnot a jws",
        "unsigned": jwt.encode(command_claims(SITE, DEVICE, "ping"), key=None, algorithm="none", headers={"typ": COMMAND_TYP}),
        "unsupported_alg": jwt.encode(command_claims(SITE, DEVICE, "ping"), "a-shared-secret-of-32-bytes-long!", algorithm="HS256"),
        "wrong_type": sign(command_claims(SITE, DEVICE, "ping"), backend_key, PUNCH_TYP),
        "unknown_key": cmd(other, "door.open"),
        "bad_signature": f"{h}.{p}.{s[:-6]}AAAAAA" if not s.endswith("AAAAAA") else f"{h}.{p}.{s[:-6]}BBBBBB",
        "wrong_device": sign_command(backend_key, command_claims(SITE, "reader-2", "door.open")),
        "not_yet_valid": cmd(backend_key, "ping", iat=int(now + 3600), exp=int(now + 3660)),
        "expired": cmd(backend_key, "door.open", iat=int(now - 400), exp=int(now - 100)),
        "ttl_too_long": cmd(backend_key, "ping", exp=int(now + 86400)),
        "unknown_command": cmd(backend_key, "self.destruct"),
        "bad_args": cmd(backend_key, "door.open", {"unlock_forever": True}),
    }
    for reason, token in cases.items():
        r = run(token)
        assert (r["status"], r["reason"]) == ("refused", reason), (reason, r["detail"])
        assert r["detail"]
    # malformed claims behind a valid signature
    for broken in ({"nonce": "short"}, {"exp": "tomorrow"}, {"args": [1]}, {"v": 2}, {"cmd": ""}):
        r = run(sign_command(backend_key, command_claims(SITE, DEVICE, "ping") | broken))
        assert r["reason"] == "malformed", broken
    assert rig["door"].grants == []  # no refused command opened the door
    refused = [e for e in rig["events"] if e.type == "command.refused"]
    assert not refused  # process() alone does not emit; submit() does (see below)


def test_replay_is_refused_even_after_a_restart(rig: dict, backend_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    token = cmd(backend_key, "door.open")
    assert rig["run"](token)["status"] == "done"
    r = rig["run"](token)
    assert (r["status"], r["reason"]) == ("refused", "replayed")
    # A restarted daemon (new processor, same nonce file) still remembers it.
    proc2 = CommandProcessor(CommandRegistry(), rig["proc"].keys, NonceStore(tmp_path / "nonces.sqlite"), site=SITE, device=DEVICE)
    register_builtin(proc2.registry, door=rig["door"])
    assert proc2.process(token)["reason"] == "replayed"
    assert len(rig["door"].grants) == 1


def test_no_key_handler_errors_busy_and_submit(rig: dict, backend_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    run = rig["run"]
    r = run(cmd(backend_key, "boom"))
    assert (r["status"], r["reason"]) == ("failed", "handler_error") and "ZeroDivisionError" in r["detail"]
    assert run(cmd(backend_key, "ping"))["status"] == "done"  # still alive
    nokey = CommandProcessor(CommandRegistry(), dict, NonceStore(tmp_path / "n2.sqlite"), site=SITE, device=DEVICE)
    assert nokey.process(cmd(backend_key, "ping"))["reason"] == "no_backend_key"

    results: list[dict] = []
    proc = CommandProcessor(
        rig["proc"].registry,
        rig["proc"].keys,
        NonceStore(tmp_path / "n3.sqlite"),
        site=SITE,
        device=DEVICE,
        publish_result=results.append,
        queue_size=2,
    )
    for _ in range(3):  # the worker is not started: the queue fills up
        proc.submit(cmd(backend_key, "ping").encode())
    assert [r["reason"] for r in results] == ["busy"]
    proc.submit(b"x" * (proc.max_bytes + 1))
    assert results[-1]["reason"] == "oversized" and results[-1]["id"] is None
    proc.start()
    deadline = time.monotonic() + 5
    while len(results) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.stop()
    assert [r["status"] for r in results[2:]] == ["done", "done"]


def test_registry_rules() -> None:
    reg = CommandRegistry()
    reg.register("gallery.add", lambda ctx: None, args=["person"])
    with pytest.raises(ValueError, match="already registered"):
        reg.register("gallery.add", lambda ctx: None)
    with pytest.raises(ValueError, match="dotted lowercase"):
        reg.register("Gallery Add", lambda ctx: None)
    with pytest.raises(CommandRefused):
        raise CommandRefused("nope", "a handler refuses like this")


def test_commands_over_the_broker_with_the_backend_cli(
    tmp_path: Path, mosquitto: LocalBroker, contract: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "device"
    bhome = tmp_path / "backend"
    init_private_key(device_key_path(home))
    assert main(["backend", "init", "--home", str(bhome)]) == 0
    assert main(["backend", "key", "--jwk", "--home", str(bhome)]) == 0
    jwk_file = tmp_path / "backend.jwk"
    jwk_file.write_text(capsys.readouterr().out.split("\n", 1)[1])
    cfg = with_changes(
        load(None),
        {
            "device.data_dir": str(home),
            "device.site": SITE,
            "device.id": DEVICE,
            "mqtt.enabled": True,
            "mqtt.brokers": [mosquitto.url],
            "mqtt.command_max_bytes": 2048,
        },
    )
    cfg_file = tmp_path / "k.toml"
    cfg_file.write_text(f'[device]\ndata_dir = "{home}"\n')
    assert main(["keys", "trust-backend", str(jwk_file), "--config", str(cfg_file)]) == 0
    bus = EventBus()
    door = RecordingDoor()
    dev = DeviceLink.from_config(cfg, bus, outbox=Outbox.from_config(cfg, bus), door=door, config=RunningConfig(cfg))
    cap = Capture(mosquitto.url)
    dev.start()
    try:
        assert dev.link.wait_connected(10) is not None
        base = ["backend", "command", SITE, DEVICE, "--home", str(bhome), "--broker", mosquitto.url, "--wait", "10"]
        capsys.readouterr()
        assert main([*base, "door.open", "--args", '{"reason": "technician test"}']) == 0
        assert json.loads(capsys.readouterr().out)["result"] == {"opened": True}
        assert door.grants and "technician test" in door.grants[0]
        assert main([*base, "config.reload", "--args", '{"changes": {"camera.fps": 500}}']) == 1
        assert json.loads(capsys.readouterr().out)["reason"] == "config_invalid"
        # Replay the same signed token, send garbage and an oversized payload: each gets a refusal, the daemon lives on.
        assert main(["backend", "command", SITE, DEVICE, "ping", "--home", str(bhome)]) == 0
        token = capsys.readouterr().out.strip()
        topic = f"kaoclock/v1/{SITE}/{DEVICE}/commands"
        for payload in (token.encode(), token.encode(), b"{not a jws", b"A" * 4096):
            cap.client.publish(topic, payload, qos=1)
        cap.wait_for(lambda m: len([1 for t, _, _ in m if t.endswith("/command_results")]) >= 6)
        results = [contract.check(t, p) for t, p, _ in cap.messages if t.endswith("/command_results")]
        reasons = [r["reason"] for r in results]
        assert reasons[:2] == [None, "config_invalid"]
        assert sorted(reasons[2:], key=str) == sorted([None, "replayed", "malformed", "oversized"], key=str)
        assert main([*base, "ping"]) == 0  # still answering
        # config_invalid, replayed, and one event for the unsigned junk (the second junk message is only counted).
        events = cap.wait_for(lambda m: sum(b"command.refused" in p for t, p, _ in m if t.endswith("/events")) >= 3)
        contract.check_all([m for m in events if not m[0].endswith("/commands")])  # everything the device published
    finally:
        dev.stop()
        cap.close()


def test_config_reload_of_mqtt_settings_reconnects_and_results_are_signed(
    tmp_path: Path, mosquitto: LocalBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from firmware_py.backend.commands import verify_result
    from firmware_py.backend.db import Database
    from firmware_py.backend.registry import DbDeviceRegistry
    from firmware_py.keys.store import load_private_key

    second = LocalBroker(tmp_path / "second").start()
    home, bhome = tmp_path / "device", tmp_path / "backend"
    init_private_key(device_key_path(home))
    assert main(["backend", "init", "--home", str(bhome)]) == 0
    assert main(["backend", "key", "--jwk", "--home", str(bhome)]) == 0
    (tmp_path / "backend.jwk").write_text(capsys.readouterr().out.split("\n", 1)[1])
    (tmp_path / "device.jwk").write_text(json.dumps(public_jwk(load_private_key(device_key_path(home)))))
    assert main(["backend", "devices", "add", SITE, DEVICE, str(tmp_path / "device.jwk"), "--home", str(bhome)]) == 0
    cfg_file = tmp_path / "k.toml"

    def write_config(broker: str) -> None:
        cfg_file.write_text(
            f'[device]\ndata_dir = "{home}"\nsite = "{SITE}"\nid = "{DEVICE}"\n\n'
            f'[mqtt]\nbrokers = ["{broker}"]\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n'
        )

    write_config(mosquitto.url)
    assert main(["keys", "trust-backend", str(tmp_path / "backend.jwk"), "--config", str(cfg_file)]) == 0
    running = RunningConfig(load(cfg_file), cfg_file)
    bus = EventBus()
    dev = DeviceLink.from_config(running.current, bus, outbox=Outbox.from_config(running.current, bus), config=running)
    dev.start()

    def command(broker: str, name: str, *args: str, wait: str = "10") -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        code = main(["backend", "command", SITE, DEVICE, name, *args, "--home", str(bhome), "--broker", broker, "--wait", wait])
        return code, json.loads(capsys.readouterr().out)

    try:
        assert dev.link.wait_connected(10) is not None
        code, result = command(mosquitto.url, "ping")
        assert code == 0 and result["signature"] == "verified"  # signed by the device key, checked by the backend CLI
        # A result altered on the way no longer verifies.
        signed = dev.sign_result(dev.processor._result("c-1", "ping", "done", None, "ok", {"pong": True}))
        registry = DbDeviceRegistry(Database.open(bhome / "punches.sqlite"))  # where `backend devices add` registered it
        assert verify_result(signed, registry) == "verified"
        with pytest.raises(ValueError, match="differ"):
            verify_result(signed | {"status": "refused"}, registry)
        with pytest.raises(ValueError, match="not signed"):
            verify_result({k: v for k, v in signed.items() if k != "jws"}, registry)

        write_config(second.url)  # the broker moves: the technician edits the file and reloads
        code, result = command(mosquitto.url, "config.reload")
        assert code == 0 and "mqtt.brokers" in result["result"]["changed"], result
        end = time.monotonic() + 15
        while not (dev.link.connected and dev.link.state.broker == second.url) and time.monotonic() < end:
            time.sleep(0.1)
        assert dev.link.state.broker == second.url and dev.link.connected
        code, result = command(second.url, "ping")
        assert code == 0 and result["result"]["pong"] is True and result["signature"] == "verified"
        code, result = command(mosquitto.url, "ping", wait="2")
        assert code == 1 and result["status"] == "no_result"  # no longer listening on the old broker
    finally:
        dev.stop()
        second.stop()
