"""The learned presentation-attack model: two MiniFASNet nets (80x80, LiteRT) on crops around the face.

The nets (Minivision's Silent-Face-Anti-Spoofing, Apache-2.0, ported by
``kaoclock models build --target liveness``; ``models/liveness/``) were
trained on crops around a RetinaFace-style face box ``(x, y, w, h)``: a box of
``scale * w`` x ``scale * h`` about its centre, ``scale`` clamped to what the
frame can hold, shifted (not shrunk) inside the frame, resized to 80x80
(:func:`crop_box` reproduces the original's integer arithmetic).  Scale 2.7
for MiniFASNetV2, 4.0 for MiniFASNetV1SE.  The real score of a frame is the
mean of the two nets' class-1 (real) softmax probabilities, as the original
ensemble computes it; on a frame where that mean is unsure (``mirror_band``),
the mean of four: both nets also on their crops flipped left-right (test-time
augmentation; see the package README, "Mirrored crops").

Our detector is BlazeFace, whose box is tighter than RetinaFace's;
:data:`BOX_MAP` turns it into the box the nets expect (measured, see
``firmware_py/liveness/README.md``, "Crops from our detector").

Bad input is named rather than scored (:func:`input_problem`): a grey / IR
frame (the nets read colour), a face so small the 2.7 crop would be
upsampled far beyond its pixels, or so close / near the edge that the 4.0
crop cannot be taken at its scale.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

INPUT_SIZE = 80
REAL_CLASS = 1
SCALES = {"minifasnet_v2": 2.7, "minifasnet_v1se": 4.0}

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (the detector's)


@dataclass(frozen=True)
class BoxMap:
    """BlazeFace box -> RetinaFace-style box: centre moved down by ``dy`` box heights, width x ``sx``, height x ``sy``."""

    sx: float = 1.0
    sy: float = 1.0
    dy: float = 0.0

    def apply(self, box: Box) -> tuple[float, float, float, float]:
        """``(x, y, w, h)`` of the mapped box."""
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + self.dy * h
        w2, h2 = w * self.sx, h * self.sy
        return (cx - w2 / 2, cy - h2 / 2, w2, h2)


# Measured on the dev stills (see README): the mapping under which the nets'
# scores on BlazeFace crops agree best with their scores on the reference box.
BOX_MAP = BoxMap(sx=1.1, sy=1.2, dy=0.0)


def crop_box(src_w: int, src_h: int, xywh: tuple[float, float, float, float], scale: float) -> tuple[int, int, int, int, float]:
    """The original's crop rectangle (x0, y0, x1, y1 inclusive) and the scale it could use.

    ``scale`` is clamped to ``min(scale, (H-1)/h, (W-1)/w)``, the box centred
    on the face box and shifted inside the frame, the corners truncated to int.
    """
    x, y, bw, bh = xywh
    scale = min((src_h - 1) / bh, (src_w - 1) / bw, scale)
    nw, nh = bw * scale, bh * scale
    cx, cy = bw / 2 + x, bh / 2 + y
    x0, y0, x1, y1 = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if x0 < 0:
        x1 -= x0
        x0 = 0
    if y0 < 0:
        y1 -= y0
        y0 = 0
    if x1 > src_w - 1:
        x0 -= x1 - src_w + 1
        x1 = src_w - 1
    if y1 > src_h - 1:
        y0 -= y1 - src_h + 1
        y1 = src_h - 1
    return int(x0), int(y0), int(x1), int(y1), scale


def crop(image: NDArray[np.uint8], xywh: tuple[float, float, float, float], scale: float) -> tuple[NDArray[np.uint8], float]:
    """The 80x80 RGB crop the nets read (OpenCV bilinear resize, as the original), and the scale used."""
    from firmware_py.vision.opencv import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1, used = crop_box(w, h, xywh, scale)
    region = image[y0 : y1 + 1, x0 : x1 + 1, :3]
    return np.asarray(cv2.resize(np.ascontiguousarray(region), (INPUT_SIZE, INPUT_SIZE)), np.uint8), used


# -- bad input ----------------------------------------------------------------------

GREY_CHROMA = 2.0  # mean |R-G| + |G-B| below this (of 255): a grey or IR picture
MIN_FACE_PX = 40.0  # mapped box side below this: the 2.7 crop (108 px) would be mostly upsampled blur
# The original clamps the 4.0 (and 2.7) scale to what the frame holds and the nets were trained that
# way: the dev clips' close-ups fit 1.6x and the replay-crop stills 1.3-1.4x, and are scored as the
# original scores them.  Below 1.2x the crop is little more than the face box: no context is left.
MIN_CROP_SCALE = 1.2


def is_grey(image: NDArray[np.uint8], xywh: tuple[float, float, float, float]) -> bool:
    """The face region carries (almost) no colour: a monochrome or IR camera, or an IR-lit scene."""
    h, w = image.shape[:2]
    x, y, bw, bh = xywh
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(w, int(x + bw) + 1), min(h, int(y + bh) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return False
    px = image[y0:y1:2, x0:x1:2, :3].astype(np.int16)
    chroma = np.abs(px[..., 0] - px[..., 1]).mean() + np.abs(px[..., 1] - px[..., 2]).mean()
    return bool(chroma < GREY_CHROMA)


def input_problem(image: NDArray[np.uint8], box: Box, box_map: BoxMap = BOX_MAP) -> tuple[str, str] | None:
    """(code, what to tell the person) when this frame cannot be scored, else None."""
    if image.ndim != 3 or image.shape[2] < 3:
        return ("grey_frame", "the camera gives a grey or infrared picture; the liveness model needs colour")
    xywh = box_map.apply(box)
    if min(xywh[2], xywh[3]) < MIN_FACE_PX:
        return ("face_too_small", f"face too small ({min(xywh[2], xywh[3]):.0f} px < {MIN_FACE_PX:.0f} px): please step closer")
    h, w = image.shape[:2]
    far = max(SCALES.values())
    usable = min((h - 1) / xywh[3], (w - 1) / xywh[2], far)
    if usable < MIN_CROP_SCALE:
        return (
            "face_too_close",
            f"face too close to the camera for the {far:g}x crop (the frame holds {usable:.2f}x < {MIN_CROP_SCALE:g}x): please step back",
        )
    if is_grey(image, xywh):
        return ("grey_frame", "the camera gives a grey or infrared picture; the liveness model needs colour")
    return None


# -- the nets -------------------------------------------------------------------------


class LearnedModel:
    """The two LiteRT nets; :meth:`real_score` is the ensemble's real probability for one face."""

    def __init__(self, paths: dict[str, Path], versions: dict[str, str] | None = None, threads: int = 1, parallel: bool = False) -> None:
        """``parallel``: invoke the second net on a worker thread while the first runs on the caller's (LiteRT
        releases the GIL inside ``invoke``), so a frame waits for one net, not two; the CPU work is the same."""
        from firmware_py.models.litert import load_interpreter

        if set(paths) != set(SCALES):
            raise ValueError(f"expected models {sorted(SCALES)}, got {sorted(paths)}")
        self.versions = versions or {n: n for n in paths}
        self._nets: list[tuple[str, float, Any, int, int]] = []
        for name, scale in SCALES.items():
            interp = load_interpreter(paths[name], threads)
            self._nets.append((name, scale, interp, interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]))
        self.invokes = 0
        # Wall time in which a net was invoking (the pipeline counts it as model time): with parallel nets
        # the span of the two overlapping invokes, not their sum.
        self.invoke_s = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minifasnet") if parallel else None

    @property
    def parallel(self) -> bool:
        return self._pool is not None

    def close(self) -> None:
        """Stop the worker thread of parallel nets (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @staticmethod
    def _run(net: tuple[str, float, Any, int, int], c: NDArray[np.uint8]) -> tuple[NDArray[np.float32], float, float]:
        """One net on its 80x80 crop: (softmax vector, invoke start, invoke end)."""
        _, _, interp, i_in, i_out = net
        interp.set_tensor(i_in, c[None].astype(np.float32))
        t0 = time.perf_counter()
        interp.invoke()
        t1 = time.perf_counter()
        return interp.get_tensor(i_out)[0].copy(), t0, t1

    def _invoke_all(self, crops: list[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
        """Each net on its crop (in ``self._nets`` order), side by side when parallel."""
        out: list[NDArray[np.float32]] = []
        if self._pool is not None:
            futures = [self._pool.submit(self._run, net, c) for net, c in zip(self._nets[1:], crops[1:], strict=True)]
            p, start, end = self._run(self._nets[0], crops[0])
            out.append(p)
            for fut in futures:
                p, t0, t1 = fut.result()
                out.append(p)
                start, end = min(start, t0), max(end, t1)
            self.invoke_s += end - start
        else:
            for net, c in zip(self._nets, crops, strict=True):
                p, t0, t1 = self._run(net, c)
                out.append(p)
                self.invoke_s += t1 - t0
        self.invokes += len(self._nets)
        return out

    def _crops(self, image: NDArray[np.uint8], xywh: tuple[float, float, float, float]) -> list[NDArray[np.uint8]]:
        return [crop(image, xywh, scale)[0] for _, scale, _, _, _ in self._nets]

    def probabilities(self, image: NDArray[np.uint8], xywh: tuple[float, float, float, float]) -> dict[str, NDArray[np.float32]]:
        """Each net's softmax vector for the face at ``xywh`` (the RetinaFace-style box)."""
        probs = self._invoke_all(self._crops(image, xywh))
        return {net[0]: p for net, p in zip(self._nets, probs, strict=True)}

    def real_score(
        self, image: NDArray[np.uint8], box: Box, box_map: BoxMap = BOX_MAP, mirror_band: float | None = None
    ) -> tuple[float, dict[str, float], bool]:
        """(the frame's real score, each net's real probability on its crop, whether the mirrored crops were scored).

        The score is the two nets' mean real probability.  With ``mirror_band`` = m, a frame whose mean lies in
        [m, 1 - m] (the nets are unsure) is scored again on both crops flipped left-right, and its score is the
        mean of the four; a frame the nets are sure of costs two invokes, an unsure one four.
        """
        crops = self._crops(image, box_map.apply(box))
        probs = self._invoke_all(crops)
        per = {net[0]: float(p[REAL_CLASS]) for net, p in zip(self._nets, probs, strict=True)}
        score = float(np.mean(list(per.values())))
        if mirror_band is None or not mirror_band <= score <= 1.0 - mirror_band:
            return score, per, False
        mirrored = self._invoke_all([np.ascontiguousarray(c[:, ::-1]) for c in crops])
        return float(np.mean([*per.values(), *(float(p[REAL_CLASS]) for p in mirrored)])), per, True


def load_learned(models_dir: Path, threads: int = 1, parallel: bool = False) -> LearnedModel:
    """The shipped nets from ``models_dir``, each verified against its sha256 in the model manifest."""
    from firmware_py.models.manifest import load_manifest

    manifest = load_manifest()
    paths = {n: manifest.require(n, models_dir) for n in SCALES}
    return LearnedModel(paths, {n: manifest.entry(n).version for n in SCALES}, threads, parallel=parallel)
