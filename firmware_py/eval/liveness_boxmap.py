"""Measure the BlazeFace -> RetinaFace-style box mapping the MiniFASNet nets need, by subject-grouped cross-validation.

The nets were trained on crops around the box of an OpenCV-DNN RetinaFace
detector, which this project does not have.  So the mapping
(:class:`firmware_py.liveness.learned.BoxMap`: width scale ``sx``, height
scale ``sy``, centre shift ``dy`` in box heights) is measured on the nets'
own behaviour: every dev still goes through the daemon's front-end (BlazeFace,
FaceMesh), the two nets score crops of each mapping of a grid, and the mapping
whose ensemble real-probability has the lowest log-loss (real vs attack) wins.
The choice is made by grouped cross-validation, units held out whole (NUAA
subjects, replay-crop blocks), and reported per fold, so the figure for the
chosen mapping is out-of-fold.  One mapping for every fold means a flat
optimum, not a tuned one.

    python -m firmware_py.eval.liveness_boxmap --manifest $KAOCLOCK_DATA/liveness-dev.csv --cache /tmp/boxmap.npz --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SX = (1.0, 1.1, 1.2, 1.3, 1.4)
SY = (1.1, 1.2, 1.3, 1.4, 1.5, 1.6)
DY = (0.0, 0.05, 0.1, 0.15)


def collect(
    manifest: Path, cache: Path | None, limit: int | None, say: Any, grid_axes: tuple[tuple[float, ...], ...] = (SX, SY, DY)
) -> dict[str, Any]:
    from firmware_py.config import load
    from firmware_py.eval.liveness_train import SPLIT, units
    from firmware_py.liveness.frontend import FrontEnd, largest
    from firmware_py.liveness.learned import BoxMap, load_learned
    from firmware_py.liveness.presentations import frames, read_manifest

    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return {k: z[k] for k in z.files}
    cfg = load(None)
    front = FrontEnd(cfg)
    model = load_learned(cfg.models.dir)
    everything = read_manifest(manifest)
    # The units every liveness tool holds out: NUAA subjects; each replay-crop folder cut into 5 blocks of
    # contiguous file numbers, block b of real and fake one unit (liveness_train.units).
    unit_of = units(everything, SPLIT)
    pres = [p for p in everything if p.kind == "image"]
    if limit:
        pres = pres[:: max(1, len(pres) // limit)]
    grid = list(itertools.product(*grid_axes))
    probs, labels, unit_list, kinds, boxes, shapes = [], [], [], [], [], []
    t0 = time.perf_counter()
    for n, p in enumerate(pres):
        front.reset()
        ts, image = next(iter(frames(p)))
        _, obs = front.analyze(image, ts, 0, p.id)
        o = largest(obs)
        if o is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in o.detection.box)
        box = (x0, y0, x1, y1)
        row = []
        for sx, sy, dy in grid:
            m = BoxMap(sx, sy, dy)
            pr = model.probabilities(image, m.apply(box))
            row.append([pr["minifasnet_v2"][1], pr["minifasnet_v1se"][1]])
        probs.append(row)
        labels.append(int(p.is_attack))
        unit_list.append(unit_of[p.id])
        kinds.append(p.attack_type or "live")
        boxes.append(box)
        shapes.append(image.shape[:2])
        if n % 200 == 0:
            say(f"{n}/{len(pres)} stills, {time.perf_counter() - t0:.0f} s")
    out = {
        "probs": np.asarray(probs, np.float32),
        "attack": np.asarray(labels),
        "units": np.asarray(unit_list),
        "kinds": np.asarray(kinds),
        "boxes": np.asarray(boxes),
        "shapes": np.asarray(shapes),
        "grid": np.asarray(grid),
    }
    if cache is not None:
        np.savez_compressed(cache, **out)  # type: ignore[arg-type]  # numpy's stub types **kwds as one bool
    return out


def logloss(real: np.ndarray, attack: np.ndarray) -> float:
    p = np.clip(real, 1e-4, 1 - 1e-4)
    return float(-np.mean(np.where(attack == 1, np.log(1 - p), np.log(p))))


def folds_of(units: np.ndarray, k: int = 5) -> dict[str, int]:
    """Units dealt round-robin to k folds (NUAA subjects in order; replay block b to fold b)."""
    out: dict[str, int] = {}
    nuaa = sorted(u for u in set(units.tolist()) if not u.startswith("replaycrop"))
    for i, u in enumerate(nuaa):
        out[u] = i % k
    for u in set(units.tolist()):
        if u.startswith("replaycrop"):
            out[u] = int(u[-1]) % k
    return out


def measure(d: dict[str, Any], k: int = 5) -> dict[str, Any]:
    real = d["probs"].mean(axis=2)  # (N, grid): the ensemble's real probability
    attack = d["attack"]
    fold = np.array([folds_of(d["units"], k)[u] for u in d["units"]])
    grid = [tuple(float(v) for v in g) for g in d["grid"]]
    per_fold = []
    for f in range(k):
        tr = fold != f
        losses = [logloss(real[tr, j], attack[tr]) for j in range(len(grid))]
        best = int(np.argmin(losses))
        te = fold == f
        per_fold.append(
            {
                "fold": f,
                "units": sorted(set(d["units"][te].tolist())),
                "chosen": grid[best],
                "held_out_logloss": round(logloss(real[te, best], attack[te]), 4),
            }
        )
    all_losses = [logloss(real[:, j], attack) for j in range(len(grid))]
    order = np.argsort(all_losses)
    ident = grid.index((1.0, 1.0, 0.0)) if (1.0, 1.0, 0.0) in grid else None
    oof = np.concatenate([real[fold == pf["fold"], grid.index(pf["chosen"])] for pf in per_fold])  # type: ignore[arg-type]
    oof_attack = np.concatenate([attack[fold == pf["fold"]] for pf in per_fold])
    return {
        "n": len(attack),
        "folds": per_fold,
        "oof_logloss": round(logloss(oof, oof_attack), 4),
        "all_data_best": [{"map": grid[j], "logloss": round(all_losses[j], 4)} for j in order[:8]],
        "identity_logloss": round(all_losses[ident], 4) if ident is not None else None,
        "worst_logloss": round(max(all_losses), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--cache", type=Path, help="npz of the per-still scores (written once, read after)")
    ap.add_argument("--limit", type=int, help="about this many stills (evenly spaced), for a quick look")
    ap.add_argument("--sx", help=f"comma-separated width scales (default {','.join(map(str, SX))})")
    ap.add_argument("--sy", help=f"comma-separated height scales (default {','.join(map(str, SY))})")
    ap.add_argument("--dy", help=f"comma-separated centre shifts in box heights (default {','.join(map(str, DY))})")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    def axis(text: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(float(v) for v in text.split(",")) if text else default

    axes = (axis(args.sx, SX), axis(args.sy, SY), axis(args.dy, DY))
    d = collect(args.manifest, args.cache, args.limit, lambda m: print(m, file=sys.stderr, flush=True), axes)
    print(json.dumps(measure(d), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
