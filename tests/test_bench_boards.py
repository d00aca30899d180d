"""The boards' factors live in one place; `bench boards` and `bench walkup --board` use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_py.bench.boards import BOARDS, PER_FRAME, board
from firmware_py.cli.main import main
from firmware_py.errors import UsageError


def test_factor_table_is_consistent() -> None:
    assert set(BOARDS) == {"pi4", "pi5"}
    for b in BOARDS.values():
        assert 1 < b.low <= b.slowdown <= b.high and b.basis
    assert BOARDS["pi5"].slowdown < BOARDS["pi4"].slowdown  # an A76 at 2.4 GHz outruns an A72 at 1.5 GHz
    assert board("pi4").slowdown == 15.0  # the factor issue 18's walk-up figures were measured at
    with pytest.raises(UsageError, match="unknown board 'pi3'; known: pi4, pi5"):
        board("pi3")


def test_bench_boards_multiplies_measured_invokes(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "boards", "--repeats", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    here = out["here"]["models"]
    assert set(here) == set(PER_FRAME) and all(v["cpu_ms_p50"] > 0 for v in here.values())
    total = sum(v["cpu_ms_p50"] * v["invokes_per_frame"] for v in here.values())
    for key, b in out["boards"].items():
        assert b["slowdown"] == BOARDS[key].slowdown
        assert b["models_ms_per_frame"] == pytest.approx(total * b["slowdown"], abs=0.1)
        lo, hi = b["models_ms_per_frame_range"]
        assert lo <= b["models_ms_per_frame"] <= hi


def test_walkup_board_choice_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "walkup", "--source", "x.mp4", "--board", "pi3"]) == 2
    assert "invalid choice: 'pi3'" in capsys.readouterr().err
