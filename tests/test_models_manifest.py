"""Model files are checked by sha256; a tampered or missing file is refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from firmware_py.cli.main import main
from firmware_py.models.fetch import fetch
from firmware_py.models.litert import load_interpreter
from firmware_py.models.manifest import ModelError, load_manifest, sha256_file


def test_manifest_lists_runtime_models_with_provenance() -> None:
    m = load_manifest()
    runtime = {e.name for e in m.select(["runtime"])}
    assert {"blazeface_short_range", "facemesh"} <= runtime
    for e in m.models.values():
        assert len(e.sha256) == 64 and e.licence and e.version
        if e.location == "fetched":
            assert e.artefact in m.artefacts and e.member


def test_fetched_models_verify(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "verify", "--json", "--dir", str(models_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"] and all(m["ok"] for m in out["models"])


def test_verify_after_a_plain_setup_checks_what_the_reader_runs(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bootstrap.sh` without --dev fetches the runtime models only: verify passes; --all names the converter's missing inputs."""
    fetch(load_manifest(), tmp_path, ["runtime"])
    runtime = {e.name for e in load_manifest().select(["runtime"])}
    assert main(["models", "verify", "--json", "--dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scope"] == "runtime" and {m["name"] for m in out["models"]} == runtime and all(m["ok"] for m in out["models"])
    assert "dlib_face_recognition_resnet_model_v1.dat" in out["embedder_parity"]["skipped"]

    assert main(["models", "verify", "--json", "--all", "--no-parity", "--dir", str(tmp_path)]) == 3
    out = json.loads(capsys.readouterr().out)
    bad = {m["name"]: m["problem"] for m in out["models"] if not m["ok"]}
    assert out["scope"] == "all" and set(bad) == {"dlib_resnet_v1", "dlib_shape_predictor_5"}
    assert all("missing" in p and "kaoclock models fetch" in p for p in bad.values())
    # A runtime model that is wrong fails the default mode too.
    (tmp_path / load_manifest().entry("facemesh").file).write_bytes(b"not a model")
    assert main(["models", "verify", "--json", "--dir", str(tmp_path)]) == 3
    assert [m["name"] for m in json.loads(capsys.readouterr().out)["models"] if not m["ok"]] == ["facemesh"]


def test_fetch_is_idempotent(models_dir: Path) -> None:
    report = fetch(load_manifest(), models_dir, ["runtime"])
    assert all(r["action"] == "present" for r in report)


def test_fetch_from_cache_into_new_dir(models_dir: Path, tmp_path: Path) -> None:
    report = fetch(load_manifest(), tmp_path, ["runtime"])
    assert {r["action"] for r in report} == {"fetched"}
    for r in report:
        assert sha256_file(Path(r["path"])) == load_manifest().entry(r["name"]).sha256


def _copy_models(models_dir: Path, dest: Path) -> None:
    for e in load_manifest().select(["runtime"]):
        if e.location == "fetched":
            shutil.copy(e.path(models_dir), dest / e.file)


def test_tampered_model_is_refused_by_name(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _copy_models(models_dir, tmp_path)
    target = tmp_path / "face_landmark.tflite"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    m = load_manifest()
    res = m.check_file("facemesh", tmp_path)
    assert not res.ok and res.expected in res.problem and res.found in res.problem and str(target) in res.problem
    with pytest.raises(ModelError, match="sha256 mismatch"):
        m.require("facemesh", tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ndir = "{tmp_path}"\n')
    assert main(["run", "--config", str(cfg)]) == 3
    err = capsys.readouterr().err
    assert "face_landmark.tflite" in err and m.entry("facemesh").sha256 in err


def test_missing_model_tells_how_to_fetch(tmp_path: Path) -> None:
    res = load_manifest().check_file("blazeface_short_range", tmp_path)
    assert not res.ok and "kaoclock models fetch" in res.problem


def test_corrupt_tflite_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"TFL3" + b"\x00" * 64)
    with pytest.raises(ModelError, match="cannot load model"):
        load_interpreter(bad)


def test_detector_loads_with_litert(models_dir: Path) -> None:
    interp = load_interpreter(load_manifest().require("blazeface_short_range", models_dir))
    (inp,) = interp.get_input_details()
    assert list(inp["shape"]) == [1, 128, 128, 3]
