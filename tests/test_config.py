"""Configuration: every refusal names the key and the fix; nothing half-applies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_py.cli.main import main
from firmware_py.config import Config, ConfigError, load, parse_value, validate, with_changes
from firmware_py.config.schema import example_toml
from firmware_py.paths import DEVICE_DIR


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "kaoclock.toml"
    p.write_text(text)
    return p


def problems(exc: ConfigError) -> dict[str, str]:
    return {p.key: f"{p.message} | {p.fix}" for p in exc.problems}


def test_default_config_is_valid() -> None:
    cfg = load(None)
    assert cfg.camera.backend == "replay"
    assert cfg.liveness.policy in ("off", "passive", "strict")


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load(write(tmp_path, "[camera]\nwidht = 800\n"))
    probs = problems(ei.value)
    assert "camera.widht" in probs
    assert "unknown key" in probs["camera.widht"]
    assert "camera.width" in probs["camera.widht"]


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load(write(tmp_path, "[camra]\nbackend = 'replay'\n"))
    assert "camra" in problems(ei.value)


def test_wrong_type_names_key_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load(write(tmp_path, '[camera]\nwidth = "640"\n'))
    msg = problems(ei.value)["camera.width"]
    assert "expected an integer" in msg and "without quotes" in msg


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load(write(tmp_path, "[camera]\nwidth = true\n"))
    assert "camera.width" in problems(ei.value)


def test_out_of_range_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load(write(tmp_path, "[camera]\nwidth = 10\n"))
    msg = problems(ei.value)["camera.width"]
    assert "below the minimum 64" in msg and ">= 64" in msg


def test_bad_choice_suggests_close_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load(write(tmp_path, '[liveness]\npolicy = "stric"\n'))
    assert "'strict'" in problems(ei.value)["liveness.policy"]


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load(write(tmp_path, '[camera]\nwidth = 1\nheight = "x"\nbogus = 2\n'))
    assert {"camera.width", "camera.height", "camera.bogus"} <= set(problems(ei.value))


def test_cross_field_check_timezone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load(write(tmp_path, '[device]\ntimezone = "Mars/Olympus"\n'))
    assert "device.timezone" in problems(ei.value)


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as ei:
        load(missing)
    assert str(missing) in str(ei.value) and "does not exist" in str(ei.value)


def test_directory_and_binary_and_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load(tmp_path)
    b = tmp_path / "bin.toml"
    b.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(b)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[camera\nwidth = 3\n"))


def test_config_check_cli_exit_status_and_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "[camera]\nwidth = 10\n")
    assert main(["config", "check", str(bad)]) == 2
    out = capsys.readouterr().err  # a refusal is an error: stderr
    assert "camera.width" in out and "fix:" in out
    good = tmp_path / "good.toml"
    good.write_text("[camera]\nwidth = 800\n")
    assert main(["config", "check", str(good)]) == 0


def test_run_refuses_bad_config_with_nonzero_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "[camera]\nbackend = 'usb'\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "camera.backend" in capsys.readouterr().err


def test_with_changes_validates_and_never_half_applies() -> None:
    cfg = Config()
    new = with_changes(cfg, {"camera.width": 800})
    assert new.camera.width == 800 and cfg.camera.width == 640
    with pytest.raises(ConfigError) as ei:
        with_changes(cfg, {"camera.width": 1024, "camera.height": -1})
    assert "camera.height" in problems(ei.value)
    assert cfg.camera.width == 640


def test_parse_value_reads_typed_text() -> None:
    assert parse_value("800", "k") == 800
    assert parse_value("true", "k") is True
    assert parse_value("passive", "k") == "passive"
    assert parse_value("[1, 2]", "k") == [1, 2]


def test_example_config_is_documented_and_valid(tmp_path: Path) -> None:
    text = example_toml(Config)
    p = write(tmp_path, text)
    assert load(p) == Config()
    committed = (DEVICE_DIR / "kaoclock.example.toml").read_text()
    # The committed example is the generator's output: it cannot drift from the schema.
    assert text.strip() in committed


def test_schema_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["camera"]["properties"]["width"]["minimum"] == 64


def test_validate_rejects_non_table_section() -> None:
    with pytest.raises(ConfigError) as ei:
        validate({"camera": 3})
    assert "camera" in problems(ei.value)
