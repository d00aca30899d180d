"""Inputs nested absurdly deep are refused like any other bad input, never with an uncaught RecursionError."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_py.cli.main import main
from firmware_py.config import ConfigError, load
from firmware_py.keys.jwk import b64url_encode
from firmware_py.keys.jws import COMMAND_TYP, JwsError, verify


def test_a_config_nested_5000_deep_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load(path)
    assert main(["config", "check", str(path)]) == 2
    out = capsys.readouterr()
    assert "nested too deeply" in out.out + out.err


def test_a_command_header_of_50000_brackets_is_an_ordinary_refusal() -> None:
    token = b64url_encode(b"[" * 50000) + "." + b64url_encode(b"{}") + ".AAAA"
    with pytest.raises(JwsError) as exc:
        verify(token, {}, COMMAND_TYP)
    assert exc.value.reason == "malformed"
