"""`kaoclock eval small-site`: the safe threshold for a gallery too small to estimate its own.

Below :data:`~firmware_py.gallery.calibration.SMALL_SITE_PERSONS` people the
gallery's own estimate (gallery/calibration.py) is either unusable (its
tolerance factor explodes: at 4 people the estimate falls to <= 0) or too
uncertain to trust, and the reader used to fall back to
``recognition.threshold``, the loosest choice, calibrated on lfw-dev's
mostly Western faces.  A tiny site of East Asian staff is exactly where that
lets strangers in.  This command measures the fixed threshold such a site
gets instead (``recognition.small_site_threshold``).

Protocol: random sites of each size in ``--sizes`` (default 2-9 people) are
drawn from one population at a time (one ``--data`` folder); every enrolled
person contributes their first ``--templates`` images (file-name order) as
templates and the rest as mated probes; every image of that folder's other
people is a stranger probe.  Each probe is scored by the reader's own
:class:`~firmware_py.gallery.matcher.Matcher` (cohort normalisation as the
reader does it at that size).

The written rule: the safe threshold is the loosest threshold whose
per-probe FPIR is <= ``--target`` (the gallery's target FPIR, 0.3%) at
*every* site size of *every* folder (the strictest of the per-size
thresholds: pooling would let the folder with the most probes speak for
the others), rounded down to 0.005.  Choose it on tuning
data (``@0/2`` splits) and report it on the rest (``--threshold T`` scores a
given threshold instead of choosing one).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.config import load
from firmware_py.errors import UsageError
from firmware_py.eval.identify import IMAGE_SUFFIXES, parse_split

DEFAULT_SIZES = (2, 3, 4, 5, 6, 7, 8, 9)


def _data_arg(text: str) -> tuple[Path, tuple[int, int] | None, Path | None]:
    """``ROOT[@K/N][,people=FILE]``; the split is over *all* identity folders (as lfw-dev's halves), before the people filter."""
    head, _, opt = text.partition(",")
    people = None
    if opt:
        key, _, value = opt.partition("=")
        if key != "people" or not value:
            raise argparse.ArgumentTypeError(f"{text!r}: expected ROOT[@K/N][,people=FILE]")
        people = Path(value)
    root, _, split = head.partition("@")
    if not root:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ROOT[@K/N][,people=FILE]")
    try:
        sp = parse_split(split) if split else None
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return Path(root), sp, people


def identities(root: Path, split: tuple[int, int] | None, people: Path | None) -> dict[str, list[Path]]:
    """Identity folders (sorted), split over all folders first, then only those in ``people``."""
    base = root / "images" if (root / "images").is_dir() else root
    if not base.is_dir():
        raise UsageError(f"{root} is not a folder of identity folders")
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    if split is not None:
        folders = [f for i, f in enumerate(folders) if i % split[1] == split[0]]
    if people is not None:
        try:
            wanted = {ln.split("\t")[0].split()[0] for ln in people.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
        except OSError as exc:
            raise UsageError(f"cannot read people file {people}: {exc.strerror}") from None
        folders = [f for f in folders if f.name in wanted]
    out = {f.name: sorted(p for p in f.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) for f in folders}
    return {k: v for k, v in out.items() if v}


def site_scores(desc: dict[str, np.ndarray], sizes: list[int], templates: int, draws: int, seed: int = 0) -> dict[int, dict[str, np.ndarray]]:
    """Per site size: top-1 scores of strangers, and of mated probes with whether their top-1 was right."""
    from firmware_py.gallery.matcher import Matcher
    from firmware_py.gallery.store import GalleryMatrix

    rng = np.random.default_rng(seed)
    names = sorted(desc)
    enrollable = [n for n in names if len(desc[n]) > templates]
    out: dict[int, dict[str, np.ndarray]] = {}
    for g in sizes:
        if g > len(enrollable) or g >= len(names):
            continue
        stranger, mated, right = [], [], []
        for _ in range(draws):
            site = sorted(rng.choice(enrollable, g, replace=False).tolist())
            rows = np.concatenate([desc[n][:templates] for n in site])
            ids = np.array([n for n in site for _ in range(templates)], dtype=object)
            m = Matcher(GalleryMatrix(rows, ids, {}, "eval", 0, ""), threshold=1.0)
            persons = [str(p) for p in m._persons]
            for n in site:
                for q in desc[n][templates:]:
                    i, s, _, _, _ = m._score(m.person_distances(q))
                    mated.append(s)
                    right.append(persons[i] == n)
            for n in names:
                if n not in site:
                    stranger += [m._score(m.person_distances(q))[1] for q in desc[n]]
        out[g] = {"stranger": np.asarray(stranger), "mated": np.asarray(mated), "right": np.asarray(right, bool)}
    return out


def rates_at(cell: dict[str, np.ndarray], t: float) -> tuple[float, float]:
    """(FNIR, FPIR) per probe at threshold t."""
    fpir = float((cell["stranger"] <= t).mean()) if len(cell["stranger"]) else 0.0
    fnir = float((~(cell["right"] & (cell["mated"] <= t))).mean()) if len(cell["mated"]) else 0.0
    return fnir, fpir


def choose_threshold(stranger: np.ndarray, target: float) -> float:
    """The loosest threshold at which at most ``target`` of these stranger scores pass, rounded down to 0.005."""
    s = np.sort(stranger)
    k = math.floor(target * len(s))
    t = float(s[min(k, len(s) - 1)]) - 1e-9  # strictly below the (k+1)-th stranger: at most k pass
    return math.floor(t / 0.005) * 0.005


def run(
    data: list[tuple[Path, tuple[int, int] | None, Path | None]],
    cfg: Any,
    sizes: list[int],
    templates: int,
    draws: int,
    target: float,
    threshold: float | None,
) -> dict[str, Any]:
    from firmware_py.eval.stills import describer_from_config
    from firmware_py.gallery.blas import limit_blas_threads

    limit_blas_threads(1)
    describer = describer_from_config(cfg)
    studies: list[dict[str, Any]] = []
    for n, (root, split, people) in enumerate(data):
        ids = identities(root, split, people)
        paths = [p for v in ids.values() for p in v]
        d = describer.describe_paths(paths)
        desc = {name: np.array([d.of(p) for p in v], np.float32) for name, v in ids.items()}
        cells = site_scores(desc, sizes, templates, draws, seed=n)
        if not cells:
            raise UsageError(f"{root}: {len(ids)} identities, too few for sites of {sizes} people with {templates} templates")
        studies.append({"root": str(root), "split": f"{split[0]}/{split[1]}" if split else None, "people": len(ids), "cells": cells})
    per_cell = [choose_threshold(c["stranger"], target) for s in studies for c in s["cells"].values()]
    chosen = min(per_cell) if threshold is None else threshold
    cap = cfg.recognition.threshold

    def report(cells: dict[int, dict[str, np.ndarray]]) -> dict[str, Any]:
        out = {}
        for g, c in cells.items():
            fn, fp = rates_at(c, chosen)
            fn0, fp0 = rates_at(c, cap)
            out[str(g)] = {
                "threshold_for_target": round(choose_threshold(c["stranger"], target), 4),
                "stranger_probes": len(c["stranger"]),
                "mated_probes": len(c["mated"]),
                "at_threshold": {"fnir": round(fn, 4), "fpir": round(fp, 4)},
                "at_config_threshold": {"fnir": round(fn0, 4), "fpir": round(fp0, 4)},
            }
        return out

    return {
        "rule": "loosest threshold with per-probe FPIR <= target at every size of every folder, rounded down to 0.005"
        if threshold is None
        else "given",
        "target_fpir": target,
        "threshold": round(chosen, 4),
        "config_threshold": cap,
        "templates": templates,
        "draws": draws,
        "align_source": cfg.vision.align.source,
        "mirror_average": describer.mirror,
        "studies": [{k: v for k, v in s.items() if k != "cells"} | {"sizes": report(s["cells"])} for s in studies],
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("small-site", help="the safe threshold for galleries too small to estimate their own (random tiny sites)")
    p.add_argument("--data", type=_data_arg, action="append", required=True, help="ROOT[@K/N][,people=FILE] (repeatable), one population each")
    p.add_argument("--sizes", default="2-9", help="site sizes in people, e.g. 2-9 or 3,5,8 (default 2-9)")
    p.add_argument("--templates", type=int, default=3, help="templates per enrolled person (default 3)")
    p.add_argument("--draws", type=int, default=100, help="random sites per size and folder (default 100)")
    p.add_argument("--target", type=float, help="per-probe FPIR the threshold keeps (default: gallery.target_fpir)")
    p.add_argument("--threshold", type=float, help="score this threshold instead of choosing one (reporting data)")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_small_site)


def parse_sizes(text: str) -> list[int]:
    try:
        if "-" in text:
            a, b = (int(x) for x in text.split("-"))
            sizes = list(range(a, b + 1))
        else:
            sizes = [int(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"--sizes {text!r}: expected A-B or a comma list of integers, e.g. 2-9") from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--sizes {text!r}: need at least one size, each >= 1 person")
    return sizes


def cmd_small_site(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    sizes = parse_sizes(args.sizes)
    target = cfg.gallery.target_fpir if args.target is None else args.target
    if not 0.0 < target < 0.5:
        raise UsageError(f"--target {target}: give a rate such as 0.003 (0.3%)")
    if args.templates < 1 or args.draws < 1:
        raise UsageError("--templates and --draws must be >= 1")
    if args.threshold is not None and not 0.0 < args.threshold < 2.0:
        raise UsageError(f"--threshold {args.threshold}: must be between 0 and 2 (dlib distance scale)")
    print(json.dumps(run(args.data, cfg, sizes, args.templates, args.draws, target, args.threshold), indent=2))
    return 0
