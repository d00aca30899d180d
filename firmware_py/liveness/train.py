"""Train the texture-cue logistic regression from the shared data set (numpy only, reproducible).

    python -m firmware_py.liveness.train --manifest $KAOCLOCK_DATA/liveness-dev.csv \\
        --out models/liveness_texture_v1.json --heldout-ids /tmp/liveness-heldout.txt

What it does, step by step:

1. Takes the manifest's stills (kind ``image``) and finds the face in each
   through the daemon's own front-end (:mod:`firmware_py.liveness.frontend`;
   or, with ``--boxes``, from a CSV ``path,x0,y0,x1,y1`` of boxes that the
   front-end produced earlier, so a re-run is cheap), then computes
   :func:`firmware_py.liveness.texture.frame_features` on it.
2. Groups the stills into *units* that are held out whole: the manifest's
   ``subject`` (a NUAA person), except that a subject named in
   ``--split-subject NAME:K`` (the replay crops: one webcam, several sessions)
   is cut into K contiguous blocks of its file numbers, per folder.
3. Leave-one-unit-out cross-validation on the training units: the
   out-of-fold scores pick the operating threshold (the one that best meets the
   goals: print APCER <= 1 %, replay APCER <= 2 %, BPCER <= 3 %) and are
   reported.
4. Fits the final model on the training units only and reports it on the
   held-out units (``--holdout``), which it never saw; writes the held-out
   presentations' ids (every kind) so ``kaoclock eval liveness --ids`` can
   evaluate exactly them.
5. Writes the coefficients with a build record (inputs' sha256, units,
   regularisation, threshold, metrics).  Deterministic: no random numbers.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware_py.liveness.fusion import TextureModel
from firmware_py.liveness.presentations import Presentation, load_rgb, read_manifest
from firmware_py.liveness.texture import FRAME_FEATURE_NAMES, frame_features

DEFAULT_HOLDOUT = "nuaa-0007,nuaa-0008,nuaa-0009,replaycrop-b4"
GOALS = {"print": 0.01, "replay": 0.02, "bpcer": 0.03}


def fit_logistic(x: NDArray[np.float64], y: NDArray[np.float64], lam: float) -> TextureModel:
    """Class-balanced L2 logistic regression by Newton's method on standardised features."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    z = np.c_[(x - mean) / scale, np.ones(len(x))]
    sw = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    w = np.zeros(z.shape[1])
    reg = lam * len(y) * np.r_[np.ones(z.shape[1] - 1), 0.0]
    for _ in range(100):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -30, 30)))
        grad = z.T @ ((p - y) * sw) + reg * w
        hess = z.T @ (z * (p * (1 - p) * sw)[:, None]) + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return TextureModel(FRAME_FEATURE_NAMES, mean, scale, w[:-1], float(w[-1]))


def rates(scores: NDArray[np.float64], kinds: NDArray[np.str_], thr: float) -> dict[str, float]:
    """BPCER and APCER per attack type of per-still scores at ``thr`` (kinds: 'live' or the attack type)."""
    out = {"bpcer": float((scores[kinds == "live"] < thr).mean()) if (kinds == "live").any() else float("nan")}
    for a in sorted(str(v) for v in set(kinds) - {"live"}):
        out[a] = float((scores[kinds == a] >= thr).mean())
    return out


def pick_threshold(scores: NDArray[np.float64], kinds: NDArray[np.str_]) -> float:
    """The threshold minimising the worst goal-relative error (APCER print / 1 %, replay / 2 %, BPCER / 3 %)."""
    best, best_thr = np.inf, 0.0
    for thr in np.arange(-4.0, 6.0001, 0.05):
        r = rates(scores, kinds, float(thr))
        worst = max(r[k] / GOALS.get(k, 0.02) for k in r)
        if worst < best - 1e-12:
            best, best_thr = worst, float(thr)
    return round(best_thr, 2) + 0.0  # never -0.0


def units(presentations: list[Presentation], split: dict[str, int]) -> dict[str, str]:
    """id -> hold-out unit (subject, or subject-b<block> for subjects cut into blocks)."""
    out = {p.id: p.subject for p in presentations}
    for subject, k in split.items():
        by_folder: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for p in presentations:
            if p.subject == subject:
                nums = re.findall(r"\d+", Path(p.path).name)
                by_folder.setdefault((str(Path(p.path).parent), p.kind), []).append((int(nums[-1]) if nums else 0, p.id))
        for items in by_folder.values():
            items.sort()
            for rank, (_, pid) in enumerate(items):
                out[pid] = f"{subject}-b{rank * k // len(items)}"
    return out


