"""Embedder parity: the int8 TFLite embedder against the numpy reference forward pass.

Both run on the *same* chips of real faces:

* always: matplotlib's ``grace_hopper.jpg`` and scikit-image's
  ``astronaut.png`` (dlib-aligned when dlib is importable, else fixed crops);
* with ``--data``: LFW ``lfw-dev`` images named in ``pairsDevTrain.txt``
  (identities the converter never calibrated on), taken pair by pair until at
  least ``min_lfw`` distinct images, dlib-aligned when dlib is importable (an
  image where dlib finds no face is left out and counted), else LFW's centre
  150x150 crop.  Those pairs also give the number of same/different decisions
  at dlib's 0.6 threshold that the int8 embedder flips.

Needs numpy, the .dat and LiteRT; never TensorFlow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from firmware_py.convert.dlib_resnet import DLIB_THRESHOLD
from firmware_py.convert.facechips import DlibAligner, dlib_available, lfw_centre_chip, load_rgb, package_photo_chips
from firmware_py.convert.lfw import lfw_root, verification_pairs


class Embeds(Protocol):
    def embed(self, chips: np.ndarray) -> np.ndarray: ...


@dataclass
class ChipSet:
    """Chips with their labels, how they were made, and pairs over them (indices)."""

    chips: np.ndarray
    labels: list[str]
    source: str
    pairs: list[tuple[int, int, bool]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def package_chipset(shape_predictor: Path | None) -> ChipSet:
    chips, desc = package_photo_chips(shape_predictor)
    arr = np.stack(list(chips.values())) if chips else np.empty((0, 150, 150, 3), np.uint8)
    return ChipSet(arr, list(chips), desc)


def lfw_chipset(data: Path, shape_predictor: Path | None, min_images: int = 1200) -> ChipSet:
    """Held-out LFW chips (identities in pairsDevTrain.txt) and the pairs whose both images have a chip."""
    root = lfw_root(data)
    pairs, rels = verification_pairs(root, min_images)
    aligner = DlibAligner(shape_predictor) if shape_predictor is not None and shape_predictor.is_file() and dlib_available() else None
    chips: list[np.ndarray] = []
    labels: list[str] = []
    index: dict[str, int] = {}
    missed = 0
    for rel in rels:
        img = load_rgb(root / rel)
        chip = aligner.chip(img) if aligner else lfw_centre_chip(img)
        if chip is None:
            missed += 1
            continue
        index[rel] = len(labels)
        chips.append(chip)
        labels.append(rel)
    kept = [(index[p.a], index[p.b], p.same) for p in pairs if p.a in index and p.b in index]
    how = "dlib get_face_chip(HOG detection, 5-point shape, 150, 0.25)" if aligner else "fixed centre 150x150 crop of the 250x250 deep-funneled image"
    source = f"lfw-dev pairsDevTrain.txt images, identities disjoint from the calibration set: {len(labels)} faces from {len(pairs)} pairs, {how}" + (
        f"; {missed} images without a dlib detection left out" if missed else ""
    )
    return ChipSet(np.stack(chips) if chips else np.empty((0, 150, 150, 3), np.uint8), labels, source, kept)


def compare(test: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Cosine and Euclidean agreement of two (N, 128) descriptor sets."""
    if len(test) == 0:
        return {"n": 0}
    cos = (test * ref).sum(1) / (np.linalg.norm(test, axis=1) * np.linalg.norm(ref, axis=1))
    eu = np.linalg.norm(test - ref, axis=1)
    return {
        "n": len(test),
        "cosine_min": round(float(cos.min()), 6),
        "cosine_mean": round(float(cos.mean()), 6),
        "euclid_mean": round(float(eu.mean()), 5),
        "euclid_max": round(float(eu.max()), 5),
        "reference_norm_mean": round(float(np.linalg.norm(ref, axis=1).mean()), 4),
    }


def decisions(test: np.ndarray, ref: np.ndarray, pairs: list[tuple[int, int, bool]], threshold: float = DLIB_THRESHOLD) -> dict[str, Any]:
    """Same/different decisions at ``threshold`` that differ between the two embedders."""
    if not pairs:
        return {"pairs": 0}
    i = np.array([p[0] for p in pairs])
    j = np.array([p[1] for p in pairs])
    same = np.array([p[2] for p in pairs])
    d_ref = np.linalg.norm(ref[i] - ref[j], axis=1)
    d_test = np.linalg.norm(test[i] - test[j], axis=1)
    flipped = (d_ref < threshold) != (d_test < threshold)
    out: dict[str, Any] = {
        "pairs": len(pairs),
        "threshold": threshold,
        "decisions_flipped": int(flipped.sum()),
        "pair_distance_delta_max": round(float(np.abs(d_test - d_ref).max()), 5),
        "reference_accuracy": round(float(((d_ref < threshold) == same).mean()), 4),
        "int8_accuracy": round(float(((d_test < threshold) == same).mean()), 4),
    }
    if flipped.any():
        out["flipped_reference_distance_from_threshold_max"] = round(float(np.abs(d_ref[flipped] - threshold).max()), 5)
    return out


def _timed_embed(e: Embeds, chips: np.ndarray) -> tuple[np.ndarray, float]:
    if len(chips):
        e.embed(chips[:1])  # warm-up: first-call allocations are not per-chip cost
    t = time.perf_counter()
    y = e.embed(chips) if len(chips) else np.empty((0, 128), np.float32)
    return y, (time.perf_counter() - t) * 1000 / max(1, len(chips))


def embedder_parity(test: Embeds, reference: Embeds, shape_predictor: Path | None, data: Path | None = None, min_lfw: int = 1200) -> dict[str, Any]:
    """The ``embedder_parity`` object of ``kaoclock models verify --json``."""
    sets = [package_chipset(shape_predictor)]
    if data is not None:
        sets.append(lfw_chipset(data, shape_predictor, min_lfw))
    chips = np.concatenate([s.chips for s in sets])
    y, ms = _timed_embed(test, chips)
    r, ms_ref = _timed_embed(reference, chips)
    report = compare(y, r)
    report["source"] = "; ".join(s.source for s in sets)
    report["reference"] = "numpy forward pass of dlib_face_recognition_resnet_model_v1.dat (firmware_py.convert.dlib_resnet)"
    report["ms_per_chip"] = round(ms, 3)
    report["reference_ms_per_chip"] = round(ms_ref, 2)
    subsets, start = {}, 0
    for name, s in zip(("package_photos", "lfw"), sets, strict=False):
        sl = slice(start, start + len(s))
        subsets[name] = compare(y[sl], r[sl])
        if s.pairs:
            subsets[name].update(decisions(y[sl], r[sl], s.pairs))
        start += len(s)
    report["subsets"] = subsets
    if "lfw" in subsets and "decisions_flipped" in subsets["lfw"]:
        report["decisions_flipped"] = subsets["lfw"]["decisions_flipped"]
        report["pairs"] = subsets["lfw"]["pairs"]
    return report
