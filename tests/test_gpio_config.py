"""[gpio] and friends: bad pins, doubled pins, reserved pins, wrong back end, cross-section rules; the pin maps."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_py.cli.main import main
from firmware_py.config import Config, ConfigError, load, with_changes
from firmware_py.config.pinmap import ROLES, PinMapError, available_pinmaps, load_pinmap


def refused(changes: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ConfigError) as ei:
        with_changes(Config(), changes)
    return {p.key: f"{p.message} | {p.fix}" for p in ei.value.problems}


def test_default_pins_are_valid_on_both_boards() -> None:
    assert set(available_pinmaps()) >= {"rpi4", "rpi5"}
    for name in ("rpi4", "rpi5"):
        pm = load_pinmap(name)
        assert set(pm.roles) == set(ROLES)
        assert len(set(pm.roles.values())) == len(ROLES)
        assert not set(pm.roles.values()) & set(pm.reserved)
        cfg = with_changes(Config(), {"gpio.pinmap": name, "gpio.pin_factory": "lgpio"})
        assert cfg.gpio.pinmap == name
    # Both boards share the 40-pin header: the same physical pins.
    assert load_pinmap("rpi4").header == load_pinmap("rpi5").header


def test_pin_not_on_the_header() -> None:
    p = refused({"gpio.pins": {"relay": 28}})
    assert "not a GPIO on the Raspberry Pi 4 Model B header" in p["gpio.pins.relay"]
    assert "free ones:" in p["gpio.pins.relay"]


def test_pin_used_twice_names_both_keys() -> None:
    p = refused({"gpio.pins": {"buzzer": 17}})  # 17 is the relay's default
    assert "used twice (also by gpio.pins.relay)" in p["gpio.pins.buzzer"]
    assert "used twice (also by gpio.pins.buzzer)" in p["gpio.pins.relay"]


@pytest.mark.parametrize(("gpio", "what"), [(14, "UART0 TXD"), (15, "UART0 RXD"), (2, "I2C1 SDA"), (0, "HAT")])
def test_reserved_pins_are_refused_until_released(gpio: int, what: str) -> None:
    p = refused({"gpio.pins": {"tamper": gpio}})
    assert "reserved" in p["gpio.pins.tamper"] and what in p["gpio.pins.tamper"]
    assert f"add {gpio} to gpio.release" in p["gpio.pins.tamper"]
    cfg = with_changes(Config(), {"gpio.pins": {"tamper": gpio}, "gpio.release": [gpio]})
    assert cfg.gpio.pins["tamper"] == gpio


def test_unknown_role_and_other_mistakes() -> None:
    p = refused({"gpio.pins": {"relya": 12}, "gpio.not_fitted": ["tamperr"], "gpio.release": [17]})
    assert "did you mean 'relay'" in p["gpio.pins.relya"]
    assert "did you mean 'tamper'" in p["gpio.not_fitted[0]"]
    assert "not reserved" in p["gpio.release"]
    p = refused({"gpio.pins": {"relay": 12}, "gpio.not_fitted": ["relay"]})
    assert "also listed in gpio.not_fitted" in p["gpio.pins.relay"]
    assert "gpio.pins.relay" in refused({"gpio.pins": {"relay": -1}})


def test_back_end_must_drive_the_board() -> None:
    p = refused({"gpio.pinmap": "rpi5", "gpio.pin_factory": "rpigpio"})
    assert "cannot drive Raspberry Pi 5" in p["gpio.pin_factory"] and "'lgpio'" in p["gpio.pin_factory"]
    assert "does not exist" in refused({"gpio.pinmap": "rpi9"})["gpio.pinmap"]


def test_cross_section_rules() -> None:
    p = refused({"direction.mode": "buttons", "gpio.not_fitted": ["button_out"]})
    assert "button_out" in p["direction.mode"]
    p = refused({"console.device": "/dev/serial0", "gpio.release": [14, 15]})
    assert "GPIO14/15" in p["console.device"]
    p = refused({"card_reader.policy": "face+card"})
    assert "card_reader.device is empty" in p["card_reader.policy"]
    p = refused({"console.device": "/dev/ttyUSB0", "card_reader.device": "/dev/ttyUSB0"})
    assert "also the console's device" in p["card_reader.device"]
    assert "not a regular expression" in refused({"card_reader.card_pattern": "[0-9"})["card_reader.card_pattern"]
    assert "console.framing" in refused({"console.framing": "9X3"})


def test_a_bad_pin_in_a_config_file_stops_the_reader(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "k.toml"
    f.write_text('[gpio]\npinmap = "rpi5"\n\n[gpio.pins]\nrelay = 14\nbuzzer = 27\n')
    assert main(["config", "check", str(f)]) == 2
    out = capsys.readouterr().err  # a refusal is an error: stderr
    assert "gpio.pins.relay: GPIO14 is reserved" in out
    assert "gpio.pins.buzzer: GPIO27 is used twice (also by gpio.pins.led_red)" in out


def test_custom_pinmap_file_is_checked(tmp_path: Path) -> None:
    text = (Path(load_pinmap("rpi4").path)).read_text().replace("tamper = 16", "tamper = 14")
    bad = tmp_path / "myboard.toml"
    bad.write_text(text)
    with pytest.raises(PinMapError, match="tamper is on reserved GPIO14"):
        load_pinmap(str(bad))
    good = tmp_path / "ok.toml"
    good.write_text(text.replace("tamper = 14", "tamper = 26"))
    cfg = with_changes(Config(), {"gpio.pinmap": str(good)})
    assert load_pinmap(cfg.gpio.pinmap).roles["tamper"] == 26
    assert load(None).gpio.pin_factory == "mock"  # the demo never touches real pins


def test_readme_wiring_table_matches_the_pin_maps() -> None:
    from firmware_py.paths import HW_DIR

    rows = {}
    for line in (HW_DIR / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0] in ROLES:
            rows[cells[0]] = (int(cells[1]), int(cells[2]))
    for name in ("rpi4", "rpi5"):
        pm = load_pinmap(name)
        assert rows == {role: (g, pm.physical(g)) for role, g in pm.roles.items()}
