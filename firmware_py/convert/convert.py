"""dlib's face ResNet -> TFLite float32 and full-integer int8 (the converter's core).

The only module that imports TensorFlow (lazily, extra ``models``); running
the result needs LiteRT alone.

The graph is written with plain TF ops from the parsed network
(:mod:`firmware_py.convert.dlib_resnet`), after two exact rewrites:

* every ``affine`` (frozen batch norm) is folded into the conv before it:
  ``W' = W * gamma``, ``b' = b * gamma + beta``;
* the input normalisation ``(pixel - avg) / 256`` is folded into the first
  conv (which has no padding, so the fold is exact): the model takes raw RGB
  pixel values 0..255.

Model contract (what :class:`~firmware_py.vision.embedder.Embedder` feeds):
input ``chip`` [1,150,150,3] RGB pixels (float32 0..255 for the float model;
uint8 with scale 1.0 and zero point 0 for the int8 model, so a chip's bytes go
in unchanged), output [1,128] float32 descriptor at dlib's scale.

Int8 is post-training full-integer quantisation: every op int8, conv and fc
weights per output channel (TFLite's scheme: symmetric, ``max|w| / 127``).
Three measured refinements over the converter's defaults:

1. *bias correction* (Nagel et al., "Data-Free Quantization", 2019, the
   empirical variant): rounding the weights shifts each output channel's mean
   by ``dW . E[input patch]``; that shift is computed on the calibration chips
   and subtracted from the bias (the fc gains a bias for it);
2. activation ranges are the min/max over the calibration samples of each
   tensor, collected by running the float model in LiteRT, and the input range
   is pinned to exactly [0, 255];
3. *output correction*: the int8 model's mean descriptor error on the
   calibration chips is subtracted from the fc bias, and the model is
   quantised again.

Floating-point values that feed the quantiser (bias corrections, ranges) are
rounded to a coarse grid so that last-bit differences between BLAS builds do
not change the bytes of the result.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from firmware_py.convert.dlib_dnn import AddPrev, Affine, Conv, Fc, InputRGB, Network, Pool, Relu, Skip, Tag
from firmware_py.convert.dlib_resnet import add_zero_extended
from firmware_py.models.manifest import ModelError

log = logging.getLogger(__name__)

INPUT_NAME = "chip"
Progress = Callable[[str], None]

# -- folded graph description (numpy only, testable without TF) ---------------


@dataclass(frozen=True)
class FoldedConv:
    """A conv with its affine (and, for the first one, the input normalisation) folded in."""

    kernel: np.ndarray  # HWIO, as tf.nn.conv2d wants
    bias: np.ndarray
    stride: int
    padding: int


FoldedOp = FoldedConv | Relu | Pool | Tag | Skip | AddPrev | Fc


def fold(net: Network) -> list[FoldedOp]:
    """The network as TF-ready ops: affine folded into convs, input normalisation into the first conv."""
    ops: list[FoldedOp] = []
    pending_input: InputRGB | None = None
    layers = net.layers
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, InputRGB):
            pending_input = layer
        elif isinstance(layer, Conv):
            w = layer.weights.astype(np.float64)  # (O, I, kh, kw)
            b = layer.bias.astype(np.float64)
            if pending_input is not None:
                if layer.padding != (0, 0):
                    raise ModelError("cannot fold the input normalisation into a padded first conv")
                avg = np.asarray(pending_input.avg, np.float64)
                b = b - np.einsum("oihw,i->o", w, avg) / 256.0
                w = w / 256.0
                pending_input = None
            if i + 1 < len(layers) and isinstance(layers[i + 1], Affine):
                aff = layers[i + 1]
                assert isinstance(aff, Affine)
                g = aff.gamma.astype(np.float64)
                w = w * g[:, None, None, None]
                b = b * g + aff.beta.astype(np.float64)
                i += 1
            if layer.stride[0] != layer.stride[1] or layer.padding[0] != layer.padding[1]:
                raise ModelError("only square strides and paddings are supported")
            ops.append(FoldedConv(w.transpose(2, 3, 1, 0).astype(np.float32), b.astype(np.float32), layer.stride[0], layer.padding[0]))
        elif isinstance(layer, Affine):
            raise ModelError("an affine layer that does not follow a conv cannot be folded")
        else:
            ops.append(layer)
        i += 1
    return ops


def run_folded(ops: list[FoldedOp], chips: np.ndarray, means: dict[int, list[np.ndarray]] | None = None) -> np.ndarray:
    """numpy forward over folded ops (uint8 chips NHWC -> descriptors).

    With ``means``, records for every conv / fc the batch mean of its input
    patches (conv: (kh, kw, C); fc: (C,)), for bias correction.
    """
    x = chips.astype(np.float32)
    tags: dict[int, np.ndarray] = {}
    for n, op in enumerate(ops):
        if isinstance(op, FoldedConv):
            p = op.padding
            if p:
                x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
            k = op.kernel.shape[0]
            win = sliding_window_view(x, (k, k), axis=(1, 2))[:, :: op.stride, :: op.stride]  # (N, oh, ow, C, kh, kw)
            if means is not None:
                means.setdefault(n, []).append(win.mean(axis=(0, 1, 2)).transpose(1, 2, 0))
            x = np.tensordot(win, op.kernel, axes=([4, 5, 3], [0, 1, 2])) + op.bias
        elif isinstance(op, Relu):
            x = np.maximum(x, 0)
        elif isinstance(op, Pool):
            if op.size == (0, 0):
                x = x.mean(axis=(1, 2), keepdims=True) if op.kind == "avg" else x.max(axis=(1, 2), keepdims=True)
            else:
                win = sliding_window_view(x, op.size, axis=(1, 2))[:, :: op.stride[0], :: op.stride[1]]
                x = win.max(axis=(4, 5)) if op.kind == "max" else win.mean(axis=(4, 5))
        elif isinstance(op, Tag):
            tags[op.n] = x
        elif isinstance(op, Skip):
            x = tags[op.tag]
        elif isinstance(op, AddPrev):
            x = add_zero_extended(x, tags[op.tag])
        elif isinstance(op, Fc):
            flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
            if means is not None:
                means.setdefault(n, []).append(flat.mean(axis=0))
            x = flat @ op.weights
            if op.bias is not None:
                x = x + op.bias
    return np.asarray(x, np.float32)


def tflite_weight_rounding(w: np.ndarray, out_axis: int) -> np.ndarray:
    """The weights as TFLite's per-channel int8 quantiser will represent them (symmetric, max|w|/127)."""
    axes = tuple(a for a in range(w.ndim) if a != out_axis)
    scale = np.abs(w).max(axis=axes, keepdims=True) / 127.0
    scale = np.where(scale == 0, 1.0, scale)
    q = np.clip(np.sign(w) * np.floor(np.abs(w) / scale + 0.5), -127, 127)  # round half away from zero, like std::round
    return (q * scale).astype(np.float32)