def read_boxes(path: Path) -> dict[str, tuple[float, float, float, float] | None]:
    boxes: dict[str, tuple[float, float, float, float] | None] = {}
    with path.open() as fh:
        for row in csv.reader(fh):
            if not row or row[0] == "path":
                continue
            boxes[row[0]] = None if row[1] == "" else (float(row[1]), float(row[2]), float(row[3]), float(row[4]))
    return boxes


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m firmware_py.liveness.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True, help="presentation manifest (e.g. $KAOCLOCK_DATA/liveness-dev.csv)")
    ap.add_argument("--out", type=Path, required=True, help="coefficient file to write (models/liveness_texture_v1.json)")
    ap.add_argument("--boxes", type=Path, help="CSV path,x0,y0,x1,y1 of face boxes from the front-end (path relative to the manifest)")
    ap.add_argument("--holdout", default=DEFAULT_HOLDOUT, help=f"units never trained on (default {DEFAULT_HOLDOUT})")
    ap.add_argument("--split-subject", default="replaycrop:5", help="SUBJECT:K cuts one subject into K blocks of file numbers")
    ap.add_argument("--lam", default="1e-3", help="L2 regularisation per sample; a comma list is a grid chosen by leave-one-unit-out")
    ap.add_argument("--heldout-ids", type=Path, help="write the held-out presentations' ids here (for eval --ids)")
    ap.add_argument("--config", type=Path, help="kaoclock config for the front-end (default: built-in)")
    args = ap.parse_args(argv)

    pres = read_manifest(args.manifest)
    split = {s.split(":")[0]: int(s.split(":")[1]) for s in args.split_subject.split(",") if s}
    unit_of = units(pres, split)
    holdout = {u for u in args.holdout.split(",") if u}
    stills = [p for p in pres if p.kind == "image"]

    boxes = read_boxes(args.boxes) if args.boxes else None
    front = None
    if boxes is None:
        from firmware_py.config import load
        from firmware_py.liveness.frontend import FrontEnd, largest

        front = FrontEnd(load(args.config))
    feats, labels, kinds, unit_list, fta = [], [], [], [], 0
    for i, p in enumerate(stills):
        image = load_rgb(p.root / p.path)
        if boxes is not None:
            box = boxes.get(p.path)
        else:
            assert front is not None
            front.reset()
            _, obs = front.analyze(image, 0.0, 0, p.id)
            o = largest(obs)
            box = None if o is None else tuple(float(v) for v in o.detection.box)
        if box is None:
            fta += 1
            continue
        feats.append(frame_features(image, box))
        labels.append(1.0 if p.label == "live" else 0.0)
        kinds.append("live" if p.label == "live" else p.attack_type)
        unit_list.append(unit_of[p.id])
        if i % 500 == 0:
            print(f"features {i}/{len(stills)}", file=sys.stderr)
    x, y = np.array(feats), np.array(labels)
    k, u = np.array(kinds), np.array(unit_list)
    train = ~np.isin(u, list(holdout))

    # Leave-one-unit-out on the training units: out-of-fold scores choose the
    # regularisation and the threshold; the held-out units play no part.
    grid: dict[float, tuple[tuple[float, float], float, NDArray[np.float64]]] = {}
    for lam in (float(v) for v in args.lam.split(",")):
        oof = np.zeros(len(y))
        for unit in sorted(set(u[train])):
            te = u == unit
            m = fit_logistic(x[train & ~te], y[train & ~te], lam)
            oof[te] = [m.logit(v) for v in x[te]]
        t = pick_threshold(oof[train], k[train])
        r = rates(oof[train], k[train], t)
        ratios = [r[kk] / GOALS.get(kk, 0.02) for kk in r]
        grid[lam] = ((round(max(ratios), 6), round(sum(ratios), 6)), t, oof)  # worst goal ratio, then the sum
        print(f"lam {lam:g}: threshold {t}, out-of-fold {json.dumps(r)}", file=sys.stderr)
    lam = min(grid, key=lambda v: grid[v][0])
    _, thr, oof = grid[lam]
    model = fit_logistic(x[train], y[train], lam)
    held = np.array([model.logit(v) for v in x[~train]]) if (~train).any() else np.zeros(0)
    report: dict[str, Any] = {
        "threshold": thr,
        "lam": lam,
        "lam_grid_goal_ratios_worst_sum": {f"{v:g}": [round(g[0][0], 3), round(g[0][1], 3)] for v, g in grid.items()},
        "n_stills": len(y),
        "fta_stills": fta,
        "train_units": sorted(set(u[train])),
        "holdout_units": sorted(set(u[~train])),
        "oof_train_at_threshold": {kk: round(v, 4) for kk, v in rates(oof[train], k[train], thr).items()},
        "oof_per_unit": {unit: {kk: round(v, 4) for kk, v in rates(oof[u == unit], k[u == unit], thr).items()} for unit in sorted(set(u[train]))},
        "holdout_stills_at_threshold": {kk: round(v, 4) for kk, v in rates(held, k[~train], thr).items()} if len(held) else {},
    }
    build = {
        "script": "python -m firmware_py.liveness.train",
        "args": {kk: str(v) for kk, v in vars(args).items()},
        "manifest_sha256": sha256(args.manifest),
        "boxes_sha256": sha256(args.boxes) if args.boxes else None,
        "seed": None,  # deterministic Newton solve: nothing random
        **report,
    }
    final = TextureModel(model.features, model.mean, model.scale, model.weights, model.bias, "liveness_texture_v1", build)
    args.out.write_text(final.to_json() + "\n")
    if args.heldout_ids:
        args.heldout_ids.write_text("".join(f"{p.id}\n" for p in pres if unit_of[p.id] in holdout))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
