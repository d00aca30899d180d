"""The committed int8 embedder: its manifest entry, its loader, and its parity with the reference on real faces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import firmware_py.models.manifest as manifest_mod
from firmware_py.cli.main import main
from firmware_py.convert.dlib_resnet import ReferenceEmbedder
from firmware_py.convert.facechips import package_photo_chips
from firmware_py.convert.parity import compare, embedder_parity
from firmware_py.models.manifest import ModelError, load_manifest, sha256_file
from firmware_py.paths import MODELS_TREE
from firmware_py.vision.embedder import EMBEDDER_MODEL, Embedder, load_embedder

pytest.importorskip("dlib", reason="dlib-bin is in the dev extra: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def reference(models_dir: Path) -> ReferenceEmbedder:
    return ReferenceEmbedder(load_manifest().require("dlib_resnet_v1", models_dir))


@pytest.fixture(scope="module")
def chips(models_dir: Path) -> np.ndarray:
    got, desc = package_photo_chips(load_manifest().require("dlib_shape_predictor_5", models_dir))
    assert set(got) == {"grace_hopper", "astronaut"}, desc
    return np.stack(list(got.values()))


def test_manifest_entry_matches_committed_file() -> None:
    entry = load_manifest().entry(EMBEDDER_MODEL)
    path = MODELS_TREE / entry.file
    assert entry.role == "runtime" and entry.location == "tree" and path.is_file()
    assert entry.sha256 == sha256_file(path)
    assert entry.version.endswith(entry.sha256[:12])
    assert "CC0" in entry.licence
    build, parity = entry.extra["build"], entry.extra["parity"]
    assert build["source_sha256"] == load_manifest().entry("dlib_resnet_v1").sha256
    assert build["calibration_files"] >= 100 and len(build["calibration_files_sha256"]) == 64 and build["tensorflow"]
    assert parity["lfw"]["n"] >= 1000 and parity["lfw"]["cosine_min"] >= 0.998 and parity["lfw"]["cosine_mean"] >= 0.9995


def test_load_embedder_verifies_and_tags_version(models_dir: Path) -> None:
    emb = load_embedder(models_dir, threads=1)
    entry = load_manifest().entry(EMBEDDER_MODEL)
    assert emb.version == entry.version and emb.path == MODELS_TREE / entry.file


def test_int8_parity_on_real_faces(models_dir: Path, chips: np.ndarray, reference: ReferenceEmbedder) -> None:
    emb = load_embedder(models_dir, threads=1)
    got = compare(emb.embed(chips), reference.embed(chips))
    assert got["n"] == 2 and got["cosine_min"] >= 0.999 and got["euclid_max"] < 0.06
    # one chip or a batch: the same descriptors
    np.testing.assert_array_equal(emb.embed(chips[0]), emb.embed(chips)[0])


def test_different_people_stay_apart_same_person_stays_close(models_dir: Path, chips: np.ndarray) -> None:
    emb = load_embedder(models_dir, threads=1)
    y = emb.embed(chips)
    mirrored = emb.embed(np.ascontiguousarray(chips[:, :, ::-1]))
    assert np.linalg.norm(y[0] - y[1]) > 0.6  # Grace Hopper is not Eileen Collins
    assert np.linalg.norm(y - mirrored, axis=1).max() < 0.6  # a mirrored face is the same person


def test_tampered_embedder_is_refused_by_name(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "models"
    shutil.copytree(MODELS_TREE, tree)
    entry = load_manifest().entry(EMBEDDER_MODEL)
    target = tree / entry.file
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    monkeypatch.setattr(manifest_mod, "MODELS_TREE", tree)
    with pytest.raises(ModelError) as err:
        load_embedder(models_dir)
    msg = str(err.value)
    assert EMBEDDER_MODEL in msg and str(target) in msg and entry.sha256 in msg and sha256_file(target) in msg


def test_missing_embedder_says_how_to_get_it(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "models"
    shutil.copytree(MODELS_TREE, tree)
    (tree / load_manifest().entry(EMBEDDER_MODEL).file).unlink()
    monkeypatch.setattr(manifest_mod, "MODELS_TREE", tree)
    with pytest.raises(ModelError, match="kaoclock models build"):
        load_embedder(models_dir)


def test_embedder_refuses_wrong_input(models_dir: Path) -> None:
    emb = load_embedder(models_dir)
    with pytest.raises(ValueError, match="uint8 chips"):
        emb.embed(np.zeros((1, 150, 150, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 chips"):
        emb.embed(np.zeros((1, 112, 112, 3), np.uint8))


def test_embedder_refuses_a_model_of_another_shape(models_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"face_detection_short_range.tflite: not a 150x150x3 -> 128 embedder \(inputs \[\[1, 128, 128, 3\]\]"):
        Embedder(load_manifest().require("blazeface_short_range", models_dir), "x")
    with pytest.raises(ModelError, match=r"face_landmark.tflite: not a 150x150x3 -> 128 embedder"):
        Embedder(load_manifest().require("facemesh", models_dir), "x")


def test_verify_json_reports_models_and_parity(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "verify", "--json", "--all", "--dir", str(models_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in out["models"]} >= {EMBEDDER_MODEL, "dlib_resnet_v1"} and all(m["ok"] for m in out["models"])
    p = out["embedder_parity"]
    assert p["n"] == 2 and p["cosine_min"] >= 0.999 and p["cosine_mean"] >= p["cosine_min"]
    assert p["euclid_max"] >= p["euclid_mean"] > 0
    assert "grace_hopper" in p["source"] and "astronaut" in p["source"] and p["ms_per_chip"] > 0


def test_verify_refuses_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "verify", "--json", "--data", str(tmp_path / "nope")]) == 2
    assert "--data" in capsys.readouterr().err


@pytest.mark.data
def test_int8_parity_on_held_out_lfw(models_dir: Path, data_root: Path, reference: ReferenceEmbedder) -> None:
    sp = load_manifest().require("dlib_shape_predictor_5", models_dir)
    p = embedder_parity(load_embedder(models_dir), reference, sp, data_root, min_lfw=150)
    lfw = p["subsets"]["lfw"]
    assert lfw["n"] >= 140 and lfw["pairs"] > 50
    assert lfw["cosine_min"] >= 0.998 and lfw["cosine_mean"] >= 0.9995
    assert lfw["decisions_flipped"] <= 0.01 * lfw["pairs"]


def test_fixed_crops_without_dlib_still_agree(models_dir: Path, reference: ReferenceEmbedder) -> None:
    """The no-dlib path of `models verify`: documented fixed crops of the same photos."""
    got, desc = package_photo_chips(None)
    assert "fixed crops" in desc and set(got) == {"grace_hopper", "astronaut"}
    arr = np.stack(list(got.values()))
    assert compare(load_embedder(models_dir).embed(arr), reference.embed(arr))["cosine_min"] >= 0.999


@pytest.mark.data
def test_lfw_split_keeps_calibration_people_apart(data_root: Path) -> None:
    from firmware_py.convert.lfw import calibration_pool, lfw_root, verification_pairs

    root = lfw_root(data_root)
    pairs, images = verification_pairs(root, 200)
    assert len(images) >= 200 and len(set(images)) == len(images)
    assert [p.same for p in pairs[:4]] == [True, False, True, False]
    person = lambda rel: rel.split("/")[1]  # noqa: E731
    calib_people = {person(r) for r in calibration_pool(root)}
    assert len(calib_people) > 1500 and not calib_people & {person(r) for r in images}


@pytest.mark.data
def test_lfw_centre_crops_without_dlib(models_dir: Path, data_root: Path, reference: ReferenceEmbedder) -> None:
    p = embedder_parity(load_embedder(models_dir), reference, None, data_root, min_lfw=40)
    assert "centre 150x150 crop" in p["source"] and "fixed crops" in p["source"]
    assert p["subsets"]["lfw"]["n"] >= 40 and p["cosine_min"] >= 0.998
