"""The technician's commands: hw pins / test / patterns / diagram / safe, console set-passphrase, the wiring picture."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.cli.main import main
from firmware_py.config import Config, with_changes
from firmware_py.config.pinmap import ROLES, load_pinmap
from firmware_py.gpio.diagram import render
from firmware_py.paths import HW_DIR
from firmware_py.serial.passphrase import PassphraseStore


def test_hw_pins_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hw", "pins"]) == 0
    out = capsys.readouterr().out
    assert "Raspberry Pi 4 Model B" in out
    assert any(line.split()[:3] == ["relay", "17", "11"] for line in out.splitlines())
    assert "UART0 TXD" in out


def test_hw_test_relay_on_mock_pins_reports_the_pulse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text('[door]\npulse_s = 0.3\nrelay_active = "low"\n')
    assert main(["hw", "test", "relay", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "GPIO17 (pin 11), active low" in out and "relocked" in out
    history = out.split("pin history: ")[1]
    # Active low: the pin goes low for the pulse, then back high.
    assert history.startswith("low after") and "high after 0.3" in history


def test_hw_patterns_and_diagram(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hw", "patterns"]) == 0
    assert "| rejected_spoof | red |" in capsys.readouterr().out
    out = tmp_path / "w.png"
    assert main(["hw", "diagram", "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (1800, 1240)


def test_diagram_places_every_role_on_its_pin() -> None:
    cfg = with_changes(Config(), {"gpio.pins": {"relay": 12}, "gpio.not_fitted": ["tamper"]})
    _, placements = render(cfg)
    pm = load_pinmap("rpi4")
    got = {p.role: (p.gpio, p.physical) for p in placements}
    assert got["relay"] == (12, 32)
    assert "tamper" not in got
    for role, (gpio, phys) in got.items():
        assert pm.physical(gpio) == phys and role in ROLES
        assert next(p.side for p in placements if p.role == role) == ("left" if phys % 2 else "right")


def test_committed_wiring_picture_matches_the_default_map() -> None:
    committed = Image.open(HW_DIR / "wiring.png")
    fresh, _ = render(Config())
    assert committed.size == fresh.size
    # Same drawing (fonts may differ by a pixel between Pillow builds): compare a coarse thumbnail.
    a = np.asarray(committed.convert("L").resize((360, 248)), dtype=int)
    b = np.asarray(fresh.convert("L").resize((360, 248)), dtype=int)
    changed = float((np.abs(a - b) > 40).mean())
    assert changed < 0.003, f"hw/wiring.png is stale ({changed:.2%} differs): regenerate with `kaoclock hw diagram --out hw/wiring.png`"


def test_set_passphrase_from_stdin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'[device]\ndata_dir = "{tmp_path}"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("too short\n"))
    assert main(["console", "set-passphrase", "--config", str(cfg), "--stdin"]) == 2
    assert "at least 10" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough passphrase\n"))
    assert main(["console", "set-passphrase", "--config", str(cfg), "--stdin"]) == 0
    assert PassphraseStore(tmp_path).verify("a long enough passphrase")


def test_console_needs_a_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console"]) == 2
    assert "--device" in capsys.readouterr().err


def test_hw_safe_drives_relay_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hw", "safe"]) == 0
    assert "GPIO17 (pin 11) driven to locked" in capsys.readouterr().out


@pytest.mark.skipif(Path("/dev/gpiomem").exists(), reason="this machine has real GPIO: the test must not drive its pins")
def test_real_back_end_missing_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "k.toml"
    cfg.write_text('[gpio]\npin_factory = "native"\n')
    assert main(["hw", "test", "relay", "--config", str(cfg)]) == 3
    err = capsys.readouterr().err
    assert "gpio.pin_factory 'native' cannot start here" in err and "mock" in err
