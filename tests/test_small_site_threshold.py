"""A tiny gallery never falls back to a looser threshold than recognition.small_site_threshold (real models, real faces)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from firmware_py.cli.main import main
from firmware_py.config import load, with_changes
from firmware_py.decision.liveness import LivenessOff
from firmware_py.errors import UsageError
from firmware_py.eval.small_site import _data_arg, choose_threshold, parse_sizes
from firmware_py.gallery.calibration import SMALL_SITE_PERSONS
from firmware_py.gallery.store import GalleryMatrix, Person, Template, open_from_config
from firmware_py.pipeline.build import build_pipeline, estimate_threshold
from firmware_py.pipeline.build import choose_threshold as reader_threshold


@pytest.fixture(scope="module")
def taiwan(data_root: Path, models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Reader descriptors of 12 taiwan-dev people (East Asian studio photos; first 10 images each)."""
    import os

    from firmware_py.eval.stills import describer_from_config

    root = data_root / "taiwan-dev"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())[:12]
    paths = {n: sorted((root / n).glob("*.jpg"))[:10] for n in names}
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))  # descriptors computed here, not read from a shared cache
    try:
        describer = describer_from_config(load(None))
        d = describer.describe_paths([p for v in paths.values() for p in v], progress=False)
    finally:
        if old is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = old
    return {n: np.array([d.of(p) for p in v], np.float32) for n, v in paths.items()}


def enrol(cfg, people: dict[str, np.ndarray], version: str) -> None:  # type: ignore[no-untyped-def]
    with open_from_config(cfg) as store:
        for name, desc in people.items():
            store.upsert_person(Person(name, name, (cfg.device.site,), tuple(Template(q, version, f"{name}.jpg") for q in desc)))


