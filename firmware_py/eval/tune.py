"""`kaoclock eval tune`: the matcher's cohort weights and the default threshold, from a tuning split.

Both are chosen on one part of a data set and reported on another, so the
figures in gallery/README.md are not measured on the data that chose them::

    kaoclock eval tune --root lfw-dev/images --split 0/2 --json      # choose (tuning half)
    kaoclock eval identify --root lfw-dev/images --split 1/2 --json  # report (the other half)

The open-set protocol of ``eval identify`` is run on the split at each
gallery size of ``--sizes`` (0 = every enrolled identity).  Each
(gamma, beta) of the grid is scored by its mean FNIR at FPIR 0.3% over
those sizes; the winner's weights are the matcher's (``GAMMA``, ``BETA``
in gallery/matcher.py).  With those weights, ``default_threshold`` is the
loosest score whose FPIR on the split's full gallery is <= ``--target-fpir``:
that is ``recognition.threshold``'s default (config/sections/recognition.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_py.config import load
from firmware_py.eval.identify import Described, describe_protocol, parse_split, rates, score, threshold_at_fpir

if TYPE_CHECKING:
    from firmware_py.config import Config

GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0)
BETAS = (0.0, 0.15, 0.3, 0.45, 0.6)
OBJECTIVE_FPIR = 0.003


def fnir_at(d: Described, gamma: float, beta: float, k: int, fpir: float) -> tuple[float, float]:
    """(FNIR at the loosest threshold with FPIR <= fpir, that threshold) for one weighting."""
    from firmware_py.gallery.matcher import Matcher

    m = Matcher(d.matrix(), threshold=1.0, normalise=gamma > 0 or beta > 0, k=k, gamma=gamma, beta=beta)
    ok, md, nd = score(d, m)
    t = threshold_at_fpir(nd, fpir)
    return rates(t, ok, md, nd)[0], t


def run(root: Path, cfg: Config, split: tuple[int, int] | None, sizes: list[int], target_fpir: float, k: int) -> dict[str, Any]:
    sets = {g: describe_protocol(root, cfg, None, g or None, split) for g in sizes}
    grid: list[dict[str, Any]] = []
    for gamma, beta in itertools.product(GAMMAS, BETAS):
        per = {str(len(d.proto.enrolled)): round(fnir_at(d, gamma, beta, k, OBJECTIVE_FPIR)[0], 4) for d in sets.values()}
        grid.append({"gamma": gamma, "beta": beta, "fnir_at_fpir_0.003": per, "mean": round(float(np.mean(list(per.values()))), 4)})
    best = min(grid, key=lambda r: (r["mean"], r["gamma"] + r["beta"]))
    full = sets[sizes[0]]
    _, t = fnir_at(full, best["gamma"], best["beta"], k, target_fpir)
    return {
        "split": f"{split[0]}/{split[1]}" if split else None,
        "gallery_sizes": [len(d.proto.enrolled) for d in sets.values()],
        "k": k,
        "best": {"gamma": best["gamma"], "beta": best["beta"], "mean_fnir_at_fpir_0.003": best["mean"]},
        "default_threshold": {"value": round(t, 2), "exact": round(t, 4), "target_fpir": target_fpir, "gallery": len(full.proto.enrolled)},
        "grid": grid,
        "embedder": full.embedder,
        "align_source": cfg.vision.align.source,
        "mirror_average": full.mirror,
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="choose the matcher's cohort weights and the default threshold on a tuning split")
    p.add_argument("--root", type=Path, required=True, help="folder of identity folders (or with images/<identity>/)")
    p.add_argument("--split", type=parse_split, default=(0, 2), help="identities K, K+N, ... in sorted order (default 0/2)")
    p.add_argument("--sizes", default="0,500,50", help="gallery sizes to average over (0 = all enrolled; default 0,500,50)")
    p.add_argument("--target-fpir", type=float, default=0.001, help="FPIR the default threshold is set for (default 0.001)")
    p.add_argument("--k", type=int, default=5, help="cohort size (default 5)")
    p.add_argument("--config", help="TOML config file (front-end and embedder settings)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    sizes = [int(x) for x in args.sizes.split(",")]
    print(json.dumps(run(args.root, load(args.config), args.split, sizes, args.target_fpir, args.k), indent=2))
    return 0
