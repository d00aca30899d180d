"""Descriptors of still images through the reader's own front-end, with an on-disk cache.

Each image goes through the same stages as a camera frame (BlazeFace,
FaceMesh, dlib-geometry alignment, the int8 embedder) and is described by
the reader's own :func:`~firmware_py.vision.embedding.describe_face`.  The face
described is the one the photo is labelled with: LFW's images (and every other
identity folder used here) are centred on the labelled person, so with ``face =
"centre"`` (the default) the detection nearest the image centre is described,
whereas the reader at a gate takes the nearest (largest) face.  In 52 of
lfw-dev's 9,525 images a bystander at the edge is detected larger than the
labelled person, so ``"largest"`` describes the wrong person there (LFW
pairsDevTrain: 98.77% with "largest", 99.18% with "centre").  An image where no
face is found still gets a descriptor, from a centred crop, and is counted as a
detection failure.

Descriptors are cached per (image path, size, mtime, embedder version, mirror,
front-end settings) under ``~/.cache/kaoclock/eval`` so that running several
protocols over the same images costs one pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from firmware_py.config.schema import to_plain
from firmware_py.gallery.enrol import load_photo
from firmware_py.progress import Progress
from firmware_py.vision.embedding import ChipEmbedder, describe_face

if TYPE_CHECKING:
    from firmware_py.config import Config

log = logging.getLogger(__name__)

# Centred fallback: LFW's 250x250 deep-funnelled images put the face in the middle, about 110 px wide.
CENTRE_CROP_FRACTION = 0.56


def cache_dir() -> Path:
    env = os.environ.get("XDG_CACHE_HOME")
    return (Path(env) if env else Path.home() / ".cache") / "kaoclock" / "eval"


@dataclass
class StillDescriptors:
    paths: list[Path]
    descriptors: np.ndarray  # (N,128)
    detected: np.ndarray  # (N,) bool
    seconds: float

    @property
    def detection_failures(self) -> int:
        return int((~self.detected).sum())

    def of(self, path: Path) -> np.ndarray:
        return self.descriptors[self._index[Path(path)]]

    def __post_init__(self) -> None:
        self._index = {p: i for i, p in enumerate(self.paths)}


FacePick = Literal["centre", "largest"]


class CentreFirst:
    """Detector wrapper that lists the detection nearest the image centre first.

    The analyzer describes its first face (at a gate: the nearest, largest
    one); a labelled still shows its person in the middle.  Everything else
    (attributes, timings) is the wrapped detector's.
    """

    def __init__(self, detector: Any) -> None:
        self._detector = detector

    def detect(self, image: np.ndarray) -> list[Any]:
        dets = self._detector.detect(image)
        h, w = image.shape[:2]

        def off_centre(d: Any) -> float:
            x0, y0, x1, y1 = d.box
            return float(((x0 + x1) / 2 - w / 2) ** 2 + ((y0 + y1) / 2 - h / 2) ** 2)

        return sorted(dets, key=off_centre)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._detector, name)


def centre_chip(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = CENTRE_CROP_FRACTION * min(h, w)
    box = (w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2)
    return np.asarray(Image.fromarray(image).resize((150, 150), Image.Resampling.BILINEAR, box=box))


def _front_end_code_hash() -> str:
    """Hash of the front-end's source: a code change invalidates cached descriptors."""
    import firmware_py.vision as vision

    h = hashlib.sha256()
    for f in sorted([*Path(vision.__file__).parent.glob("*.py"), Path(__file__)]):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class StillDescriber:
    """Describe still images with a front-end analyzer and an embedder."""

    def __init__(
        self,
        analyzer: Any,
        embedder: ChipEmbedder,
        mirror: bool = False,
        settings: dict[str, Any] | None = None,
        face: FacePick = "centre",
    ) -> None:
        if face not in ("centre", "largest"):
            raise ValueError(f"face must be 'centre' or 'largest', got {face!r}")
        if face == "centre" and not isinstance(analyzer.detector, CentreFirst):
            analyzer.detector = CentreFirst(analyzer.detector)
        self.analyzer = analyzer
        self.embedder = embedder
        self.mirror = mirror
        self.face = face
        # "largest" keeps the cache key of the descriptors computed before the choice existed.
        pick = {} if face == "largest" else {"face": face}
        key = json.dumps(
            {"embedder": embedder.version, "mirror": mirror, "settings": settings or {}, "code": _front_end_code_hash(), "v": 1, **pick},
            sort_keys=True,
            default=str,
        )
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]

    def chips(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """The chips the reader would embed for this image's face (see the module docstring) ``(n, 150, 150, 3)``, and whether a face was found."""
        from firmware_py.capture.frame import Frame

        self.analyzer.reset()
        obs = self.analyzer.process(Frame(image, 0.0, 0, "still")).primary
        if obs is None or obs.chips is None:
            return centre_chip(image)[None], False
        return obs.chips, True

    def describe_paths(self, paths: list[Path], progress: bool = True) -> StillDescriptors:
        t0 = time.perf_counter()
        cache = _Cache(cache_dir() / f"{self.key}.npz")
        out = np.zeros((len(paths), 128), np.float32)
        det = np.zeros(len(paths), bool)
        todo = []
        for i, p in enumerate(paths):
            hit = cache.get(p)
            if hit is None:
                todo.append(i)
            else:
                out[i], det[i] = hit
        with Progress("describing images", total=len(todo)) as bar:
            for n, i in enumerate(todo):
                chips, ok = self.chips(load_photo(paths[i]))
                out[i] = describe_face(self.embedder, chips, self.mirror)
                det[i] = ok
                cache.put(paths[i], out[i], ok)
                if progress:
                    bar.advance()
                if (n + 1) % 250 == 0:
                    cache.save()
        cache.save()
        return StillDescriptors(list(paths), out, det, time.perf_counter() - t0)


class _Cache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, tuple[np.ndarray, bool]] = {}
        self.dirty = False
        if path.is_file():
            try:
                z = np.load(path, allow_pickle=False)
                for k, d, ok in zip(z["keys"].tolist(), z["desc"], z["det"], strict=True):
                    self.data[k] = (d, bool(ok))
            except Exception:
                log.warning("eval cache %s unreadable; starting a new one", path)

    @staticmethod
    def _k(p: Path) -> str:
        st = p.stat()
        return f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}"

    def get(self, p: Path) -> tuple[np.ndarray, bool] | None:
        return self.data.get(self._k(p))

    def put(self, p: Path, d: np.ndarray, ok: bool) -> None:
        self.data[self._k(p)] = (d.copy(), ok)
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.data)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), desc=np.array([self.data[k][0] for k in keys], np.float32), det=np.array([self.data[k][1] for k in keys]))
        os.replace(tmp, self.path)
        self.dirty = False


def describer_from_config(cfg: Config, embedder: ChipEmbedder | None = None, mirror: bool | None = None, face: FacePick = "centre") -> StillDescriber:
    from firmware_py.pipeline.build import build_analyzer
    from firmware_py.vision.embedding import load_embedder

    embedder = embedder or load_embedder(cfg)
    analyzer = build_analyzer(cfg, enrolment=True)
    m = cfg.recognition.mirror_average if mirror is None else mirror
    return StillDescriber(analyzer, embedder, m, settings=to_plain(getattr(cfg, "vision", None)), face=face)
