"""The pure-Python reader of dlib's serialization: primitives, edge cases, and the real model file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from firmware_py.convert.dlib_dnn import Affine, Conv, Fc, InputRGB, Pool, read_network
from firmware_py.convert.dlib_format import DlibReader, encode_float, encode_int, encode_string, encode_tensor
from firmware_py.convert.dlib_resnet import face_resnet_spec, load_face_resnet
from firmware_py.models.manifest import ModelError, load_manifest


@pytest.fixture(scope="module")
def dat_path(models_dir: Path) -> Path:
    return load_manifest().require("dlib_resnet_v1", models_dir)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"\x01\x00", 0),
        (b"\x01\x02", 2),
        (b"\x81\x1c", -28),
        (b"\x02\x00\x01", 256),
        (b"\x82\xff\xff", -65535),
        (b"\x08" + b"\xff" * 7 + b"\x7f", 2**63 - 1),
    ],
)
def test_integer_encoding(raw: bytes, value: int) -> None:
    r = DlibReader(raw)
    assert r.int() == value and r.remaining == 0
    assert encode_int(value) == raw


def test_integer_refuses_bad_control_byte_by_offset() -> None:
    r = DlibReader(b"\x01\x05\x0a\x00")
    assert r.int() == 5
    with pytest.raises(ModelError, match=r"offset 2: expected an integer, found control byte 0x0a"):
        r.int()


def test_negative_value_refused_for_unsigned_field() -> None:
    with pytest.raises(ModelError, match="negative value"):
        DlibReader(b"\x81\x03").int("a tensor dimension", signed=False)


def test_float_encoding_from_the_real_file() -> None:
    # The margin of loss_metric_ as dlib wrote it: mantissa 0xa3d70a, exponent -28.
    assert DlibReader(b"\x03\x0a\xd7\xa3\x81\x1c").float() == pytest.approx(0.04, rel=1e-7)


@pytest.mark.parametrize("value", [0.0, 1.0, -2.5, 0.6, 1e-30, -123456.789, 117.001])
def test_float_round_trip(value: float) -> None:
    assert DlibReader(encode_float(value)).float() == value


def test_float_specials() -> None:
    assert DlibReader(encode_int(0) + encode_int(32000)).float() == math.inf
    assert DlibReader(encode_int(0) + encode_int(32001)).float() == -math.inf
    assert math.isnan(DlibReader(encode_int(0) + encode_int(32002)).float())


def test_bool_and_string() -> None:
    r = DlibReader(b"10" + encode_string("relu_"))
    assert r.bool() is True and r.bool() is False and r.string() == "relu_"
    with pytest.raises(ModelError, match=r"offset 0: expected a bool, found byte 0x02"):
        DlibReader(b"\x02").bool()


def test_tensor_round_trip_and_truncation() -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) - 7.5
    raw = encode_tensor(a)
    np.testing.assert_array_equal(DlibReader(raw).tensor(), a)
    with pytest.raises(ModelError, match=r"24 float32 values \(96 bytes\) for shape \(2, 3, 2, 2\).*end of file"):
        DlibReader(raw[:-1], "cut.dat").tensor()


def test_truncated_integer_names_offset_and_need() -> None:
    with pytest.raises(ModelError, match=r"x\.dat: at byte offset 1: expected an integer, found end of file \(0 bytes left, 2 needed\)"):
        DlibReader(b"\x02", "x.dat").int()


def test_real_model_parses_into_dlib_architecture(dat_path: Path) -> None:
    net = load_face_resnet(dat_path)
    assert net.input == InputRGB(pytest.approx((122.782, 117.001, 104.298), abs=1e-4), 150, 150)
    convs = [layer for layer in net.layers if isinstance(layer, Conv)]
    assert len(convs) == 29 and sum(isinstance(layer, Affine) for layer in net.layers) == 29
    assert convs[0].shape == (32, 3, 7, 7) and convs[0].stride == (2, 2) and convs[0].padding == (0, 0)
    # stage widths 32-64-128-256-256, down-sampling convs at stride 2 without padding
    assert [c.shape[0] for c in convs if c.stride == (2, 2)] == [32, 64, 128, 256, 256]
    assert all(c.padding == (0, 0) for c in convs if c.stride == (2, 2))
    pools = [layer for layer in net.layers if isinstance(layer, Pool)]
    assert [(p.kind, p.size) for p in pools] == [("max", (3, 3))] + [("avg", (2, 2))] * 4 + [("avg", (0, 0))]
    fc = net.layers[-1]
    assert isinstance(fc, Fc) and fc.weights.shape == (256, 128) and fc.bias is None
    assert net.loss is not None and net.loss.dist_thresh == pytest.approx(0.6)
    assert net.parameter_count() == 5_614_592


@pytest.mark.parametrize("keep", [0, 1, 16, 300, 1_000_000, -1])
def test_truncated_model_is_refused_with_offset(dat_path: Path, tmp_path: Path, keep: int) -> None:
    data = dat_path.read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: keep if keep >= 0 else len(data) - 1])
    with pytest.raises(ModelError, match=r"cut\.dat: at byte offset \d+: expected .*end of file"):
        load_face_resnet(cut)


def test_foreign_file_is_refused(models_dir: Path) -> None:
    # dlib's shape predictor is a dlib file too, but not this network.
    sp = load_manifest().require("dlib_shape_predictor_5", models_dir)
    with pytest.raises(ModelError, match=r"at byte offset 2: expected loss layer type: the string 'loss_metric_2' or 'loss_metric_' \(length\)"):
        load_face_resnet(sp)


def test_wrong_layer_type_names_layer_and_offset(dat_path: Path) -> None:
    data = dat_path.read_bytes()
    at = data.index(b"relu_")
    bad = data[:at] + b"relX_" + data[at + 5 :]
    with pytest.raises(ModelError, match=rf"at byte offset {at - 2}: expected layer \d+ \(relu\): layer type: the string 'relu_', found 'relX_'"):
        read_network(DlibReader(bad, "bad.dat"), face_resnet_spec())


def test_trailing_bytes_are_refused(dat_path: Path) -> None:
    with pytest.raises(ModelError, match="expected the end of the network, found 3 more bytes"):
        read_network(DlibReader(dat_path.read_bytes() + b"abc", "x.dat"), face_resnet_spec())
