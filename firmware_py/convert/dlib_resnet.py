"""dlib's face-recognition ResNet: its definition and a numpy reference forward pass.

The network is the one in dlib's ``examples/dnn_face_recognition_ex.cpp``
(``anet_type``), weights from ``dlib_face_recognition_resnet_model_v1.dat``
(CC0).  In words: a 150x150 RGB chip, ``(pixel - avg) / 256``; conv 7x7/2
(32, no padding), affine, relu, max pool 3x3/2; residual stages of 32, 64,
128, 256, 256 filters, where a down-sampling block runs its first 3x3 conv at
stride 2 without padding and adds an avg-pool 2x2/2 of the block input; mean
over all cells; a 256 -> 128 fully connected layer without bias.  The
descriptor is *not* L2-normalised; dlib compares descriptors by Euclidean
distance against 0.6.

The numpy forward pass is the project's reference: the TFLite conversion and
the int8 embedder are measured against it, and it is tested against dlib's
own ``compute_face_descriptor``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from firmware_py.convert.dlib_dnn import AddPrev, Affine, Conv, Fc, InputRGB, Network, Pool, Relu, Skip, Spec, Tag, read_network
from firmware_py.convert.dlib_format import DlibReader

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
#: dlib's same-person threshold on the Euclidean distance between descriptors.
DLIB_THRESHOLD = 0.6

# -- the C++ type, spelled as nested functions that mirror the templates -------


def _l(kind: str, sub: list[Spec], **params: object) -> list[Spec]:
    return [Spec(kind, dict(params)), *sub]


def _con(n: int, k: int, stride: int, sub: list[Spec]) -> list[Spec]:
    return _l("con", sub, n=n, k=k, stride=stride)


def _affine(sub: list[Spec]) -> list[Spec]:
    return _l("affine", sub)


def _relu(sub: list[Spec]) -> list[Spec]:
    return _l("relu", sub)


def _block(n: int, stride: int, sub: list[Spec]) -> list[Spec]:
    # block = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return _affine(_con(n, 3, 1, _relu(_affine(_con(n, 3, stride, sub)))))


def _residual(n: int, sub: list[Spec]) -> list[Spec]:
    # residual = add_prev1<block<N,BN,1,tag1<SUBNET>>>
    return _l("add_prev", _block(n, 1, _l("tag", sub, n=1)), tag=1)


def _residual_down(n: int, sub: list[Spec]) -> list[Spec]:
    # residual_down = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>
    inner = _l("tag", _block(n, 2, _l("tag", sub, n=1)), n=2)
    return _l("add_prev", _l("avg_pool", _l("skip", inner, n=1), k=2, stride=2), tag=2)


def _ares(n: int, sub: list[Spec]) -> list[Spec]:
    return _relu(_residual(n, sub))


def _ares_down(n: int, sub: list[Spec]) -> list[Spec]:
    return _relu(_residual_down(n, sub))


def face_resnet_spec() -> list[Spec]:
    """``anet_type`` of dnn_face_recognition_ex.cpp, outermost layer first."""
    x = _l("input_rgb_image_sized", [], size=CHIP_SIZE)
    x = _l("max_pool", _relu(_affine(_con(32, 7, 2, x))), k=3, stride=2)
    x = _ares(32, _ares(32, _ares(32, x)))  # alevel4
    x = _ares(64, _ares(64, _ares(64, _ares_down(64, x))))  # alevel3
    x = _ares(128, _ares(128, _ares_down(128, x)))  # alevel2
    x = _ares(256, _ares(256, _ares_down(256, x)))  # alevel1
    x = _ares_down(256, x)  # alevel0
    x = _l("avg_pool", x, k=0, stride=1)  # avg_pool_everything
    x = _l("fc", x, n=DESCRIPTOR_DIM, bias=False)  # fc_no_bias<128>
    return _l("loss_metric", x)


def load_face_resnet(path: Path) -> Network:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat``; a wrong file raises ModelError."""
    return read_network(DlibReader.open(path), face_resnet_spec())


