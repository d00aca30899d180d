"""Reading a dlib DNN (``dlib/dnn/core.h``, ``layers.h``, ``input.h``, ``loss.h``).

A dlib network file does not describe its own architecture: it is the
serialization of one C++ type, and the reader must know that type.  The type
is given here as a *spec*: the layers from the outermost (the loss) to the
innermost (the input layer), the way dlib's nested templates read.  How each
wrapper writes itself:

* ``add_loss_layer``: int version 1, the loss details, then the subnetwork;
* ``add_layer``: int version (1 or 2), the subnetwork, the layer details,
  three bools, then tensors ``x_grad``, ``cached_output`` (and ``params_grad``
  in version 2);
* ``add_layer`` directly on the input layer: int version (2 or 3), the input
  layer, the layer details, three bools, tensors ``x_grad``, ``cached_output``,
  ``grad_final`` (and an int sample-expansion factor in version 3);
* ``add_tag_layer`` / ``add_skip_layer``: int version 1 then the subnetwork,
  nothing else (the tag number lives only in the C++ type, i.e. the spec).

:func:`read_network` returns the layers in execution order (input first) with
their parameters as numpy arrays, after checking every hyper-parameter in the
file against the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware_py.convert.dlib_format import DlibReader

# -- the layers (parsed) ------------------------------------------------------


@dataclass(frozen=True)
class InputRGB:
    """``input_rgb_image_sized<NR, NC>``: ``(pixel - avg) / 256`` per channel (RGB)."""

    avg: tuple[float, float, float]
    nr: int
    nc: int


@dataclass(frozen=True)
class Conv:
    """``con_``: weights (out, in, kh, kw) as dlib stores them; cross-correlation like TF."""

    weights: np.ndarray = field(repr=False)
    bias: np.ndarray = field(repr=False)
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weights.shape)


@dataclass(frozen=True)
class Affine:
    """``affine_`` (batch norm frozen for inference): ``x * gamma + beta`` per channel."""

    gamma: np.ndarray = field(repr=False)
    beta: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Relu:
    pass


@dataclass(frozen=True)
class Pool:
    """``max_pool_`` / ``avg_pool_``; ``size == (0, 0)`` pools over everything."""

    kind: str  # "max" | "avg"
    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class AddPrev:
    """``add_prev<tag>``: adds the output of the nearest ``tag`` below."""

    tag: int


@dataclass(frozen=True)
class Tag:
    n: int


@dataclass(frozen=True)
class Skip:
    """``skip<tag>``: its output is the output of the nearest ``tag`` below."""

    tag: int


@dataclass(frozen=True)
class Fc:
    """``fc_``: weights (num_inputs, num_outputs) as dlib stores them; bias may be absent."""

    weights: np.ndarray = field(repr=False)
    bias: np.ndarray | None = field(repr=False)


@dataclass(frozen=True)
class LossMetric:
    margin: float
    dist_thresh: float


Layer = InputRGB | Conv | Affine | Relu | Pool | AddPrev | Tag | Skip | Fc


@dataclass(frozen=True)
class Network:
    """A parsed dlib network: layers in execution order, and its loss."""

    layers: list[Layer]
    loss: LossMetric | None
    source: str

    @property
    def input(self) -> InputRGB:
        first = self.layers[0]
        assert isinstance(first, InputRGB)
        return first

    def parameter_count(self) -> int:
        n = 0
        for layer in self.layers:
            if isinstance(layer, Conv):
                n += layer.weights.size + layer.bias.size
            elif isinstance(layer, Affine):
                n += layer.gamma.size + layer.beta.size
            elif isinstance(layer, Fc):
                n += layer.weights.size + (layer.bias.size if layer.bias is not None else 0)
        return n


# -- the spec: what the C++ type says ----------------------------------------


@dataclass(frozen=True)
class Spec:
    """One layer of the C++ type: its kind and its compile-time parameters."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}<{args}>" if args else self.kind


def default_padding(size: int, stride: int) -> int:
    """dlib's default padding of con_/max_pool_/avg_pool_: ``stride != 1 ? 0 : size/2``."""
    return 0 if stride != 1 else size // 2


# -- reading ------------------------------------------------------------------


