"""`kaoclock eval align-variants`: accuracy and cost of each embedding path in one pass.

The reader can describe a face by FaceMesh's chip, the detector's chip or
both (``[vision.align] source``), each with or without its mirror image
(``recognition.mirror_average``): 1, 2 or 4 embedder invokes per embedded
frame.  Running ``eval lfw`` and ``eval identify`` once per path would
describe every image six times; here each image is cut into both chips by
the reader's own front-end (``source = "both"``) and the four descriptors
(FaceMesh chip, its mirror, detector chip, its mirror) are kept, so every
path's descriptor is the same mean :func:`describe_face` computes.  Each
path is then scored with ``eval lfw``'s 10-fold protocol and ``eval
identify``'s open-set protocol (same functions), and its embedder cost per
embedded frame is timed on real chips.

Where FaceMesh finds no landmarks the reader falls back to the detector chip
in every mode, and so does this pass (counted in ``no_landmarks``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.config import load, with_changes
from firmware_py.errors import UsageError
from firmware_py.eval.identify import Described, build_protocol, identity_folders, parse_split

# (name, source, mirror) -> which of the four raw descriptors are averaged.
VARIANTS: dict[str, tuple[int, ...]] = {
    "facemesh": (0,),
    "facemesh+mirror": (0, 1),
    "detector": (2,),
    "detector+mirror": (2, 3),
    "both": (0, 2),
    "both+mirror": (0, 1, 2, 3),
}


def variant_descriptor(raw: np.ndarray, name: str) -> np.ndarray:
    """``raw`` (..., 4, 128) -> the variant's descriptor (..., 128), averaged as describe_face does."""
    return raw[..., list(VARIANTS[name]), :].mean(axis=-2, dtype=np.float64).astype(np.float32)


