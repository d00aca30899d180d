"""`eval identify --split`, `eval tune` and `eval calibration` on real photos (faceapi_bbt: 8 people x 5 crops)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_py.cli.main import main
from firmware_py.config import load
from firmware_py.errors import UsageError
from firmware_py.eval.identify import build_protocol, identity_folders, parse_split


@pytest.fixture
def bbt(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # descriptors cached per test, not shared
    return data_root / "small" / "faceapi_bbt" / "examples" / "images"


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_split_keeps_every_nth_identity_in_sorted_order(bbt: Path) -> None:
    every = list(identity_folders(bbt, None))
    assert len(every) == 8 and every == sorted(every)
    halves = [list(identity_folders(bbt, None, parse_split(s))) for s in ("0/2", "1/2")]
    assert halves == [every[0::2], every[1::2]]
    for bad in ("2/2", "x", "1/0"):
        with pytest.raises(UsageError, match="--split"):
            parse_split(bad)


def test_eval_commands_on_real_photos(bbt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(bbt)
    ident = run_json(["eval", "identify", "--root", root, "--calibrate-fpir", "0.01", "--json"], capsys)
    proto = build_protocol(identity_folders(bbt, None))
    assert (ident["gallery"], ident["mated"], ident["nonmated"]) == (4, 16, 20) == (len(proto.enrolled), len(proto.mated), len(proto.nonmated))
    assert ident["rank1"] >= 0.75 and ident["align_source"] == "facemesh" and ident["split"] is None
    # The reader's threshold for this gallery of 4: its own estimate when stricter, else the safe small-site default.
    reader, cal = ident["reader_threshold"], ident["calibrated_threshold"]
    assert reader["source"] in ("gallery-estimate", "small-site") and reader["value"] <= load(None).recognition.small_site_threshold
    assert cal["capped"]["value"] == min(cal["value"], ident["default_threshold"]["value"])
    assert "tolerance bound" in cal["method"]

    tune = run_json(["eval", "tune", "--root", root, "--split", "0/1", "--sizes", "0", "--target-fpir", "0.05", "--json"], capsys)
    assert tune["gallery_sizes"] == [4] and len(tune["grid"]) == 25
    best = min(g["mean"] for g in tune["grid"])
    assert tune["best"]["mean_fnir_at_fpir_0.003"] == best and 0 < tune["default_threshold"]["value"] < 2

    study = run_json(["eval", "calibration", "--root", root, "--sizes", "3,9", "--draws", "4", "--json"], capsys)
    (three,) = study["sizes"]  # no site of 9 in a gallery of 4
    assert three["persons"] == 3 and three["draws"] == 4
    assert 0 <= three["share_over_target"] <= 1 and three["fpir_reached_p90"] >= three["fpir_reached_median"]
    assert three["capped_at_default"]["fpir_reached_median"] <= three["fpir_reached_median"]
    assert 0 <= three["capped_at_default"]["fpir_reached_mean"] <= three["fpir_reached_mean"] <= 1
