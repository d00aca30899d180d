"""The command line behaves the same everywhere: global options after the command, --json, stderr, exit codes, suggestions."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from firmware_py import progress
from firmware_py.cli.main import main
from firmware_py.config import Config
from firmware_py.config.pinmap import load_pinmap, resolve_pins
from firmware_py.errors import EXIT_MEANINGS, ExitCode
from firmware_py.gpio.diagram import circuits
from firmware_py.paths import HW_DIR, TREE

FOUR_MISTAKES = '[device]\nid = "Bad Id"\ntimezone = "Mars/Olympus"\n\n[camera]\nwidht = 640\nfps = "ten"\n'


def test_config_check_reports_all_four_mistakes_in_one_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text(FOUR_MISTAKES)
    assert main(["config", "check", str(cfg)]) == ExitCode.USAGE
    out, err = capsys.readouterr()
    assert out == "" and "(4 problem(s))" in err
    assert main(["config", "check", str(cfg), "--json"]) == ExitCode.USAGE
    doc = json.loads(capsys.readouterr().out)
    # The time zone is a cross-key check of [device], which also has a field error (the id).
    assert [p["key"] for p in doc["problems"]] == ["device.id", "device.timezone", "camera.widht", "camera.fps"]
    assert doc["ok"] is False and "did you mean 'camera.width'" in doc["problems"][2]["fix"]


def test_config_get_suggests_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "get", "camera.widht"]) == ExitCode.USAGE
    assert "did you mean 'camera.width'" in capsys.readouterr().err
    assert main(["config", "get", "camera.width", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"key": "camera.width", "value": Config().camera.width}


def test_global_options_work_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text("[gpio.pins]\nrelay = 12\n")
    assert main(["hw", "pins", "-v", "--json", "--config", str(cfg)]) == 0
    after = json.loads(capsys.readouterr().out)
    assert main(["--json", "--config", str(cfg), "-v", "hw", "pins"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert after == before and next(r for r in after["roles"] if r["role"] == "relay")["gpio"] == 12
    # A command without JSON output refuses --json instead of ignoring it.
    assert main(["--json", "config", "example"]) == ExitCode.USAGE
    assert "has no JSON output" in capsys.readouterr().err


def test_unknown_command_suggests_and_enrol_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["statsu"]) == ExitCode.USAGE
    assert "did you mean 'status'" in capsys.readouterr().err
    assert main(["config", "chek", "x"]) == ExitCode.USAGE
    assert "did you mean 'check'" in capsys.readouterr().err
    assert main(["enrol", "--help"]) == 0
    assert "usage: kaoclock enroll" in capsys.readouterr().out


def test_exit_code_table_in_help_and_readme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    readme = (TREE / "README.md").read_text()
    for code, meaning in EXIT_MEANINGS.items():
        assert re.search(rf"^\s+{int(code)}  {re.escape(meaning)}$", out, re.M), code
        assert f"| {int(code)} | {meaning} |" in readme, f"README.md's exit-code table misses {int(code)}"
    assert len(set(EXIT_MEANINGS)) == len(EXIT_MEANINGS) == len(ExitCode)


def test_backend_devices_list_says_when_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backend", "devices", "list", "--home", str(tmp_path)]) == 0
    assert "no devices registered" in capsys.readouterr().out
    assert main(["backend", "devices", "list", "--home", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"devices": [], "problems": []}


def test_status_on_a_fresh_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAOCLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAOCLOCK_CONFIG", raising=False)
    assert main(["status", "-v"]) == 0
    out = capsys.readouterr().out
    assert "current None" not in out and "FileNotFoundError" not in out
    assert "no gallery at" in out


def test_progress_draws_on_a_terminal_only() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        with progress.Progress("photos", total=4, stream=stream, interval=0) as bar:
            for _ in range(4):
                bar.advance()
    assert pipe.getvalue() == ""
    assert "photos [" in tty.getvalue() and "4/4 100%" in tty.getvalue()
    progress.set_quiet(True)
    try:
        quiet = Tty()
        with progress.Progress("photos", total=2, stream=quiet, interval=0) as bar:
            bar.advance()
        assert quiet.getvalue() == ""
    finally:
        progress.set_quiet(False)
    assert progress.render_line("x", 1, 4, 3.0).endswith("0:09 left")


def test_wiring_picture_data_agrees_with_the_default_config() -> None:
    cfg = Config()
    pm = load_pinmap(cfg.gpio.pinmap)
    pins, _ = resolve_pins(pm, cfg.gpio.pins, cfg.gpio.not_fitted, cfg.gpio.release)
    drawn = {c.role: c for c in circuits(cfg)}
    assert {r: c.gpio for r, c in drawn.items()} == {r: pins[r] for r in ("relay", "buzzer", "led_green", "led_red", "led_amber")}
    relay = drawn["relay"]
    assert relay.level_on == cfg.door.relay_active
    assert relay.off_at_boot, "the default relay pin's boot pull would energise the relay before kaoclock starts"
    assert any("HIGH-level trigger" in p for p in relay.parts) and any("1N4007" in p for p in relay.parts)
    assert any("NO -> electric strike" in p for p in relay.parts) == (cfg.door.lock == "fail-secure")
    assert any("NPN" in p for p in drawn["buzzer"].parts) and all("330 ohm" in drawn[r].parts[0] for r in ("led_green", "led_red", "led_amber"))
    # The parts list recommends the module the default polarity needs.
    row = next(line for line in (HW_DIR / "README.md").read_text().splitlines() if line.startswith("| relay |"))
    assert ("HIGH-level trigger" in row) == (cfg.door.relay_active == "high")


def test_active_low_relay_on_a_pulled_down_pin_is_flagged() -> None:
    from firmware_py.config import with_changes

    low = {c.role: c for c in circuits(with_changes(Config(), {"door.relay_active": "low"}))}["relay"]
    assert low.level_on == "low" and not low.off_at_boot and "LOW-level" in low.parts[0]
    moved = {
        c.role: c for c in circuits(with_changes(Config(), {"door.relay_active": "low", "gpio.pins": {"relay": 5}, "gpio.not_fitted": ["button_in"]}))
    }
    assert moved["relay"].off_at_boot