# -- numpy forward pass (NHWC) --------------------------------------------------


def _conv(x: np.ndarray, layer: Conv) -> np.ndarray:
    (py, px), (sy, sx) = layer.padding, layer.stride
    if py or px:
        x = np.pad(x, ((0, 0), (py, py), (px, px), (0, 0)))
    _, _, kh, kw = layer.weights.shape
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sy, ::sx]  # (N, oh, ow, C, kh, kw)
    return np.tensordot(win, layer.weights.astype(x.dtype), axes=([3, 4, 5], [1, 2, 3])) + layer.bias.astype(x.dtype)


def _pool(x: np.ndarray, layer: Pool) -> np.ndarray:
    if layer.size == (0, 0):
        return x.mean(axis=(1, 2), keepdims=True) if layer.kind == "avg" else x.max(axis=(1, 2), keepdims=True)
    if layer.padding != (0, 0):
        raise NotImplementedError("padded pooling is not used by this network")
    (kh, kw), (sy, sx) = layer.size, layer.stride
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sy, ::sx]
    return win.max(axis=(4, 5)) if layer.kind == "max" else win.mean(axis=(4, 5))


def add_zero_extended(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's add_prev on tensors of different shapes: the larger shape, each zero-extended top-left."""
    if a.shape == b.shape:
        return a + b
    shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape, strict=True))
    out = np.zeros(shape, np.result_type(a, b))
    out[tuple(slice(0, d) for d in a.shape)] += a
    out[tuple(slice(0, d) for d in b.shape)] += b
    return out


def forward(net: Network, chips: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Descriptors (N, 128) for uint8 RGB chips (N, 150, 150, 3) or one chip (150, 150, 3)."""
    single = chips.ndim == 3
    batch = chips[None] if single else chips
    inp = net.input
    if batch.shape[1:] != (inp.nr, inp.nc, 3):
        raise ValueError(f"expected RGB chips of shape (N, {inp.nr}, {inp.nc}, 3), got {batch.shape}")
    x: np.ndarray = np.empty(0, dtype)
    tags: dict[int, np.ndarray] = {}
    for layer in net.layers:
        if isinstance(layer, InputRGB):
            x = (batch.astype(dtype) - np.asarray(layer.avg, dtype)) / dtype(256)
        elif isinstance(layer, Conv):
            x = _conv(x, layer)
        elif isinstance(layer, Affine):
            x = x * layer.gamma.astype(dtype) + layer.beta.astype(dtype)
        elif isinstance(layer, Relu):
            x = np.maximum(x, 0)
        elif isinstance(layer, Pool):
            x = _pool(x, layer)
        elif isinstance(layer, Tag):
            tags[layer.n] = x
        elif isinstance(layer, Skip):
            x = tags[layer.tag]
        elif isinstance(layer, AddPrev):
            x = add_zero_extended(x, tags[layer.tag])
        elif isinstance(layer, Fc):
            flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # dlib's (k, nr, nc) order
            x = flat @ layer.weights.astype(dtype)
            if layer.bias is not None:
                x = x + layer.bias.astype(dtype)
        else:  # pragma: no cover - the spec only yields the kinds above
            raise TypeError(f"unsupported layer {layer!r}")
    out = np.asarray(x, np.float32)
    return out[0] if single else out


class ReferenceEmbedder:
    """The numpy reference with :class:`~firmware_py.vision.embedder.Embedder`'s ``embed`` API."""

    def __init__(self, dat_path: Path, batch: int = 16) -> None:
        self.net = load_face_resnet(dat_path)
        self.batch = batch

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if chips.ndim == 3:
            return forward(self.net, chips)
        parts = [forward(self.net, chips[i : i + self.batch]) for i in range(0, len(chips), self.batch)]
        return np.concatenate(parts) if parts else np.empty((0, DESCRIPTOR_DIM), np.float32)
