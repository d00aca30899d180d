"""The converter: exact folding, bias correction, seeded augmentation, and a real float32 TFLite conversion.

The full int8 build (calibration over 900 samples, two quantisation rounds,
parity on 1,200 held-out faces) takes minutes, so it lives in
`kaoclock models build`; here the float32 conversion runs for real (TensorFlow
from the `models` extra) and must match the numpy reference tightly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware_py.convert import convert
from firmware_py.convert.build import record_toml
from firmware_py.convert.dlib_dnn import Fc
from firmware_py.convert.dlib_resnet import forward, load_face_resnet
from firmware_py.convert.facechips import package_photo_chips
from firmware_py.models.manifest import load_manifest
from firmware_py.vision.embedder import Embedder


@pytest.fixture(scope="module")
def net(models_dir: Path):  # type: ignore[no-untyped-def]
    return load_face_resnet(load_manifest().require("dlib_resnet_v1", models_dir))


@pytest.fixture(scope="module")
def chips(models_dir: Path) -> np.ndarray:
    got, _ = package_photo_chips(load_manifest().require("dlib_shape_predictor_5", models_dir))
    return np.stack(list(got.values()))


def test_folding_is_exact(net, chips: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    ops = convert.fold(net)
    assert sum(isinstance(o, convert.FoldedConv) for o in ops) == 29
    np.testing.assert_allclose(convert.run_folded(ops, chips), forward(net, chips), atol=2e-5, rtol=0)


def test_tflite_weight_rounding_matches_scheme() -> None:
    w = np.array([[0.5, -1.0], [0.25, 0.004], [-0.127, 0.002]], np.float32)  # (in, out); out_axis=1
    q = convert.tflite_weight_rounding(w, 1)
    scale = np.array([0.5 / 127, 1.0 / 127])
    np.testing.assert_allclose(q, np.round(w / scale) * scale, atol=1e-7)
    assert q[0, 0] == pytest.approx(0.5) and q[0, 1] == pytest.approx(-1.0)


def test_bias_correction_cancels_mean_rounding_error(net, chips: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    ops = convert.fold(net)
    fixed, ref = convert.bias_correct(ops, chips)
    np.testing.assert_allclose(ref, forward(net, chips), atol=2e-5)

    def rounded(o: list) -> list:  # the weights as int8 will hold them
        out = []
        for op in o:
            if isinstance(op, convert.FoldedConv):
                op = convert.FoldedConv(convert.tflite_weight_rounding(op.kernel, 3), op.bias, op.stride, op.padding)
            elif isinstance(op, Fc):
                op = Fc(convert.tflite_weight_rounding(op.weights, 1), op.bias)
            out.append(op)
        return out

    before = np.linalg.norm(convert.run_folded(rounded(ops), chips) - ref, axis=1).mean()
    after = np.linalg.norm(convert.run_folded(rounded(fixed), chips) - ref, axis=1).mean()
    assert after < 0.9 * before


def test_augmentation_is_seeded_and_keeps_shape(chips: np.ndarray) -> None:
    a = convert.calibration_samples(chips, 3, seed=7)
    b = convert.calibration_samples(chips, 3, seed=7)
    c = convert.calibration_samples(chips, 3, seed=8)
    assert a.shape == (8, 150, 150, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a[0], chips[0])  # originals are kept
    assert not np.array_equal(a[1], chips[0])


@pytest.mark.converter
def test_float32_tflite_equals_numpy_reference(net, chips: np.ndarray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = convert.convert_float32(convert.fold(net))
    path = tmp_path / "f32.tflite"
    path.write_bytes(model)
    emb = Embedder(path, "float32")
    np.testing.assert_allclose(emb.embed(chips), forward(net, chips), atol=2e-6, rtol=0)


def test_record_toml_round_trips() -> None:
    import tomllib

    entry = {"role": "runtime", "sha256": "ab" * 32, "n": 3, "x": 0.5, "ok": True, "build": {"seed": 1, "note": 'quote " inside'}}
    back = tomllib.loads(record_toml("m", entry))["models"]["m"]
    assert back == entry


def test_build_refuses_bad_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from firmware_py.cli.main import main

    assert main(["models", "build", "--data", str(tmp_path / "none")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["models", "build", "--data", str(tmp_path), "--check"]) == 2
    assert "holds no lfw-dev" in capsys.readouterr().err
