"""MiniFASNet (Minivision's Silent-Face-Anti-Spoofing, Apache-2.0): read the weights without PyTorch, run them in numpy.

The two source files are PyTorch state dicts.  :func:`read_state_dict` reads
both of PyTorch's on-disk formats with a *restricted* unpickler (it builds
nothing but ordered dicts and tensors: any other class in the pickle is
refused, so a hostile file cannot run code) and the raw little-endian
storages that follow the pickle:

* legacy (what these files are): magic number, protocol, system info, the
  pickled dict, the list of storage keys, then per storage an int64 element
  count and its bytes;
* zip (torch >= 1.6): ``*/data.pkl`` plus one ``*/data/<key>`` member per
  storage.

:func:`network` turns a state dict into the layer list that the architecture
implies (MobileFaceNet-style, pruned; the channel counts come from the tensor
shapes; the squeeze-and-excitation blocks are found by their keys), and
:func:`forward` is the float64 numpy reference forward pass that the LiteRT
port is checked against (`kaoclock models verify`).  Batch norms are kept
separate here (the reference stays literal); the converter folds them.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware_py.models.manifest import ModelError

BN_EPS = 1e-5  # PyTorch's BatchNorm default, which the original uses
INPUT_SIZE = 80
CLASSES = 3
REAL_CLASS = 1  # softmax class 1 = real; 0 and 2 are two kinds of attack

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}

Array = NDArray[np.float64]


@dataclass(frozen=True)
class _TensorRef:
    storage_type: str
    key: str
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: tuple[str, str], offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> _TensorRef:
    return _TensorRef(storage[0], storage[1], int(offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Builds ordered dicts and tensor references only; every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return name
        raise pickle.UnpicklingError(f"refused global {module}.{name}: a state dict holds only tensors")

    def persistent_load(self, pid: Any) -> tuple[str, str]:
        # ('storage', storage_type, key, location, numel[, view metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        st = pid[1] if isinstance(pid[1], str) else str(pid[1])
        return (st, str(pid[2]))


def _materialise(ref: _TensorRef, raw: dict[str, bytes]) -> NDArray[Any]:
    dt = _DTYPES[ref.storage_type]
    flat = np.frombuffer(raw[ref.key], dtype=dt)
    if not ref.size:
        return flat[ref.offset : ref.offset + 1].reshape(()).copy()
    strides = tuple(s * dt.itemsize for s in ref.stride)
    view = np.lib.stride_tricks.as_strided(flat[ref.offset :], shape=ref.size, strides=strides)
    return np.array(view, dtype=dt.newbyteorder("="))


def read_state_dict(path: Path) -> dict[str, NDArray[Any]]:
    """The tensors of a PyTorch state dict file, by name (a ``module.`` prefix removed)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if zipfile.is_zipfile(io.BytesIO(blob)):
            sd, raw = _read_zip(blob)
        else:
            sd, raw = _read_legacy(blob)
        out = {re.sub(r"^module\.", "", k): _materialise(v, raw) for k, v in sd.items() if isinstance(v, _TensorRef)}
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, struct.error) as exc:
        raise ModelError(f"{path} is not a readable PyTorch state dict: {exc}") from None
    if not out:
        raise ModelError(f"{path}: no tensors in the state dict")
    return out