# Sites whose own strangers (the other taiwan-dev people) include look-alikes scoring between the two thresholds.
@pytest.mark.parametrize("names", [("P02",), ("P02", "P05"), ("P02", "P05", "P06", "P09")])
def test_a_tiny_east_asian_site_gets_the_safe_default_never_the_loose_config_threshold(taiwan: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
    cfg = load(None)
    rc = cfg.recognition
    assert rc.small_site_threshold < rc.threshold  # the point: the safe default is stricter than the lfw-calibrated one
    site = {n: taiwan[n] for n in names}
    persons = len(site)
    pipeline, choice = build_pipeline(cfg, liveness=LivenessOff())  # empty gallery: nobody can match; the config's threshold
    assert choice.source == "config" and "empty" in choice.detail
    version = pipeline.embedder.version
    enrol(cfg, {n: d[:3] for n, d in site.items()}, version)
    pipeline, choice = build_pipeline(cfg, embedder=pipeline.embedder, analyzer=pipeline.analyzer, liveness=LivenessOff())
    # 1-2 people: no estimate at all; 4 people: the tolerance bound is <= 0 (unusable). Before, both fell back to 0.40.
    assert choice.source == "small-site" and choice.value == rc.small_site_threshold
    assert pipeline.threshold == pipeline.matcher.threshold == rc.small_site_threshold
    # A stranger of the same population that the old fallback would have let in is now "unknown".
    strangers = np.concatenate([d for n, d in taiwan.items() if n not in site])
    results = [pipeline.matcher.match(q) for q in strangers]
    scores = np.array([r.distance for r in results])
    let_in_before = (scores <= rc.threshold) & (scores > rc.small_site_threshold)
    assert let_in_before.any(), "no taiwan-dev stranger scores between the two thresholds any more: the test lost its point"
    assert all(results[i].verdict == "unknown" for i in np.flatnonzero(let_in_before))
    # Never looser than either: with a safe default above recognition.threshold, at most the threshold.
    odd = with_changes(cfg, {"recognition.small_site_threshold": rc.threshold + 0.1})
    with open_from_config(odd) as store:
        assert reader_threshold(odd, store, version).value <= rc.threshold
    # A calibration stored for another embedder is not used: the small-site rule applies, and the detail says why.
    import time

    from firmware_py.gallery.store import Calibration

    with open_from_config(cfg) as store:
        store.set_calibration(Calibration(0.45, 0.003, "old-embedder", persons, 9, "test", store.content_hash, time.time()))
        stale = reader_threshold(cfg, store, version)
        assert stale.value <= rc.small_site_threshold and "old-embedder: recalibrate" in stale.detail
        store.set_calibration(None)
    # threshold_source = "config" is the operator's explicit choice and stays as it is.
    pinned = with_changes(cfg, {"recognition.threshold_source": "config"})
    with open_from_config(pinned) as store:
        assert reader_threshold(pinned, store, version).value == rc.threshold


def test_below_ten_people_the_safe_default_rules_and_from_ten_the_estimate(taiwan: dict[str, np.ndarray]) -> None:
    cfg = load(None)
    rc = cfg.recognition

    def gallery(people: dict[str, np.ndarray]) -> GalleryMatrix:
        rows = np.concatenate(list(people.values()))
        ids = np.array([n for n, d in people.items() for _ in d], dtype=object)
        return GalleryMatrix(rows, ids, {}, "v", 0, "")

    # Sites of 3-9 real people: the tolerance bound swings from unusable to looser than the safe default
    # between sites; the threshold is the bound when stricter, else the safe default, never looser.
    from firmware_py.gallery.calibration import stranger_scores, threshold_for

    bounds = []
    for g in range(3, SMALL_SITE_PERSONS):
        site = gallery({n: d[:3] for n, d in list(taiwan.items())[:g]})
        bound = threshold_for(stranger_scores(site), cfg.gallery.target_fpir, g)[0]
        bounds.append(bound)
        est = estimate_threshold(cfg, site)
        if 0 < bound < rc.small_site_threshold:
            assert est.source == "gallery-estimate" and est.value == pytest.approx(bound, abs=1e-4)
        else:
            assert (est.source, est.value) == ("small-site", rc.small_site_threshold) and f"site of {g} people" in est.detail
    assert min(bounds) <= 0 and max(bounds) > 0, bounds  # both branches were exercised
    # A safe default above the config threshold gives at most the config threshold (the smaller of the two).
    loose = with_changes(cfg, {"recognition.small_site_threshold": 1.5})
    assert estimate_threshold(loose, site).value <= rc.threshold
    # Ten people or more: the gallery's own estimate is used even when looser than the safe default.
    assert len(taiwan) >= SMALL_SITE_PERSONS
    big = gallery({n: d[:3] for n, d in taiwan.items()})
    tight = with_changes(cfg, {"recognition.small_site_threshold": 0.01})
    est = estimate_threshold(tight, big)
    assert est.source == "gallery-estimate" and est.value > 0.01 and est.value <= rc.threshold


def test_the_rule_picks_the_loosest_threshold_that_keeps_the_target() -> None:
    scores = np.linspace(0.2, 0.6, 1001)  # 1001 strangers
    t = choose_threshold(scores, 0.01)  # at most 10 of them may pass
    assert (scores <= t).sum() <= 10 and (scores <= t + 0.005).sum() > 10
    assert round(t / 0.005, 6) == round(t / 0.005)


def test_eval_small_site_bad_input_is_refused_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("2-x", "0,3", ""):
        with pytest.raises(UsageError, match="--sizes"):
            parse_sizes(bad)
    assert parse_sizes("2-4") == [2, 3, 4] and parse_sizes("3,5") == [3, 5]
    for bad in ("root@3/2", "root,who=x", "@0/2"):
        with pytest.raises(argparse.ArgumentTypeError):
            _data_arg(bad)
    assert _data_arg("r@0/2,people=p.tsv") == (Path("r"), (0, 2), Path("p.tsv"))
    assert main(["eval", "small-site", "--data", str(tmp_path / "missing"), "--json"]) == 2
    assert "not a folder of identity folders" in capsys.readouterr().err
    assert main(["eval", "small-site", "--data", str(tmp_path), "--target", "0.7", "--json"]) == 2
    assert "--target" in capsys.readouterr().err


def test_eval_small_site_on_real_photos_keeps_its_target_where_it_chose(
    data_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bbt = data_root / "small" / "faceapi_bbt" / "examples" / "images"
    assert main(["eval", "small-site", "--data", str(bbt), "--sizes", "2,3", "--templates", "2", "--draws", "5", "--target", "0.05", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (study,) = out["studies"]
    assert study["people"] == 8 and set(study["sizes"]) == {"2", "3"}
    assert out["threshold"] == min(c["threshold_for_target"] for c in study["sizes"].values())
    for cell in study["sizes"].values():
        assert cell["at_threshold"]["fpir"] <= 0.05 and cell["stranger_probes"] > 0 and cell["mated_probes"] > 0
        assert cell["at_threshold"]["fnir"] >= cell["at_config_threshold"]["fnir"] or out["threshold"] >= out["config_threshold"]
    # The matcher agrees: scoring the chosen threshold as given reproduces the same rates.
    assert (
        main(
            [
                "eval",
                "small-site",
                "--data",
                str(bbt),
                "--sizes",
                "2,3",
                "--templates",
                "2",
                "--draws",
                "5",
                "--target",
                "0.05",
                "--threshold",
                str(out["threshold"]),
                "--json",
            ]
        )
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert again["rule"] == "given" and again["studies"][0]["sizes"] == study["sizes"]


def test_the_reader_rule_never_loosens_a_small_site_and_never_passes_the_ceiling() -> None:
    from firmware_py.gallery.calibration import reader_threshold as rule

    for persons in (1, 4, 9):
        assert rule(None, persons, 0.40, 0.325) == (0.325, True)  # no estimate: the safe default
        assert rule(-0.2, persons, 0.40, 0.325) == (0.325, True)  # unusable estimate: the same
        assert rule(0.38, persons, 0.40, 0.325) == (0.325, True)  # looser estimate: capped at the safe default
        assert rule(0.20, persons, 0.40, 0.325) == (0.20, False)  # stricter estimate: kept
        assert rule(0.38, persons, 0.30, 0.325) == (0.30, False)  # the config threshold is stricter still
    assert rule(0.38, 10, 0.40, 0.325) == (0.38, False)  # from ten people the estimate rules ...
    assert rule(0.45, 50, 0.40, 0.325) == (0.40, False)  # ... capped at the config threshold
    assert rule(float("nan"), 50, 0.40, 0.325) == (0.325, True)