def read_network(reader: DlibReader, spec: list[Spec]) -> Network:
    """Parse ``reader`` as the dlib type described by ``spec`` (outermost layer first)."""
    if not spec or spec[-1].kind != "input_rgb_image_sized":
        raise ValueError("a spec must end with its input layer")
    loss: LossMetric | None = None
    i = 0
    if spec[0].kind == "loss_metric":
        reader.expect_int(1, "add_loss_layer version")
        loss = _read_loss_metric(reader)
        i = 1
    layers = _read_stack(reader, spec, i)
    if reader.remaining:
        raise reader.error("the end of the network", f"{reader.remaining} more bytes")
    return Network(layers, loss, reader.source)


def _read_stack(r: DlibReader, spec: list[Spec], i: int) -> list[Layer]:
    s = spec[i]
    where = f"layer {i} ({s})"
    if s.kind in ("tag", "skip"):
        r.expect_int(1, f"{where}: add_{s.kind}_layer version")
        below = _read_stack(r, spec, i + 1)
        return [*below, Tag(s.params["n"]) if s.kind == "tag" else Skip(s.params["n"])]
    if spec[i + 1].kind == "input_rgb_image_sized":
        version = r.expect_int((2, 3), f"{where}: add_layer version (over the input layer)")
        inp = _read_input(r, spec[i + 1], f"layer {i + 1} ({spec[i + 1]})")
        details = _read_details(r, s, where)
        for name in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
            r.bool(f"{where}: add_layer {name}")
        for name in ("x_grad", "cached_output", "grad_final"):
            r.tensor(f"{where}: add_layer {name}")
        if version == 3:
            r.int(f"{where}: add_layer sample_expansion_factor", signed=False)
        return [inp, details]
    version = r.expect_int((1, 2), f"{where}: add_layer version")
    below = _read_stack(r, spec, i + 1)
    details = _read_details(r, s, where)
    for name in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        r.bool(f"{where}: add_layer {name}")
    for name in ("x_grad", "cached_output") + (("params_grad",) if version == 2 else ()):
        r.tensor(f"{where}: add_layer {name}")
    return [*below, details]


def _check(r: DlibReader, at: int, what: str, got: Any, want: Any) -> None:
    if got != want:
        raise r.error(f"{what} = {want}", str(got), at)


def _read_input(r: DlibReader, s: Spec, where: str) -> InputRGB:
    r.expect_string("input_rgb_image_sized", f"{where}: layer type")
    avg = (r.float(f"{where}: avg_red"), r.float(f"{where}: avg_green"), r.float(f"{where}: avg_blue"))
    at = r.pos
    nr, nc = r.int(f"{where}: NR", signed=False), r.int(f"{where}: NC", signed=False)
    _check(r, at, f"{where}: input size", (nr, nc), (s.params["size"], s.params["size"]))
    return InputRGB(avg, nr, nc)


def _read_loss_metric(r: DlibReader) -> LossMetric:
    version = r.expect_string(("loss_metric_2", "loss_metric_"), "loss layer type")
    if version == "loss_metric_":
        return LossMetric(0.04, 0.6)  # dlib's defaults; the first version stored neither
    return LossMetric(r.float("loss_metric margin"), r.float("loss_metric dist_thresh"))


def _read_details(r: DlibReader, s: Spec, where: str) -> Layer:
    kind = s.kind
    if kind == "con":
        return _read_con(r, s, where)
    if kind == "affine":
        return _read_affine(r, where)
    if kind == "relu":
        r.expect_string("relu_", f"{where}: layer type")
        return Relu()
    if kind in ("max_pool", "avg_pool"):
        return _read_pool(r, s, where)
    if kind == "add_prev":
        r.expect_string("add_prev_", f"{where}: layer type")
        return AddPrev(s.params["tag"])
    if kind == "fc":
        return _read_fc(r, s, where)
    raise ValueError(f"unknown layer kind in spec: {kind}")


