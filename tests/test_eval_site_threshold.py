"""`eval site-threshold`: the written rule that picks the estimator's parameters, and a run on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_py.cli.main import main
from firmware_py.eval.site_threshold import candidates, choose


def cell(wfpir: float, wfnir: float, t: float) -> dict[str, float]:
    return {"walkup_fpir_mean": wfpir, "walkup_fnir_median": wfnir, "threshold_median": t}


def test_rule_keeps_the_goal_at_every_size_of_every_study_then_takes_the_lowest_fnir() -> None:
    a = {
        "nonmated_walkups": 3000,
        "sizes": {"10": {"loose": cell(0.0005, 0.10, 0.40), "strict": cell(0.0, 0.30, 0.30), "tie": cell(0.0, 0.30, 0.28)}},
    }
    b = {"nonmated_walkups": 26, "sizes": {"4": {"loose": cell(0.002, 0.05, 0.36), "strict": cell(0.0, 0.30, 0.20), "tie": cell(0.0, 0.30, 0.19)}}}
    # "loose" misses the goal in study b, so it is out however low its FNIR; "tie" equals "strict"
    # on FNIR and is the stricter (lower thresholds), so it wins.
    got = choose([a, b], goal=0.001)
    assert got["label"] == "tie" and got["candidates_meeting_goal"] == 2 and got["mean_walkup_fnir_median"] == pytest.approx(0.30)
    assert choose([a], goal=0.001)["label"] == "loose"
    # Too few strangers' walk-ups to see a 0.1% rate (3 / 0.001 = 3,000 needed): nothing is chosen.
    few = choose([b], goal=0.001)
    assert few["label"] is None and "3000 non-mated walk-ups" in few["why"] and "largest: 26" in few["why"]
    assert choose([b], goal=0.2)["label"] == "loose"  # 26 walk-ups can vouch for 20%


def test_every_candidate_is_scored_on_real_photos(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bbt = data_root / "small" / "faceapi_bbt" / "examples" / "images"
    assert main(["eval", "site-threshold", "--data", f"{bbt}:3,4", "--templates", "2", "--walkup", "3", "--draws", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    study = out["studies"][0]
    assert study["enrolled"] == 4 and set(study["sizes"]) == {"3", "4"}
    for cells in study["sizes"].values():
        assert len(cells) == len(candidates())
        for c in cells.values():
            assert 0.0 <= c["walkup_fpir_mean"] <= 1.0 and 0.0 < c["threshold_median"] <= out["cap"]
    assert out["chosen"]["label"] is None and "non-mated walk-ups" in out["chosen"]["why"]  # 20 strangers' photos: too few
