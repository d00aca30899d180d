"""MiniFASNet -> TFLite (float32 and float16 weights): the converter's core for the learned liveness model.

Imports TensorFlow lazily (extra ``models``); running the result needs LiteRT
alone.  Two exact rewrites before the graph is written with plain TF ops:

* every batch norm is folded into the conv / linear layer before it
  (``W' = W * gamma / sqrt(var + eps)``, ``b' = beta - mean * gamma / sqrt(var + eps)``);
* the first conv's input channels are reversed, so the model takes **RGB**
  (the frames' order) where the original took BGR.

Model contract: input ``crop`` float32 ``[1,80,80,3]`` RGB 0..255 (not
normalised), output ``[1,3]`` softmax probabilities, class 1 = real.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware_py.convert.minifasnet import BN_EPS, INPUT_SIZE, SE, Block, Conv, Network, first_conv_bgr_to_rgb

INPUT_NAME = "crop"


@dataclass(frozen=True)
class FConv:
    kernel: np.ndarray  # HWIO (regular) or HWC1 (depthwise)
    bias: np.ndarray
    prelu: np.ndarray | None
    stride: int
    padding: int
    depthwise: bool


@dataclass(frozen=True)
class FSE:
    w1: np.ndarray  # (C, C/4)
    b1: np.ndarray
    w2: np.ndarray  # (C/4, C)
    b2: np.ndarray


@dataclass(frozen=True)
class FBlock:
    expand: FConv
    depthwise: FConv
    project: FConv
    se: FSE | None
    residual: bool


def _scale_shift(bn: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    g, b, m, v = bn
    s = g / np.sqrt(v + BN_EPS)
    return s, b - m * s


def _fold_conv(c: Conv) -> FConv:
    s, shift = _scale_shift(c.bn)
    w = c.weight * s[:, None, None, None]  # OIHW
    depthwise = c.groups > 1
    kernel = w.transpose(2, 3, 0, 1) if depthwise else w.transpose(2, 3, 1, 0)  # HW,C,1 / HW,I,O
    return FConv(
        kernel.astype(np.float32), shift.astype(np.float32), None if c.prelu is None else c.prelu.astype(np.float32), c.stride, c.padding, depthwise
    )


def _fold_se(se: SE) -> FSE:
    s1, b1 = _scale_shift(se.bn1)
    s2, b2 = _scale_shift(se.bn2)
    w1 = (se.fc1[:, :, 0, 0] * s1[:, None]).T
    w2 = (se.fc2[:, :, 0, 0] * s2[:, None]).T
    return FSE(w1.astype(np.float32), b1.astype(np.float32), w2.astype(np.float32), b2.astype(np.float32))


@dataclass(frozen=True)
class Folded:
    layers: tuple[FConv | FBlock, ...]
    fc_w: np.ndarray  # (512, 128), batch norm folded
    fc_b: np.ndarray
    prob_w: np.ndarray  # (128, 3)


def fold(net: Network) -> Folded:
    """The RGB-input network with every batch norm folded (float32, ready for TF)."""
    net = first_conv_bgr_to_rgb(net)
    layers: list[FConv | FBlock] = []
    for layer in net.layers:
        if isinstance(layer, Conv):
            layers.append(_fold_conv(layer))
        else:
            assert isinstance(layer, Block)
            se = _fold_se(layer.se) if layer.se is not None else None
            layers.append(FBlock(_fold_conv(layer.expand), _fold_conv(layer.depthwise), _fold_conv(layer.project), se, layer.residual))
    s, shift = _scale_shift(net.head.bn)
    fc_w = (net.head.linear * s[:, None]).T
    return Folded(tuple(layers), fc_w.astype(np.float32), shift.astype(np.float32), net.head.prob.T.astype(np.float32))


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        from firmware_py.models.manifest import ModelError

        raise ModelError("building the liveness model needs TensorFlow: pip install -e '.[models]'") from None
    return tf


def tf_version() -> str:
    return str(_tf().__version__)


def make_tf_function(f: Folded) -> Any:
    tf = _tf()

    def conv(x: Any, c: FConv) -> Any:
        if c.padding and c.stride > 1:  # PyTorch pads both sides; TF's SAME would pad only after on even sizes
            x = tf.pad(x, [[0, 0], [c.padding, c.padding], [c.padding, c.padding], [0, 0]])
            pad = "VALID"
        else:
            pad = "SAME" if c.padding else "VALID"
        strides = [1, c.stride, c.stride, 1]
        op = tf.nn.depthwise_conv2d if c.depthwise else tf.nn.conv2d
        y = op(x, tf.constant(c.kernel), strides, pad)
        y = tf.nn.bias_add(y, tf.constant(c.bias))
        if c.prelu is not None:
            y = tf.maximum(y, 0.0) + tf.constant(c.prelu) * tf.minimum(y, 0.0)
        return y

    @tf.function(input_signature=[tf.TensorSpec([1, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, name=INPUT_NAME)])
    def model(x: Any) -> Any:
        for layer in f.layers:
            if isinstance(layer, FConv):
                x = conv(x, layer)
                continue
            y = conv(conv(conv(x, layer.expand), layer.depthwise), layer.project)
            if layer.se is not None:
                z = tf.reduce_mean(y, axis=[1, 2])
                z = tf.nn.relu(tf.matmul(z, tf.constant(layer.se.w1)) + tf.constant(layer.se.b1))
                z = tf.sigmoid(tf.matmul(z, tf.constant(layer.se.w2)) + tf.constant(layer.se.b2))
                y = y * tf.reshape(z, [1, 1, 1, -1])
            x = x + y if layer.residual else y
        x = tf.reshape(x, [1, -1])
        x = tf.matmul(x, tf.constant(f.fc_w)) + tf.constant(f.fc_b)
        return tf.nn.softmax(tf.matmul(x, tf.constant(f.prob_w)))

    return model


def convert(f: Folded, float16: bool) -> bytes:
    """The TFLite flatbuffer: float32, or float16 weights (dequantised once at load, float32 arithmetic)."""
    tf = _tf()
    fn = make_tf_function(f)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    if float16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    return bytes(conv.convert())