def _grid(x: np.ndarray, step: float = 2.0**-20) -> np.ndarray:
    """Snap to a fixed grid: last-bit BLAS differences must not change the model's bytes."""
    return (np.round(np.asarray(x, np.float64) / step) * step).astype(np.float32)


def bias_correct(ops: list[FoldedOp], chips: np.ndarray, batch: int = 16) -> tuple[list[FoldedOp], np.ndarray]:
    """Subtract each conv/fc's expected weight-rounding error from its bias.

    Returns the corrected ops and the float descriptors of ``chips`` (before correction).
    """
    means: dict[int, list[np.ndarray]] = {}
    outs = [run_folded(ops, chips[i : i + batch], means) for i in range(0, len(chips), batch)]
    new = list(ops)
    for n, parts in means.items():
        m = np.mean(parts, axis=0, dtype=np.float64)
        op = ops[n]
        if isinstance(op, FoldedConv):
            dk = tflite_weight_rounding(op.kernel, 3).astype(np.float64) - op.kernel
            corr = np.einsum("hwco,hwc->o", dk, m)
            new[n] = dataclasses.replace(op, bias=_grid(op.bias - corr))
        elif isinstance(op, Fc):
            dw = tflite_weight_rounding(op.weights, 1).astype(np.float64) - op.weights
            bias = op.bias if op.bias is not None else np.zeros(op.weights.shape[1], np.float32)
            new[n] = Fc(op.weights, _grid(bias - m @ dw))
    return new, np.concatenate(outs)


def with_fc_bias_shift(ops: list[FoldedOp], shift: np.ndarray) -> list[FoldedOp]:
    """``ops`` with ``shift`` subtracted from the final fc's bias."""
    new = list(ops)
    n = max(i for i, op in enumerate(ops) if isinstance(op, Fc))
    fc = ops[n]
    assert isinstance(fc, Fc)
    bias = fc.bias if fc.bias is not None else np.zeros(fc.weights.shape[1], np.float32)
    new[n] = Fc(fc.weights, _grid(bias - shift))
    return new


