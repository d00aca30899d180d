"""The peer: a face_recognition-style dlib pipeline (dev extra ``dlib-bin``).

HOG frontal face detector with one upsampling, dlib's 5-point shape
predictor, ``get_face_chip`` (150 px, padding 0.25) and dlib's float ResNet
descriptor: what ``face_recognition.face_encodings`` does.  Used by
`kaoclock bench pipeline --peer` and as the reference in evaluations; never
on the reader.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_py.errors import KaoclockError
from firmware_py.models.manifest import load_manifest


@dataclass
class PeerFace:
    box: tuple[int, int, int, int]  # left, top, right, bottom
    descriptor: np.ndarray


@dataclass
class PeerTimings:
    detect_ms: list[float] = field(default_factory=list)
    describe_ms: list[float] = field(default_factory=list)
    frame_ms: list[float] = field(default_factory=list)


class DlibPeer:
    """dlib's own detect -> 5 points -> chip -> descriptor."""

    def __init__(self, models_dir: Path, upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError:
            raise KaoclockError("the dlib peer needs dlib-bin (a dev extra): device/bootstrap.sh --dev") from None
        manifest = load_manifest()
        self._dlib = dlib
        self.upsample = upsample
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(manifest.require("dlib_shape_predictor_5", models_dir)))
        self.net = dlib.face_recognition_model_v1(str(manifest.require("dlib_resnet_v1", models_dir)))
        self.timings = PeerTimings()

    def chip(self, image: np.ndarray, rect: object) -> np.ndarray:
        """dlib's 150x150 aligned chip (padding 0.25) for one detected rectangle."""
        shape = self.shape(image, rect)
        return np.asarray(self._dlib.get_face_chip(image, shape, size=150, padding=0.25))

    def describe_chips(self, chips: np.ndarray) -> np.ndarray:
        """dlib descriptors (N,128) of aligned chips."""
        out = [np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(c)), np.float32) for c in chips]
        return np.asarray(out, np.float32).reshape(-1, 128)

    def faces(self, image: np.ndarray) -> list[PeerFace]:
        """Every face in an RGB uint8 image with its descriptor (timed)."""
        t0 = time.perf_counter()
        rects = self.detector(image, self.upsample)
        t1 = time.perf_counter()
        out = []
        for r in rects:
            shape = self.shape(image, r)
            d = np.asarray(self.net.compute_face_descriptor(image, shape), np.float32)
            out.append(PeerFace((r.left(), r.top(), r.right(), r.bottom()), d))
        t2 = time.perf_counter()
        self.timings.detect_ms.append((t1 - t0) * 1e3)
        self.timings.describe_ms.append((t2 - t1) * 1e3)
        self.timings.frame_ms.append((t2 - t0) * 1e3)
        return out


class DlibChipEmbedder:
    """dlib's float ResNet behind the product :class:`~firmware_py.vision.embedder.Embedder` interface.

    The reference the int8 model is measured against; also a stand-in in
    development.  The reader itself never runs it.
    """

    def __init__(self, models_dir: Path) -> None:
        try:
            import dlib
        except ImportError:
            raise KaoclockError("the dlib reference embedder needs dlib-bin (a dev extra): device/bootstrap.sh --dev") from None
        entry = load_manifest().entry("dlib_resnet_v1")
        self.version = entry.version + "-float"
        self._net = dlib.face_recognition_model_v1(str(load_manifest().require("dlib_resnet_v1", models_dir)))

    def embed(self, chips: np.ndarray) -> np.ndarray:
        single = chips.ndim == 3
        batch = chips[None] if single else chips
        out = np.asarray([self._net.compute_face_descriptor(np.ascontiguousarray(c)) for c in batch], np.float32).reshape(-1, 128)
        return out[0] if single else out
