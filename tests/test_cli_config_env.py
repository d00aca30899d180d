"""$KAOCLOCK_CONFIG is the default of every command's --config, decided in one place (cli/main.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from firmware_py.cli.main import build_parser, main


def _config_options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.Action]]:
    found = []
    for action in parser._actions:
        if "--config" in action.option_strings:
            found.append((path, action))
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _config_options(sub, (*path, name))
    return found


def test_no_command_has_its_own_default_for_config() -> None:
    options = _config_options(build_parser())
    commands = {p for p, _ in options}
    assert {("run",), ("status",), ("health",), ("update",), ("snapshot",), ("enroll",), ("config", "get")} <= commands
    # None (or left out): main() fills in $KAOCLOCK_CONFIG, so every command behaves the same.
    assert [p for p, a in options if a.default not in (None, argparse.SUPPRESS)] == []


def test_kaoclock_config_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "reader.toml"
    cfg.write_text(f'[device]\nid = "from-env"\nsite = "hq"\ndata_dir = "{tmp_path / "data"}"\n')
    other = tmp_path / "other.toml"
    other.write_text('[device]\nid = "from-option"\n')
    monkeypatch.setenv("KAOCLOCK_CONFIG", str(cfg))
    assert main(["config", "get", "device.id"]) == 0
    assert capsys.readouterr().out.strip() == '"from-env"'
    assert main(["config", "get", "device.id", "--config", str(other)]) == 0  # an explicit --config wins
    assert capsys.readouterr().out.strip() == '"from-option"'
    assert main(["keys", "init"]) == 0  # the key lands in the env config's data dir
    capsys.readouterr()
    assert (tmp_path / "data" / "keys").is_dir()
    main(["health", "--json", "--frames", "1", "--timeout", "1"])
    report = json.loads(capsys.readouterr().out)
    assert str(cfg) in json.dumps(next(c for c in report["checks"] if c["name"] == "config"))
    monkeypatch.setenv("KAOCLOCK_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["config", "get", "device.id"]) != 0
    assert "missing.toml" in capsys.readouterr().err
