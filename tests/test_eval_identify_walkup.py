"""`eval identify --templates N --walkup M`: the enrolment protocol and walk-ups scored by the reader's decision machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware_py.errors import UsageError
from firmware_py.eval.identify import build_protocol, walkup_accepts, walkup_groups
from firmware_py.gallery.matcher import MatchResult


def folders(tmp_path: Path, counts: dict[str, int]) -> dict[str, list[Path]]:
    return {name: [tmp_path / name / f"{name}_{i:04d}.jpg" for i in range(1, n + 1)] for name, n in sorted(counts.items())}


def test_templates_one_is_the_original_protocol_and_n_takes_the_first_n_images(tmp_path: Path) -> None:
    ids = folders(tmp_path, {"a": 6, "b": 5, "c": 1, "d": 7, "e": 2})
    one = build_protocol(ids)
    # N = 1: people with 2+ images alternate (a, d enrolled; b, e not), single-image c is a distractor.
    assert one.enrolled == ["a", "c", "d"] and one.template_ids is None
    assert one.templates == [ids["a"][0], ids["c"][0], ids["d"][0]] and one.template_owner == ["a", "c", "d"]
    assert len(one.mated) == 5 + 6 and set(one.nonmated) == set(ids["b"] + ids["e"])
    three = build_protocol(ids, templates=3)
    # N = 3: e (2 images) becomes an enrolled distractor with both images; a, b, d alternate (a, d enrolled).
    assert three.enrolled == ["a", "c", "d", "e"]
    assert three.templates == ids["a"][:3] + ids["c"] + ids["d"][:3] + ids["e"]
    assert three.template_owner == ["a"] * 3 + ["c"] + ["d"] * 3 + ["e"] * 2
    assert [p for p, _ in three.mated] == ids["a"][3:] + ids["d"][3:] and three.nonmated == ids["b"]
    with pytest.raises(UsageError):
        build_protocol(ids, templates=0)


def test_walkups_are_runs_of_m_images_per_identity_in_file_order(tmp_path: Path) -> None:
    names = ["x/x_3.jpg", "y/y_1.jpg", "x/x_1.jpg", "x/x_2.jpg", "y/y_2.jpg"]
    paths = [tmp_path / n for n in names]
    owners = ["x", "y", "x", "x", "y"]
    assert walkup_groups(paths, owners, 2) == [[2, 3], [1, 4]]  # x's third image is left over
    assert walkup_groups(paths, owners, 3) == [[2, 3, 0]]


def hit(pid: str, d: float) -> MatchResult:
    return MatchResult("match", pid, pid, d, "other", d + 0.2, float("inf"))


def test_walkup_accepts_follow_the_machines_k_of_n_rule_at_each_threshold() -> None:
    results = [hit("ann", 0.30), hit("ann", 0.35), hit("bob", 0.31), hit("ann", 0.33), hit("ann", 0.50)]
    results += [MatchResult("ambiguous", "ann", "ann", 0.2, "twin", 0.21, float("inf"))] * 3
    groups = [[0, 1, 2, 3, 4], [5, 6, 7]]
    # At 0.40 frames 0, 1, 3 vote ann (bob once, the 0.50 frame is unknown): 3 of 5 -> ann.
    assert walkup_accepts(results, groups, 0.40, k=3, n=5) == ["ann", None]  # three ambiguous frames reject
    # At 0.34 only frames 0 and 3 vote ann: no walk-up reaches 3 agreeing frames.
    assert walkup_accepts(results, groups, 0.34, k=3, n=5) == [None, None]
    # k = 2: the second ann vote decides at once.
    assert walkup_accepts(results, groups, 0.34, k=2, n=5) == ["ann", None]
    assert np.all([walkup_accepts(results, [[0, 2]], t, 2, 5) == [None] for t in (0.2, 0.4)])  # ann and bob never agree


def test_eval_identify_with_templates_and_walkups_on_real_photos(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from firmware_py.cli.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # described here, not read from a shared cache
    bbt = data_root / "small" / "faceapi_bbt" / "examples" / "images"
    assert main(["eval", "identify", "--root", str(bbt), "--templates", "2", "--walkup", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 8 people x 5 crops: 4 enrolled from 2 crops each (3 mated probes each), 4 strangers (5 probes each).
    assert (out["gallery"], out["templates"], out["mated"], out["nonmated"]) == (4, 8, 12, 20)
    w = out["walkup"]
    assert (w["mated_walkups"], w["nonmated_walkups"], w["k"], w["n"]) == (4, 4, 3, 5)
    assert w["reader_threshold"]["value"] == round(out["reader_threshold"]["value"], 4)
    assert all(0.0 <= w[k][r] <= 1.0 for k in ("default_threshold", "reader_threshold") for r in ("fnir", "fpir"))
    assert main(["eval", "identify", "--root", str(bbt), "--walkup", "2", "--json"]) == 2  # fewer probes than k
    assert "decision.k" in capsys.readouterr().err


def test_fused_probes_are_each_walkups_running_mean() -> None:
    from firmware_py.eval.identify import fused_probes

    probes = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    out = fused_probes(probes, [[0, 2, 4], [1, 3]], n=2)
    assert out[0] == pytest.approx(probes[0]) and out[2] == pytest.approx((probes[0] + probes[2]) / 2)
    assert out[4] == pytest.approx((probes[2] + probes[4]) / 2)  # only the last n = 2 frames
    assert out[3] == pytest.approx((probes[1] + probes[3]) / 2)
    assert out[5] == pytest.approx(probes[5]) and out[6] == pytest.approx(probes[6])  # in no walk-up: unchanged


def test_eval_identify_fusion_mean_on_real_photos(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from firmware_py.cli.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bbt = data_root / "small" / "faceapi_bbt" / "examples" / "images"
    runs = {}
    for fusion in ("vote", "mean"):
        assert main(["eval", "identify", "--root", str(bbt), "--templates", "2", "--walkup", "3", "--fusion", fusion, "--json"]) == 0
        runs[fusion] = json.loads(capsys.readouterr().out)
    vote, mean = runs["vote"], runs["mean"]
    assert vote["walkup"]["fusion"] == "vote" and mean["walkup"]["fusion"] == "mean"
    # Per-probe figures do not depend on the fusion; the walk-ups are the same walk-ups.
    assert vote["reader_threshold"] == mean["reader_threshold"] and vote["fnir_at_fpir"] == mean["fnir_at_fpir"]
    assert (vote["walkup"]["mated_walkups"], vote["walkup"]["nonmated_walkups"]) == (
        mean["walkup"]["mated_walkups"],
        mean["walkup"]["nonmated_walkups"],
    )