def _read_legacy(blob: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    fh = io.BytesIO(blob)
    if _Unpickler(fh).load() != _LEGACY_MAGIC:
        raise ValueError("bad magic number (neither a zip nor a legacy PyTorch file)")
    proto = _Unpickler(fh).load()
    info = _Unpickler(fh).load()
    if proto != 1001 or not (isinstance(info, dict) and info.get("little_endian")):
        raise ValueError(f"unsupported legacy format (protocol {proto}, {info})")
    sd = _Unpickler(fh).load()
    keys = _Unpickler(fh).load()
    types = {v.key: v.storage_type for v in sd.values() if isinstance(v, _TensorRef)}
    raw: dict[str, bytes] = {}
    for key in keys:
        (numel,) = struct.unpack("<q", fh.read(8))
        nbytes = numel * _DTYPES[types.get(key, "FloatStorage")].itemsize
        data = fh.read(nbytes)
        if len(data) != nbytes:
            raise ValueError(f"storage {key}: file ends after {len(data)} of {nbytes} bytes")
        raw[key] = data
    return sd, raw


def _read_zip(blob: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        names = zf.namelist()
        pkl = next(n for n in names if n.endswith("/data.pkl") or n == "data.pkl")
        prefix = pkl[: -len("data.pkl")]
        sd = _Unpickler(io.BytesIO(zf.read(pkl))).load()
        raw = {n[len(prefix) + 5 :]: zf.read(n) for n in names if n.startswith(prefix + "data/")}
    return sd, raw


# -- the architecture -------------------------------------------------------------


@dataclass(frozen=True)
class Conv:
    """conv (no bias) -> batch norm -> PReLU (``prelu`` None: linear)."""

    weight: Array  # OIHW (I = in / groups)
    bn: tuple[Array, Array, Array, Array]  # gamma, beta, mean, var
    prelu: Array | None
    stride: int
    padding: int
    groups: int


@dataclass(frozen=True)
class SE:
    """Squeeze-and-excitation on the projection's output."""

    fc1: Array
    bn1: tuple[Array, Array, Array, Array]
    fc2: Array
    bn2: tuple[Array, Array, Array, Array]


@dataclass(frozen=True)
class Block:
    """1x1 expand -> depthwise 3x3 -> 1x1 linear projection (+ SE) (+ residual)."""

    expand: Conv
    depthwise: Conv
    project: Conv
    se: SE | None
    residual: bool


@dataclass(frozen=True)
class Head:
    linear: Array  # (128, 512)
    bn: tuple[Array, Array, Array, Array]
    prob: Array  # (3, 128)


@dataclass(frozen=True)
class Network:
    layers: tuple[Conv | Block, ...]
    head: Head

    def parameter_count(self) -> int:
        n = 0
        for layer in self.layers:
            convs = [layer] if isinstance(layer, Conv) else [layer.expand, layer.depthwise, layer.project]
            for c in convs:
                n += c.weight.size + 2 * c.bn[0].size + (c.prelu.size if c.prelu is not None else 0)
            if isinstance(layer, Block) and layer.se is not None:
                n += layer.se.fc1.size + layer.se.fc2.size + 2 * (layer.se.bn1[0].size + layer.se.bn2[0].size)
        return n + self.head.linear.size + 2 * self.head.bn[0].size + self.head.prob.size


def _f64(a: NDArray[Any]) -> Array:
    return np.asarray(a, np.float64)


def network(sd: dict[str, NDArray[Any]]) -> Network:
    """The layer list a MiniFASNet state dict implies; a foreign dict is refused by the key it lacks."""

    def bn(prefix: str) -> tuple[Array, Array, Array, Array]:
        return tuple(_f64(sd[f"{prefix}.{k}"]) for k in ("weight", "bias", "running_mean", "running_var"))  # type: ignore[return-value]

    def conv(prefix: str, stride: int, padding: int, linear: bool = False) -> Conv:
        w = _f64(sd[f"{prefix}.conv.weight"])
        in_per_group = w.shape[1]
        groups = w.shape[0] if in_per_group == 1 and w.shape[2] > 1 else 1
        return Conv(w, bn(f"{prefix}.bn"), None if linear else _f64(sd[f"{prefix}.prelu.weight"]), stride, padding, groups)

    def block(prefix: str, stride: int, residual: bool) -> Block:
        se = None
        if f"{prefix}.se_module.fc1.weight" in sd:
            se = SE(
                _f64(sd[f"{prefix}.se_module.fc1.weight"]),
                bn(f"{prefix}.se_module.bn1"),
                _f64(sd[f"{prefix}.se_module.fc2.weight"]),
                bn(f"{prefix}.se_module.bn2"),
            )
        return Block(conv(f"{prefix}.conv", 1, 0), conv(f"{prefix}.conv_dw", stride, 1), conv(f"{prefix}.project", 1, 0, linear=True), se, residual)

    try:
        layers: list[Conv | Block] = [conv("conv1", 2, 1), conv("conv2_dw", 1, 1)]
        for down, stage in (("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5")):
            layers.append(block(down, 2, residual=False))
            i = 0
            while f"{stage}.model.{i}.conv.conv.weight" in sd:
                layers.append(block(f"{stage}.model.{i}", 1, residual=True))
                i += 1
            if i == 0:
                raise KeyError(f"{stage}.model.0")
        layers.append(conv("conv_6_sep", 1, 0))
        layers.append(conv("conv_6_dw", 1, 0, linear=True))
        head = Head(_f64(sd["linear.weight"]), bn("bn"), _f64(sd["prob.weight"]))
    except KeyError as exc:
        raise ModelError(f"not a MiniFASNet state dict: no tensor {exc.args[0]}") from None
    first = layers[0]
    if not isinstance(first, Conv) or first.weight.shape[1] != 3 or head.prob.shape[0] != CLASSES:
        shape = first.weight.shape if isinstance(first, Conv) else "not a convolution"
        raise ModelError(f"not a MiniFASNet state dict: input {shape}, output {head.prob.shape}")
    return Network(tuple(layers), head)


def load_network(path: Path) -> Network:
    return network(read_state_dict(path))


# -- the float64 reference forward pass (NHWC) -------------------------------------


def _bn(x: Array, p: tuple[Array, Array, Array, Array]) -> Array:
    g, b, m, v = p
    return (x - m) * (g / np.sqrt(v + BN_EPS)) + b


def _conv(x: Array, c: Conv) -> Array:
    n, h, w, cin = x.shape
    o, ipg, kh, kw = c.weight.shape
    p, s = c.padding, c.stride
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0))) if p else x
    ho, wo = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    if c.groups == 1 and kh == 1 and kw == 1:
        y = xp[:, ::s, ::s, :] @ c.weight[:, :, 0, 0].T
    elif c.groups == 1:
        cols = np.stack([xp[:, i : i + s * ho : s, j : j + s * wo : s, :] for i in range(kh) for j in range(kw)], axis=-1)  # N,Ho,Wo,Cin,K
        y = np.einsum("nhwck,ock->nhwo", cols, c.weight.reshape(o, ipg, kh * kw))
    else:  # depthwise: one filter per channel
        if c.groups != cin or o != cin or ipg != 1:
            raise ModelError(f"unsupported grouped conv: groups {c.groups}, weight {c.weight.shape}, input channels {cin}")
        y = np.zeros((n, ho, wo, o))
        for i in range(kh):
            for j in range(kw):
                y += xp[:, i : i + s * ho : s, j : j + s * wo : s, :] * c.weight[:, 0, i, j]
    y = _bn(y, c.bn)
    if c.prelu is not None:
        y = np.where(y > 0, y, y * c.prelu)
    return y