# -- TensorFlow -------------------------------------------------------------------


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        raise ModelError("`kaoclock models build` needs TensorFlow: pip install -e '.[models]' (running the built models never does)") from None
    return tf


def tf_version() -> str:
    return str(_tf().__version__)


def make_tf_function(ops: list[FoldedOp], size: int = 150) -> Any:
    """A ``tf.function`` [1,size,size,3] float32 pixels -> [1,128] descriptor."""
    tf = _tf()

    def run(chip: Any) -> Any:
        x = chip
        tags: dict[int, Any] = {}
        for op in ops:
            if isinstance(op, FoldedConv):
                k = op.kernel.shape[0]
                if op.padding == 0:
                    pad: Any = "VALID"
                elif op.stride == 1 and op.padding == k // 2 and k % 2 == 1:
                    pad = "SAME"
                else:
                    pad = [[0, 0], [op.padding, op.padding], [op.padding, op.padding], [0, 0]]
                x = tf.nn.bias_add(tf.nn.conv2d(x, tf.constant(op.kernel), op.stride, pad), tf.constant(op.bias))
            elif isinstance(op, Relu):
                x = tf.nn.relu(x)
            elif isinstance(op, Pool):
                if op.size == (0, 0):
                    x = tf.reduce_mean(x, axis=[1, 2], keepdims=True) if op.kind == "avg" else tf.reduce_max(x, axis=[1, 2], keepdims=True)
                else:
                    fn = tf.nn.max_pool2d if op.kind == "max" else tf.nn.avg_pool2d
                    x = fn(x, list(op.size), list(op.stride), "VALID")
            elif isinstance(op, Tag):
                tags[op.n] = x
            elif isinstance(op, Skip):
                x = tags[op.tag]
            elif isinstance(op, AddPrev):
                x = _add_zero_extended(tf, x, tags[op.tag])
            elif isinstance(op, Fc):
                x = tf.reshape(x, [1, -1])  # after the global mean: (1, C), dlib's order
                x = tf.matmul(x, tf.constant(op.weights))
                if op.bias is not None:
                    x = x + tf.constant(op.bias)
        return x

    return tf.function(run, autograph=False, input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name=INPUT_NAME)])


def _add_zero_extended(tf: Any, a: Any, b: Any) -> Any:
    """dlib's add_prev: shapes differ -> the larger shape, both zero-extended bottom/right."""
    sa, sb = a.shape.as_list(), b.shape.as_list()
    if sa == sb:
        return a + b
    big = [max(p, q) for p, q in zip(sa, sb, strict=True)]

    def ext(t: Any, s: list[int]) -> Any:
        if s == big:
            return t
        return tf.pad(t, [[0, big[d] - s[d]] for d in range(4)])

    return ext(a, sa) + ext(b, sb)


def _converter(ops: list[FoldedOp]) -> Any:
    tf = _tf()
    return tf.lite.TFLiteConverter.from_concrete_functions([make_tf_function(ops).get_concrete_function()], None)


def convert_float32(ops: list[FoldedOp]) -> bytes:
    """The float32 TFLite model (no quantisation)."""
    return bytes(_converter(ops).convert())


@dataclass(frozen=True)
class Calibrated:
    """A float TFLite model carrying the converter's calibration slots, and the tensors that have them."""

    model: bytes
    tensors: list[int]
    names: list[str]


def calibration_slots(ops: list[FoldedOp], probe: np.ndarray) -> Calibrated:
    """Let the converter lay out the calibration tensors (on a few probe chips; their ranges are replaced)."""
    tf = _tf()
    from tensorflow.lite.tools import flatbuffer_utils

    conv = _converter(ops)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([c[None].astype(np.float32)] for c in probe)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv._experimental_calibrate_only = True  # the path TF's own QuantizationDebugger takes
    model = bytes(conv.convert())
    sg = flatbuffer_utils.convert_bytearray_to_object(model).subgraphs[0]
    idx = [i for i, t in enumerate(sg.tensors) if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min)]
    return Calibrated(model, idx, [sg.tensors[i].name.decode() for i in idx])


