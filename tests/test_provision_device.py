"""`kaoclock provision`: key, config, backend key, passphrase, registration; safe to re-run."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.cli.main import main
from firmware_py.config import load
from firmware_py.keys.jwk import load_public_keys, public_jwk
from firmware_py.keys.store import init_private_key
from firmware_py.serial.passphrase import PassphraseStore


def _prov(tmp_path: Path, *extra: str, device: str = "gate-01", broker: str = "mqtts://broker.example:8883") -> list[str]:
    return [
        "provision",
        "--device-id",
        device,
        "--site",
        "setagaya-3",
        "--broker",
        broker,
        "--config-out",
        str(tmp_path / "kaoclock.toml"),
        "--data-dir",
        str(tmp_path / "data"),
        *extra,
    ]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch | None = None, stdin: str = "") -> tuple[int, str, str]:
    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_provision_then_rerun_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    rc, out, _ = _run(_prov(tmp_path, "--passphrase-stdin"), capsys, monkeypatch, "correct horse battery\n")
    assert rc == 0, out
    data = tmp_path / "data"
    key = data / "keys" / "device_ed25519.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    reg = json.loads((data / "registration.json").read_text())
    assert reg["device"] == "gate-01" and reg["site"] == "setagaya-3" and reg["type"] == "kaoclock.registration"
    assert reg["kid"] == reg["jwk"]["kid"] and "d" not in reg["jwk"]
    assert reg["firmware"] and isinstance(reg["models"], dict) and reg["models"]
    assert f'"kid": "{reg["kid"]}"' in out and "created" in out
    # The written config passes `config check` and says what was asked.
    assert main(["config", "check", str(tmp_path / "kaoclock.toml")]) == 0
    cfg = load(tmp_path / "kaoclock.toml")
    assert (cfg.device.id, cfg.device.site, cfg.mqtt.enabled, cfg.mqtt.brokers) == ("gate-01", "setagaya-3", True, ["mqtts://broker.example:8883"])
    assert cfg.device.data_dir == data.resolve()
    assert PassphraseStore(data).verify("correct horse battery")
    # The public JWK file is what `backend devices add` takes.
    assert list(load_public_keys(data / "keys" / "device.jwk")) == [reg["kid"]]

    pem = key.read_bytes()
    cfg_text = (tmp_path / "kaoclock.toml").read_text()
    capsys.readouterr()
    rc, out, _ = _run(_prov(tmp_path, "--json"), capsys, monkeypatch)
    assert rc == 0
    assert json.loads(out)["kid"] == reg["kid"]
    assert key.read_bytes() == pem and (tmp_path / "kaoclock.toml").read_text() == cfg_text
    assert not (tmp_path / "kaoclock.toml.bak").exists()
    assert PassphraseStore(data).verify("correct horse battery")  # not given again: kept
    rc, out, _ = _run(_prov(tmp_path), capsys, monkeypatch)
    assert "kept" in out and "unchanged" in out


def test_existing_key_is_kept_and_unusable_key_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    info = init_private_key(data / "keys" / "device_ed25519.pem")
    rc, out, _ = _run(_prov(tmp_path, "--json"), capsys)
    assert rc == 0 and json.loads(out)["kid"] == info.kid  # kept, not replaced

    # A key other users can read is refused, left in place, and nothing else is written.
    other = tmp_path / "other"
    key = other / "data" / "keys" / "device_ed25519.pem"
    init_private_key(key)
    key.chmod(0o644)
    before = key.read_bytes()
    rc, _, err = _run(_prov(other), capsys)
    assert rc == 2
    assert str(key) in err and "left untouched" in err and "chmod 600" in err
    assert key.read_bytes() == before
    assert not (other / "kaoclock.toml").exists()


def test_bad_arguments_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(_prov(tmp_path, device="Gate_01"), capsys)
    assert rc == 2 and "device.id" in err
    rc, _, err = _run(_prov(tmp_path, broker="http://broker.example"), capsys)
    assert rc == 2 and "mqtt.brokers" in err
    rc, _, err = _run(_prov(tmp_path, broker="mqtt://broker.example:99999"), capsys)
    assert rc == 2 and "brokers[0]" in err and "port" in err
    # Nothing was created by the refused runs.
    assert not (tmp_path / "data").exists() and not (tmp_path / "kaoclock.toml").exists()


def test_short_passphrase_refused_first(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    rc, _, err = _run(_prov(tmp_path, "--passphrase-stdin"), capsys, monkeypatch, "short\n")
    assert rc == 2 and "at least" in err
    assert not (tmp_path / "data").exists()


def test_conflicting_config_refused_unless_forced_and_install_config_merged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = tmp_path / "kaoclock.toml"
    # What device/install.sh writes: data_dir, models, update paths; provisioning adds to it.
    cfg_path.write_text(f'[device]\ndata_dir = "{tmp_path / "data"}"\n\n[models]\ndir = "{tmp_path / "models"}"\n')
    rc, out, _ = _run(_prov(tmp_path), capsys)
    assert rc == 0 and "updated" in out
    cfg = load(cfg_path)
    assert cfg.models.dir == tmp_path / "models" and cfg.device.id == "gate-01"

    text = cfg_path.read_text()
    rc, _, err = _run(_prov(tmp_path, device="gate-02"), capsys)
    assert rc == 2 and "device.id" in err and "gate-01" in err and "--force" in err
    assert cfg_path.read_text() == text
    rc, out, _ = _run(_prov(tmp_path, "--force", device="gate-02"), capsys)
    assert rc == 0 and "replaced" in out
    assert load(cfg_path).device.id == "gate-02"
    assert (tmp_path / "kaoclock.toml.bak").read_text() == text


def test_backend_key_installed_and_a_different_one_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = (Ed25519PrivateKey.generate() for _ in range(2))
    (tmp_path / "a.jwk").write_text(json.dumps(public_jwk(a)))
    (tmp_path / "b.jwk").write_text(json.dumps(public_jwk(b)))
    rc, out, _ = _run(_prov(tmp_path, "--backend-key", str(tmp_path / "a.jwk")), capsys)
    assert rc == 0 and "backend key installed" in out
    installed = tmp_path / "data" / "keys" / "backend.jwk"
    assert list(load_public_keys(installed)) == [public_jwk(a)["kid"]]
    rc, out, _ = _run(_prov(tmp_path, "--backend-key", str(tmp_path / "a.jwk")), capsys)
    assert rc == 0 and "backend key unchanged" in out
    rc, _, err = _run(_prov(tmp_path, "--backend-key", str(tmp_path / "b.jwk")), capsys)
    assert rc == 2 and "--replace-backend-key" in err
    assert list(load_public_keys(installed)) == [public_jwk(a)["kid"]]
    rc, _, _ = _run(_prov(tmp_path, "--backend-key", str(tmp_path / "b.jwk"), "--replace-backend-key"), capsys)
    assert rc == 0 and list(load_public_keys(installed)) == [public_jwk(b)["kid"]]
    # A private JWK is never installed as a verifier.
    (tmp_path / "priv.jwk").write_text(json.dumps(public_jwk(a) | {"d": "AAAA"}))
    rc, _, err = _run(_prov(tmp_path, "--backend-key", str(tmp_path / "priv.jwk"), "--replace-backend-key"), capsys)
    assert rc == 2 and "private" in err