def _read_con(r: DlibReader, s: Spec, where: str) -> Conv:
    r.expect_string("con_4", f"{where}: layer type")
    params = r.tensor(f"{where}: con_ params")
    at = r.pos
    geometry = tuple(r.int(f"{where}: con_ {n}") for n in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"))
    p = s.params
    want = (p["n"], p["k"], p["k"], p["stride"], p["stride"], default_padding(p["k"], p["stride"]), default_padding(p["k"], p["stride"]))
    _check(r, at, f"{where}: con_ (num_filters, nr, nc, stride_y, stride_x, padding_y, padding_x)", geometry, want)
    at = r.pos
    fdims = r.alias_tensor(f"{where}: con_ filters")
    bdims = r.alias_tensor(f"{where}: con_ biases")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        r.float(f"{where}: con_ {name}")
    nf, nb = int(np.prod(fdims)), int(np.prod(bdims))
    if fdims[0] != p["n"] or fdims[2:] != (p["k"], p["k"]) or nb != p["n"] or params.size != nf + nb:
        want_shape = f"{where}: con_ filters ({p['n']}, k, {p['k']}, {p['k']}) and {p['n']} biases in {params.size} params"
        raise r.error(want_shape, f"filters {fdims}, biases {bdims}", at)
    flat = params.reshape(-1)
    return Conv(flat[:nf].reshape(fdims).copy(), flat[nf:].copy(), (p["stride"], p["stride"]), (want[5], want[6]))


def _read_affine(r: DlibReader, where: str) -> Affine:
    r.expect_string("affine_", f"{where}: layer type (a file with bn_ layers must be converted to affine_ by dlib first)")
    params = r.tensor(f"{where}: affine_ params")
    at = r.pos
    gdims = r.alias_tensor(f"{where}: affine_ gamma")
    bdims = r.alias_tensor(f"{where}: affine_ beta")
    # Newer dlib appends the layer mode (an int: 0 = CONV_MODE); older files end here.
    if r.remaining and r.data[r.pos] not in (0x30, 0x31):
        mode_at = r.pos
        mode = r.int(f"{where}: affine_ mode")
        _check(r, mode_at, f"{where}: affine_ mode (CONV_MODE)", mode, 0)
    k = gdims[1]
    if gdims != (1, k, 1, 1) or bdims != gdims or params.size != 2 * k:
        raise r.error(f"{where}: per-channel (CONV_MODE) gamma and beta", f"gamma {gdims}, beta {bdims}, {params.size} params", at)
    flat = params.reshape(-1)
    return Affine(flat[:k].copy(), flat[k:].copy())


def _read_pool(r: DlibReader, s: Spec, where: str) -> Pool:
    kind = s.kind
    r.expect_string(f"{kind}_2", f"{where}: layer type")
    at = r.pos
    got = tuple(r.int(f"{where}: {kind}_ {n}") for n in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"))
    p = s.params
    pad = default_padding(p["k"], p["stride"]) if p["k"] else 0
    want = (p["k"], p["k"], p["stride"], p["stride"], pad, pad)
    _check(r, at, f"{where}: {kind}_ (nr, nc, stride_y, stride_x, padding_y, padding_x)", got, want)
    return Pool(kind.split("_")[0], (p["k"], p["k"]), (p["stride"], p["stride"]), (pad, pad))


def _read_fc(r: DlibReader, s: Spec, where: str) -> Fc:
    r.expect_string("fc_2", f"{where}: layer type")
    at = r.pos
    num_outputs = r.int(f"{where}: fc_ num_outputs", signed=False)
    num_inputs = r.int(f"{where}: fc_ num_inputs", signed=False)
    _check(r, at, f"{where}: fc_ num_outputs", num_outputs, s.params["n"])
    params = r.tensor(f"{where}: fc_ params")
    at = r.pos
    wdims = r.alias_tensor(f"{where}: fc_ weights")
    bdims = r.alias_tensor(f"{where}: fc_ biases")
    mode_at = r.pos
    bias_mode = r.int(f"{where}: fc_ bias_mode")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        r.float(f"{where}: fc_ {name}")
    has_bias = bias_mode == 0  # dlib: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    want_mode = 0 if s.params["bias"] else 1
    _check(r, mode_at, f"{where}: fc_ bias_mode (0 = FC_HAS_BIAS, 1 = FC_NO_BIAS)", bias_mode, want_mode)
    nw = num_inputs * num_outputs
    if wdims[:2] != (num_inputs, num_outputs) or params.size != nw + (num_outputs if has_bias else 0):
        raise r.error(f"{where}: fc_ weights ({num_inputs}, {num_outputs})", f"weights {wdims}, biases {bdims}, {params.size} params", at)
    flat = params.reshape(-1)
    bias = flat[nw : nw + num_outputs].copy() if has_bias else None
    return Fc(flat[:nw].reshape(num_inputs, num_outputs).copy(), bias)