def _block(x: Array, b: Block) -> Array:
    y = _conv(_conv(_conv(x, b.expand), b.depthwise), b.project)
    if b.se is not None:
        z = y.mean(axis=(1, 2))
        z = np.maximum(_bn(z @ b.se.fc1[:, :, 0, 0].T, b.se.bn1), 0.0)
        z = _bn(z @ b.se.fc2[:, :, 0, 0].T, b.se.bn2)
        y = y * (1.0 / (1.0 + np.exp(-z)))[:, None, None, :]
    return x + y if b.residual else y


def logits(net: Network, bgr: NDArray[Any]) -> Array:
    """The 3 logits for (N, 80, 80, 3) crops in **BGR** order, values 0..255 (the original's convention)."""
    x = _f64(bgr)
    if x.ndim != 4 or x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"expected (N, {INPUT_SIZE}, {INPUT_SIZE}, 3) crops, got {x.shape}")
    for layer in net.layers:
        x = _conv(x, layer) if isinstance(layer, Conv) else _block(x, layer)
    x = x.reshape(x.shape[0], -1)  # (N, 512): spatial 1x1 after the 5x5 linear depthwise conv
    x = _bn(x @ net.head.linear.T, net.head.bn)
    return x @ net.head.prob.T


def softmax(z: Array) -> Array:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward(net: Network, rgb: NDArray[Any]) -> Array:
    """Softmax probabilities for (N, 80, 80, 3) **RGB** crops 0..255 (the port's contract; the channel swap happens here)."""
    return softmax(logits(net, np.asarray(rgb)[..., ::-1]))


def first_conv_bgr_to_rgb(net: Network) -> Network:
    """The same network taking RGB input: the first conv's input channels reversed (exact)."""
    c0 = net.layers[0]
    assert isinstance(c0, Conv)
    return Network((Conv(c0.weight[:, ::-1].copy(), c0.bn, c0.prelu, c0.stride, c0.padding, c0.groups), *net.layers[1:]), net.head)
