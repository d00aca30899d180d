"""`kaoclock eval lfw`: LFW pair verification through the full pipeline, 10-fold cross-validated.

With a View-2 style pairs file (first line ``10 300``: 10 folds of 300 same
+ 300 different pairs) its own folds are used; with a single-count file
(``pairsDevTrain.txt``: ``1100``) the same and the different pairs are each
dealt round-robin into 10 folds.  For each fold the threshold that maximises
accuracy on the other nine is applied to it.

``--score raw`` (default) scores a pair by the descriptor distance;
``--score cohort`` by the reader's 1:N normalisation
(:func:`~firmware_py.gallery.matcher.pair_scores`: the matcher's person
density and probe cohort, same weights), with a cohort learned, per fold,
only from the nine training folds' images of people who do not appear in
the scored fold (and never the pair's own people).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_py.config import load
from firmware_py.errors import UsageError


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool
    fold: int


def image_path(images: Path, name: str, n: int) -> Path:
    return images / name / f"{name}_{n:04d}.jpg"


def read_pairs(path: Path, images: Path) -> list[Pair]:
    """Parse an LFW pairs file into pairs with their fold."""
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as exc:
        raise UsageError(f"cannot read the pairs file {path}: {exc.strerror}") from None
    head = [int(x) for x in lines[0]]
    rows = lines[1:]
    folds, per = (head[0], head[1]) if len(head) == 2 else (1, head[0])
    pairs: list[Pair] = []
    for i, r in enumerate(rows):
        if len(r) == 3:
            a, b, same = image_path(images, r[0], int(r[1])), image_path(images, r[0], int(r[2])), True
        elif len(r) == 4:
            a, b, same = image_path(images, r[0], int(r[1])), image_path(images, r[2], int(r[3])), False
        else:
            raise UsageError(f"{path} line {i + 2}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {' '.join(r)!r}")
        pairs.append(Pair(a, b, same, i // (2 * per) if folds > 1 else -1))
    if folds == 1:  # deal same and different pairs round-robin into 10 folds
        k = {True: 0, False: 0}
        dealt = []
        for p in pairs:
            dealt.append(Pair(p.a, p.b, p.same, k[p.same] % 10))
            k[p.same] += 1
        pairs = dealt
    missing = sorted({str(p) for pr in pairs for p in (pr.a, pr.b) if not p.is_file()})
    if missing:
        raise UsageError(f"{len(missing)} image(s) named in {path} are missing under {images}, e.g. {missing[0]}")
    return pairs


def best_threshold(d: np.ndarray, same: np.ndarray) -> float:
    """The distance threshold (same if d <= t) that maximises accuracy on (d, same)."""
    cand = np.unique(d)
    mids = np.concatenate([[cand[0] - 1e-6], (cand[:-1] + cand[1:]) / 2, [cand[-1] + 1e-6]])
    order = np.argsort(d)
    ds, ss = d[order], same[order]
    # accuracy(t) = (#same with d<=t + #diff with d>t) / n, evaluated at every midpoint
    acc = [((ss & (ds <= t)).sum() + (~ss & (ds > t)).sum()) for t in mids]
    return float(mids[int(np.argmax(acc))])


def cross_validate(d: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[list[float], list[float]]:
    accs, ts = [], []
    for f in sorted(set(folds.tolist())):
        test = folds == f
        t = best_threshold(d[~test], same[~test])
        accs.append(float(((d[test] <= t) == same[test]).mean()))
        ts.append(t)
    return accs, ts


def cohort_scores(pairs: list[Pair], desc, embedder_version: str) -> tuple[np.ndarray, list[int]]:  # type: ignore[no-untyped-def]
    """Per fold, every pair scored by :func:`pair_scores` against that fold's cohort: (scores (folds, pairs), cohort sizes)."""
    from firmware_py.gallery.matcher import Matcher, pair_scores
    from firmware_py.gallery.store import GalleryMatrix

    who = [(p.a.parent.name, p.b.parent.name) for p in pairs]
    a = np.array([desc.of(p.a) for p in pairs], np.float32)
    b = np.array([desc.of(p.b) for p in pairs], np.float32)
    folds = sorted({p.fold for p in pairs})
    out, sizes = np.empty((len(folds), len(pairs))), []
    for n, f in enumerate(folds):
        scored = {name for p, names in zip(pairs, who, strict=True) if p.fold == f for name in names}
        images = sorted({x for p in pairs if p.fold != f for x in (p.a, p.b) if x.parent.name not in scored})
        ids = np.array([x.parent.name for x in images], dtype=object)
        gm = GalleryMatrix(np.array([desc.of(x) for x in images], np.float32), ids, {}, embedder_version, 0, "")
        cohort = Matcher(gm, threshold=1.0)
        index = {str(pid): i for i, pid in enumerate(cohort._persons)}
        exclude = [{index[name] for name in names if name in index} for names in who]
        out[n] = pair_scores(cohort, a, b, exclude)
        sizes.append(cohort.persons)
    return out, sizes


