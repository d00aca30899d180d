"""Device keys: created 0600, never silently replaced, exported as a JWK any JOSE library takes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from firmware_py.cli.main import main
from firmware_py.keys.jwk import KeyFileError, load_public_keys, parse_public_jwk, thumbprint
from firmware_py.keys.store import KeyExistsError, device_key_path, init_private_key, load_private_key


def test_init_creates_0600_key_and_refuses_to_replace_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "device_ed25519.pem"
    info = init_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    before = path.read_bytes()
    with pytest.raises(KeyExistsError, match="already exists"):
        init_private_key(path)
    assert path.read_bytes() == before  # untouched
    assert load_private_key(path) is not None
    from firmware_py.keys.jwk import public_jwk

    assert info.kid == public_jwk(load_private_key(path))["kid"]


def test_replace_keeps_the_old_key(tmp_path: Path) -> None:
    path = tmp_path / "device.pem"
    first = init_private_key(path)
    old = path.read_bytes()
    second = init_private_key(path, replace=True)
    assert second.kid != first.kid
    assert second.retired is not None and second.retired.read_bytes() == old
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_refuses_group_readable_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    init_private_key(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(path)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_private_key(bad)
    with pytest.raises(KeyFileError, match="keys init"):
        load_private_key(tmp_path / "missing.pem")


def test_cli_init_twice_and_export_jwk(tmp_path: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path) -> None:
    assert main(["keys", "init"]) == 0
    out = capsys.readouterr().out
    path = device_key_path(_isolated_home)
    assert str(path) in out and stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    assert main(["keys", "init"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--replace" in err
    assert path.read_bytes() == before
    assert main(["keys", "export", "--jwk"]) == 0
    jwk = json.loads(capsys.readouterr().out)
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert "d" not in jwk and jwk["kid"] == thumbprint(jwk["x"])
    assert jwk["kid"] in out


def test_jwk_validation_refuses_private_and_mislabelled_keys(tmp_path: Path) -> None:
    from firmware_py.keys.jwk import public_jwk

    path = tmp_path / "k.pem"
    init_private_key(path)
    jwk = public_jwk(load_private_key(path))
    with pytest.raises(KeyFileError, match="private"):
        parse_public_jwk(jwk | {"d": "AAAA"})
    with pytest.raises(KeyFileError, match="thumbprint"):
        parse_public_jwk(jwk | {"kid": "someone-else"})
    with pytest.raises(KeyFileError, match="Ed25519"):
        parse_public_jwk({"kty": "EC", "crv": "P-256", "x": "AA"})
    with pytest.raises(KeyFileError, match="32 bytes"):
        parse_public_jwk({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})
    f = tmp_path / "set.json"
    f.write_text(json.dumps({"keys": [jwk]}))
    assert list(load_public_keys(f)) == [jwk["kid"]]
    f.write_text("{")
    with pytest.raises(KeyFileError, match="not JSON"):
        load_public_keys(f)


def test_trust_backend_installs_and_refuses_replacing(tmp_path: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path) -> None:
    from firmware_py.keys.jwk import public_jwk

    key_path = tmp_path / "backend.pem"
    init_private_key(key_path)
    jwk_file = tmp_path / "backend.jwk"
    jwk_file.write_text(json.dumps(public_jwk(load_private_key(key_path))))
    assert main(["keys", "trust-backend", str(jwk_file)]) == 0
    installed = _isolated_home / "keys" / "backend.jwk"
    assert list(load_public_keys(installed)) == [public_jwk(load_private_key(key_path))["kid"]]
    assert main(["keys", "trust-backend", str(jwk_file)]) == 2
    assert "--replace" in capsys.readouterr().err
    private_file = tmp_path / "private.jwk"
    private_file.write_text(json.dumps(public_jwk(load_private_key(key_path)) | {"d": "x"}))
    assert main(["keys", "trust-backend", str(private_file), "--replace"]) == 2
    assert list(load_public_keys(installed))  # the installed key survived the refused replacement
