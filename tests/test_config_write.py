"""Every write path validates what it writes: rendered, parsed back, validated, then atomically replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_py.config import ConfigError, load
from firmware_py.serial.config_file import save_changes


@pytest.mark.parametrize(
    "value",
    ["clip.mp4\n[mqtt]\nenabled = true", 'a"b\\c', "tab\there\rcr\x01\x7f", "日本語/動画.mp4"],
)
def test_strings_with_control_characters_round_trip(tmp_path: Path, value: str) -> None:
    path = tmp_path / "kaoclock.toml"
    path.write_text('[device]\nid = "gate-1"\n')
    cfg = save_changes(path, {"camera.source": value})
    assert cfg.camera.source == value
    again = load(path)  # the next start loads the file ...
    assert again.camera.source == value and again.mqtt.enabled is False  # ... and nothing was injected
    assert again.device.id == "gate-1"


def test_a_refused_change_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kaoclock.toml"
    path.write_text('[device]\nid = "gate-1"\n')
    before = path.read_bytes()
    with pytest.raises(ConfigError):
        save_changes(path, {"door.pulse_s": "long"})
    assert path.read_bytes() == before and not path.with_name("kaoclock.toml.bak").exists()
