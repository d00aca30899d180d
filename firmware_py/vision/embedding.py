"""The product embedder (the project's int8 TFLite build of dlib's ResNet) and descriptor helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from firmware_py.vision import embedder as vision_embedder
from firmware_py.vision.embedder import Embedder

if TYPE_CHECKING:
    from firmware_py.config import Config


class ChipEmbedder(Protocol):
    """Anything that turns aligned 150x150 chips into 128-D descriptors (the product's :class:`Embedder`)."""

    version: str

    def embed(self, chips: np.ndarray) -> np.ndarray: ...


def load_embedder(cfg: Config) -> Embedder:
    """The int8 embedder the reader runs, verified against the manifest."""
    return vision_embedder.load_embedder(cfg)


def describe(embedder: ChipEmbedder, chips: np.ndarray, mirror: bool = False) -> np.ndarray:
    """Descriptors (N,128) of uint8 chips (N,150,150,3); with ``mirror`` the mean of each chip's and its mirror image's."""
    chips = np.asarray(chips)
    if chips.ndim == 3:
        chips = chips[None]
    if not mirror:
        return embedder.embed(np.ascontiguousarray(chips))
    both = np.concatenate([chips, chips[:, :, ::-1]])
    d = embedder.embed(np.ascontiguousarray(both))
    return ((d[: len(chips)] + d[len(chips) :]) / 2.0).astype(np.float32)


def describe_face(embedder: ChipEmbedder, chips: np.ndarray, mirror: bool = False) -> np.ndarray:
    """One ``(128,)`` descriptor for one face: the mean over its chips (one per alignment, see
    :attr:`~firmware_py.vision.analyzer.FaceObservation.chips`) and, with ``mirror``, their mirror images.

    This is the reader's whole embedding path: the gate, enrolment and the evaluations all call it,
    so a template and a probe are always described the same way.
    """
    return describe(embedder, chips, mirror).mean(axis=0, dtype=np.float64).astype(np.float32)