def activation_ranges(cal: Calibrated, samples: np.ndarray, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of every calibrated tensor over ``samples`` (the float model run in LiteRT, one thread)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_content=cal.model,
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    lo = np.full(len(cal.tensors), np.inf)
    hi = np.full(len(cal.tensors), -np.inf)
    for s, chip in enumerate(samples):
        it.set_tensor(inp, chip[None].astype(np.float32))
        it.invoke()
        for j, t in enumerate(cal.tensors):
            a = it.get_tensor(t)
            lo[j] = min(lo[j], float(a.min()))
            hi[j] = max(hi[j], float(a.max()))
        if progress and (s + 1) % 200 == 0:
            progress(f"activation ranges: {s + 1}/{len(samples)} samples")
    return lo, hi


def _round_out(v: float, up: bool) -> float:
    """``v`` rounded outwards to 6 significant digits (a range never shrinks)."""
    if v == 0 or not math.isfinite(v):
        return float(v)
    step = 10.0 ** (math.floor(math.log10(abs(v))) - 5)
    return (math.ceil(v / step) if up else math.floor(v / step)) * step


def quantize_int8(cal: Calibrated, lo: np.ndarray, hi: np.ndarray) -> bytes:
    """Full-integer int8 from the calibrated float model with the given ranges (input pinned to [0, 255])."""
    tf = _tf()
    from tensorflow.lite.python.convert import mlir_quantize
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(cal.model)
    sg = model.subgraphs[0]
    for j, t in enumerate(cal.tensors):
        q = sg.tensors[t].quantization
        q.min = [_round_out(float(min(lo[j], 0.0)), up=False)]
        q.max = [_round_out(float(max(hi[j], 0.0)), up=True)]
    q = sg.tensors[sg.inputs[0]].quantization
    q.min, q.max = [0.0], [255.0]
    edited = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return bytes(mlir_quantize(edited, False, input_data_type=tf.uint8, output_data_type=tf.float32))


# -- calibration data ------------------------------------------------------------

AUGMENTATION = (
    "each calibration chip, then K seeded variants of it: mirror with p=0.5, contrast U(0.7,1.3) about 128, "
    "brightness U(-30,30), shift U{-4..4} px in x and y (edge padding); numpy default_rng(seed)"
)


def augment(chip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One seeded variant of a chip: mirror, brightness/contrast, a shift of up to 4 px."""
    x = chip.astype(np.float32)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    contrast = rng.uniform(0.7, 1.3)
    brightness = rng.uniform(-30, 30)
    x = (x - 128.0) * contrast + 128.0 + brightness
    dy, dx = (int(v) for v in rng.integers(-4, 5, size=2))
    if dy or dx:
        x = np.pad(x, ((4, 4), (4, 4), (0, 0)), mode="edge")[4 + dy : 4 + dy + chip.shape[0], 4 + dx : 4 + dx + chip.shape[1]]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def calibration_samples(chips: np.ndarray, variants: int, seed: int) -> np.ndarray:
    """Each chip followed by ``variants`` seeded augmentations of it."""
    rng = np.random.default_rng(seed)
    out = []
    for chip in chips:
        out.append(chip)
        out.extend(augment(chip, rng) for _ in range(variants))
    return np.stack(out)


# -- the whole int8 conversion -------------------------------------------------------


@dataclass(frozen=True)
class Int8Build:
    model: bytes
    calibration_samples: int
    calibrated_tensors: int
    output_shift_norm: float


def build_int8(net: Network, chips: np.ndarray, variants: int, seed: int, progress: Progress | None = None) -> Int8Build:
    """Full-integer int8 of ``net`` calibrated on real aligned ``chips`` (and their augmentations)."""
    say = progress or (lambda _m: None)
    from firmware_py.models.litert import load_interpreter_from_bytes

    say(f"bias correction on {len(chips)} chips")
    ops, ref = bias_correct(fold(net), chips)
    samples = calibration_samples(chips, variants, seed)
    model = b""
    shift_norm = 0.0
    for rnd in (1, 2):
        cal = calibration_slots(ops, chips[:4])
        say(f"round {rnd}: activation ranges of {len(cal.tensors)} tensors over {len(samples)} samples")
        lo, hi = activation_ranges(cal, samples, say)
        model = quantize_int8(cal, lo, hi)
        if rnd == 2:
            break
        interp = load_interpreter_from_bytes(model)
        y = _run_int8(interp, chips)
        shift = (y - ref).mean(axis=0)
        shift_norm = float(np.linalg.norm(shift))
        say(f"output correction: mean descriptor error {shift_norm:.4f} subtracted from the fc bias")
        ops = with_fc_bias_shift(ops, shift)
    return Int8Build(model, len(samples), len(cal.tensors), shift_norm)


def _run_int8(interp: Any, chips: np.ndarray) -> np.ndarray:
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    ys = []
    for chip in chips:
        interp.set_tensor(inp["index"], chip[None])
        interp.invoke()
        ys.append(interp.get_tensor(out["index"]).reshape(-1).copy())
    return np.stack(ys)