def run(root: Path, pairs_file: Path, cfg, mirror: bool | None = None, face: str = "centre", scoring: str = "raw") -> dict:  # type: ignore[no-untyped-def]
    from firmware_py.eval.stills import describer_from_config

    images = root / "images" if (root / "images").is_dir() else root
    pairs = read_pairs(pairs_file, images)
    paths = sorted({p for pr in pairs for p in (pr.a, pr.b)})
    describer = describer_from_config(cfg, mirror=mirror, face=face)  # type: ignore[arg-type]
    desc = describer.describe_paths(paths)
    d = np.array([float(np.linalg.norm(desc.of(p.a) - desc.of(p.b))) for p in pairs])
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    extra = {}
    if scoring == "cohort":
        per_fold, sizes = cohort_scores(pairs, desc, describer.embedder.version)
        accs, ts = [], []
        for n, f in enumerate(sorted(set(folds.tolist()))):
            test = folds == f
            t = best_threshold(per_fold[n][~test], same[~test])
            accs.append(float(((per_fold[n][test] <= t) == same[test]).mean()))
            ts.append(t)
        extra = {"cohort_persons_min": min(sizes), "cohort_persons_max": max(sizes)}
    else:
        accs, ts = cross_validate(d, same, folds)
    t_cfg = cfg.recognition.threshold
    return {
        "pairs": len(pairs),
        "accuracy_mean": round(float(np.mean(accs)), 4),
        "accuracy_std": round(float(np.std(accs)), 4),
        "threshold_mean": round(float(np.mean(ts)), 4),
        "detection_failures": desc.detection_failures,
        "images": len(paths),
        "accuracy_at_0.6": round(float(((d <= 0.6) == same).mean()), 4),
        f"accuracy_at_default_{t_cfg:g}": round(float(((d <= t_cfg) == same).mean()), 4),
        "embedder": describer.embedder.version,
        "mirror_average": describer.mirror,
        "face": describer.face,
        "score": scoring,
        **extra,
        "describe_s": round(desc.seconds, 1),
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lfw", help="LFW pair verification through detect, align, embed (10-fold CV)")
    p.add_argument("--root", type=Path, required=True, help="LFW folder (with images/<name>/<name>_NNNN.jpg)")
    p.add_argument("--pairs", type=Path, required=True, help="pairs file (pairs.txt or pairsDevTrain.txt)")
    p.add_argument("--config", help="TOML config file (front-end and embedder settings)")
    p.add_argument("--mirror", choices=["config", "on", "off"], default="config", help="mirrored-chip averaging (default: the config)")
    p.add_argument("--face", choices=["centre", "largest"], default="centre", help="face described per image (default: the labelled, centred one)")
    p.add_argument("--score", choices=["raw", "cohort"], default="raw", help="pair score: descriptor distance, or the reader's cohort normalisation")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_lfw)


def cmd_lfw(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    mirror = None if args.mirror == "config" else args.mirror == "on"
    print(json.dumps(run(args.root, args.pairs, cfg, mirror, args.face, args.score), indent=2))
    return 0
