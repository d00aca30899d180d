"""A provisioned reader never makes itself a new identity: a missing, unreadable or swapped device key stops `run`."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_py.cli.main import main
from firmware_py.compose.punch_path import DeviceKeyError, PunchService
from firmware_py.config import load, with_changes
from firmware_py.events import EventBus
from firmware_py.keys.store import init_private_key


def provision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    argv = ["provision", "--device-id", "gate-01", "--site", "hq", "--broker", "mqtt://127.0.0.1:1883"]
    assert main([*argv, "--config-out", str(tmp_path / "kaoclock.toml"), "--data-dir", str(tmp_path / "data")]) == 0
    capsys.readouterr()
    return tmp_path / "kaoclock.toml", tmp_path / "data" / "keys" / "device_ed25519.pem"


@pytest.mark.parametrize("damage", ["deleted", "unreadable", "swapped"])
def test_run_refuses_a_provisioned_reader_without_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    cfg_path, key = provision(tmp_path, capsys)
    if damage == "deleted":
        key.unlink()
    elif damage == "unreadable":
        key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
    else:
        key.unlink()
        init_private_key(key)  # a new key nobody registered: every punch would be refused as unknown_key
    before = key.read_bytes() if key.exists() else None
    assert main(["run", "--config", str(cfg_path), "--max-frames", "1"]) == 9
    err = capsys.readouterr().err
    assert "refusing to start" in err and "provision" in err, err
    assert (key.read_bytes() if key.exists() else None) == before  # nothing was created or replaced
    # The same refusal where the daemon builds its punch path (create_key is what the first start of an unprovisioned reader uses).
    cfg = with_changes(load(str(cfg_path)), {"mqtt.enabled": False})
    with pytest.raises(DeviceKeyError):
        PunchService.from_config(cfg, EventBus(), create_key=True)
    assert (key.read_bytes() if key.exists() else None) == before


def test_an_unprovisioned_reader_still_makes_its_key_on_first_start(tmp_path: Path) -> None:
    cfg = with_changes(load(None), {"device.data_dir": str(tmp_path / "dev"), "mqtt.enabled": False})
    service = PunchService.from_config(cfg, EventBus(), create_key=True)
    service.stop()
    assert (tmp_path / "dev" / "keys" / "device_ed25519.pem").exists()