class RawDescriber:
    """Four raw descriptors per still (FaceMesh chip, mirror, detector chip, mirror), cached on disk."""

    def __init__(self, cfg: Any) -> None:
        from firmware_py.eval.stills import _Cache, _front_end_code_hash, cache_dir, describer_from_config

        self.still = describer_from_config(with_changes(cfg, {"vision.align.source": "both"}), mirror=False)
        self.embedder = self.still.embedder
        key = json.dumps({"raw4": 1, "inner": self.still.key, "code": _front_end_code_hash()}, sort_keys=True)
        self._cache = _Cache(cache_dir() / f"raw4-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz")
        self.no_landmarks = 0
        self.detection_failures = 0
        self.chip_samples: list[np.ndarray] = []

    def describe(self, paths: list[Path]) -> dict[Path, np.ndarray]:
        from firmware_py.gallery.enrol import load_photo

        t0 = time.perf_counter()
        out: dict[Path, np.ndarray] = {}
        todo = []
        for p in paths:
            hit = self._cache.get(p)
            if hit is None:
                todo.append(p)
            else:
                out[p] = hit[0].reshape(4, 128)
                self.detection_failures += int(not hit[1])
        for n, p in enumerate(todo):
            chips, ok = self.still.chips(load_photo(p))
            if len(chips) == 1:  # no FaceMesh points (or no face): the detector / centre chip stands for both
                self.no_landmarks += int(ok)
                chips = np.concatenate([chips, chips])
            both = np.stack([chips[0], chips[0][:, ::-1], chips[1], chips[1][:, ::-1]])
            raw = self.embedder.embed(np.ascontiguousarray(both))
            out[p] = raw
            self.detection_failures += int(not ok)
            self._cache.put(p, raw.reshape(-1), ok)
            if len(self.chip_samples) < 64 and ok:
                self.chip_samples.append(chips[0])
            if (n + 1) % 250 == 0:
                print(f"  described {n + 1}/{len(todo)} images ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
                self._cache.save()
        self._cache.save()
        return out


def embed_cost_ms(embedder: Any, chips: list[np.ndarray], rounds: int = 3) -> dict[str, float]:
    """Median ms of one embedded frame's embedder work (1, 2 or 4 invokes), interleaved so load hits all alike."""
    if not chips:
        return {}
    times: dict[int, list[float]] = {1: [], 2: [], 4: []}
    for _ in range(rounds):
        for c in chips:
            for n in (1, 2, 4):
                batch = np.ascontiguousarray(np.stack([c, c[:, ::-1], c, c[:, ::-1]][:n]))
                t = time.perf_counter()
                embedder.embed(batch)
                times[n].append((time.perf_counter() - t) * 1e3)
    return {str(n): round(float(np.median(v)), 3) for n, v in times.items()}


def lfw_accuracy(raw: dict[Path, np.ndarray], pairs: list[Any], name: str) -> dict[str, float]:
    from firmware_py.eval.lfw import cross_validate

    a = variant_descriptor(np.array([raw[p.a] for p in pairs]), name)
    b = variant_descriptor(np.array([raw[p.b] for p in pairs]), name)
    d = np.linalg.norm(a - b, axis=1)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    accs, _ = cross_validate(d, same, folds)
    return {"accuracy_mean": round(float(np.mean(accs)), 4), "accuracy_std": round(float(np.std(accs)), 4)}


def identify_figures(raw: dict[Path, np.ndarray], root: Path, split: tuple[int, int] | None, cfg: Any, name: str, embedder: str) -> dict[str, Any]:
    from firmware_py.eval.identify import TARGETS, rates, score, threshold_at_fpir
    from firmware_py.gallery.matcher import Matcher
    from firmware_py.pipeline.build import estimate_threshold

    proto = build_protocol(identity_folders(root, None, split))

    def desc(paths: list[Path]) -> np.ndarray:
        return variant_descriptor(np.array([raw[p] for p in paths]).reshape(-1, 4, 128), name)

    d = Described(proto, desc(proto.templates), desc([p for p, _ in proto.mated]), desc(proto.nonmated), 0, embedder, True, 0.0)
    gm = d.matrix()
    m_ok, m_d, n_d = score(d, Matcher(gm, threshold=cfg.recognition.threshold))
    out: dict[str, Any] = {"gallery": len(proto.enrolled), "rank1": round(float(m_ok.mean()), 4), "fnir_at_fpir": {}}
    for f in TARGETS:
        out["fnir_at_fpir"][f] = round(rates(threshold_at_fpir(n_d, float(f)), m_ok, m_d, n_d)[0], 4)
    est = estimate_threshold(cfg, gm)
    t = est.value
    fnir, fpir = rates(t, m_ok, m_d, n_d)
    out["reader_threshold"] = {"value": round(t, 4), "fnir": round(fnir, 4), "fpir": round(fpir, 4)}
    return out


def all_paths(root: Path, split: tuple[int, int] | None) -> list[Path]:
    proto = build_protocol(identity_folders(root, None, split))
    return sorted(set(proto.templates) | {p for p, _ in proto.mated} | set(proto.nonmated))


def run(lfw_root: Path, pairs_file: Path, identify: list[tuple[Path, tuple[int, int] | None]], cfg: Any) -> dict[str, Any]:
    from firmware_py.eval.lfw import read_pairs
    from firmware_py.gallery.blas import limit_blas_threads

    limit_blas_threads(1)
    images = lfw_root / "images" if (lfw_root / "images").is_dir() else lfw_root
    pairs = read_pairs(pairs_file, images)
    paths = {p for pr in pairs for p in (pr.a, pr.b)}
    for root, split in identify:
        paths |= set(all_paths(root, split))
    rd = RawDescriber(cfg)
    t0 = time.perf_counter()
    raw = rd.describe(sorted(paths))
    out: dict[str, Any] = {
        "images": len(raw),
        "detection_failures": rd.detection_failures,
        "no_landmarks": rd.no_landmarks,
        "embedder": rd.embedder.version,
        "describe_s": round(time.perf_counter() - t0, 1),
        "embedder_ms_per_embedded_frame": {},
        "variants": {},
    }
    cost = embed_cost_ms(rd.embedder, rd.chip_samples or [rd.still.chips(np.zeros((250, 250, 3), np.uint8))[0][0]])
    for name, idx in VARIANTS.items():
        v: dict[str, Any] = {"invokes": len(idx), "embedder_ms": cost.get(str(len(idx))), "lfw": lfw_accuracy(raw, pairs, name)}
        for root, split in identify:
            label = root.name if root.name != "images" else root.parent.name
            v[f"identify:{label}" + (f":{split[0]}/{split[1]}" if split else "")] = identify_figures(raw, root, split, cfg, name, rd.embedder.version)
        out["variants"][name] = v
    out["embedder_ms_per_embedded_frame"] = cost
    return out


def _identify_arg(text: str) -> tuple[Path, tuple[int, int] | None]:
    root, _, split = text.partition("@")
    return Path(root), parse_split(split) if split else None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align-variants", help="LFW and 1:N accuracy plus embedder cost of each alignment / mirroring variant, in one pass")
    p.add_argument("--root", type=Path, required=True, help="LFW folder (with images/<name>/<name>_NNNN.jpg)")
    p.add_argument("--pairs", type=Path, required=True, help="pairs file (pairsDevTrain.txt)")
    p.add_argument(
        "--identify",
        type=_identify_arg,
        action="append",
        default=[],
        help="identity folders for eval identify's protocol, ROOT or ROOT@K/N (repeatable)",
    )
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_variants)


def cmd_variants(args: argparse.Namespace) -> int:
    if not args.pairs.is_file():
        raise UsageError(f"--pairs {args.pairs}: no such file")
    print(json.dumps(run(args.root, args.pairs, args.identify, load(args.config)), indent=2))
    return 0
