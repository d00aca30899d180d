"""Fully nested leave-one-unit-out: the texture model, too, is fitted without the held-out unit.

``liveness_cv`` holds every unit out of the choice of the thresholds and of
the early rule, but the texture veto's model (``liveness_texture_v4``) was
trained on most of the same units, so its scores there are in-sample.  Here,
for every unit (each NUAA subject, each of 5 replay-crop blocks, each clip):

1. the texture model is fitted again on the *other* units' texture frames by
   the shipped training procedure
   (:func:`firmware_py.eval.liveness_train.fit_and_calibrate`: class-balanced
   L2 logistic regression, lambda and the score's scale chosen by
   leave-one-unit-out inside the training units);
2. every presentation's texture score is recomputed with it from its recorded
   feature vectors, as the stage computes it (each frame's score clipped to
   +-1.5, averaged over the texture frames seen so far), at the verdict and
   at every step of the traces;
3. the full-window thresholds, then the early rule, are chosen on the other
   units by ``liveness_cv``'s rules, on the scores of that fold's model;
4. the held-out unit is decided by them.

Nothing the held-out unit shows reaches any choice made for it.  Training
rows: the stills (live, or their attack type) and the live clips' texture
frames (live, not counted in the rates), as ``liveness_train`` uses them; the
NUAA sequences are frames of the stills' folders and are not trained on.
Difference from the shipped model's training: the clips give the texture
frames of their 0.8 s window (every other frame), not every 3rd frame of 6 s.
The units are the training script's (``liveness_train.units``).

    kaoclock eval liveness --manifest $KAOCLOCK_DATA/liveness-dev.csv --json --details F --all-cues --trace --features
    python -m firmware_py.eval.liveness_nested --manifest $KAOCLOCK_DATA/liveness-dev.csv --details F --json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware_py.eval import liveness_cv as cv
from firmware_py.eval.liveness_train import VIDEO_KIND, fit_and_calibrate
from firmware_py.liveness.fusion import TextureModel
from firmware_py.liveness.stage import HF_PEAK, MAX_FRAME_SCORE

LAMS = [1e-3, 1e-2]  # liveness_train's default grid
Frames = list[tuple[int, NDArray[np.float64]]]  # (scored frames so far, feature vector) per texture frame


def load(manifest: Path, details: Path, moire_peak: float, planar_distortion: float, planar_ratio: float) -> tuple[list[cv.Row], dict[str, Frames]]:
    """``liveness_cv``'s rows and each presentation's texture frames; refuses details without ``--features``."""
    rows = cv.load_rows(manifest, details, moire_peak, planar_distortion, planar_ratio)
    feats: dict[str, Frames] = {}
    for line in details.read_text().splitlines():
        d = json.loads(line)
        if not d["acquired"]:
            continue
        f = d.get("features")
        if f is None and (d.get("cues") or {}).get("learned") is not None:
            raise ValueError(
                f"{details}: {d['id']} has no feature vectors: write the details with `kaoclock eval liveness --all-cues --trace --features`"
            )
        feats[d["id"]] = [(int(v[0]), np.asarray(v[1:], np.float64)) for v in f or []]
    if not any(r.trace for r in rows):
        raise ValueError(f"{details}: no traces: write the details with --trace as well")
    return rows, feats


def same_features(a: dict[str, Frames], b: dict[str, Frames]) -> bool:
    """The same presentations with the same texture frames (the texture cues do not depend on the learned score)."""
    return a.keys() == b.keys() and all(
        len(a[i]) == len(b[i]) and all(n == m and np.allclose(x, y) for (n, x), (m, y) in zip(a[i], b[i], strict=True)) for i in a
    )


def training_set(rows: list[cv.Row], feats: dict[str, Frames]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.str_], NDArray[np.str_]]:
    """(features, label 1 = live, kind, unit) of the stills and the live clips' texture frames."""
    x: list[NDArray[np.float64]] = []
    y: list[float] = []
    k: list[str] = []
    u: list[str] = []
    for r in rows:
        frames = feats.get(r.id) or []
        if r.kind == "image" and frames:
            x.append(frames[0][1])
            y.append(0.0 if r.attack else 1.0)
            k.append(r.attack_type if r.attack else "live")
            u.append(r.unit)
        elif r.kind == "video" and not r.attack:
            for _, v in frames:
                x.append(v)
                y.append(1.0)
                k.append(VIDEO_KIND)
                u.append(r.unit)
    return np.stack(x), np.asarray(y), np.asarray(k), np.asarray(u)


def rescore(model: TextureModel, rows: list[cv.Row], feats: dict[str, Frames]) -> list[cv.Row]:
    """The rows with their texture scores (verdict and trace steps) recomputed by ``model``, as the stage would."""
    out = []
    for r in rows:
        frames = feats.get(r.id) or []
        if not frames:
            out.append(r)
            continue
        n = np.array([f[0] for f in frames])
        s = np.clip(model.logits(np.stack([f[1] for f in frames])), -MAX_FRAME_SCORE, MAX_FRAME_SCORE)
        steps = tuple(replace(st, texture=float(s[n <= st.n].mean())) if (n <= st.n).any() else st for st in r.trace)
        out.append(replace(r, texture=float(s.mean()), trace=steps))
    return out


def closeness(f: dict[str, Any]) -> float:
    """After the goals (:func:`liveness_cv.badness`): the sum of the rates as fractions of their goals, the
    sequence errors counted as in ``badness``; it separates candidates that both meet every goal."""
    return sum((f[k] or 0.0) / goal for k, goal in cv.GOALS.items()) + 10.0 * (f["print_accepted"] + f["live_rejected"])


Choice = tuple[float, float, float, int]  # threshold, texture veto, early threshold, early min frames


def choose_all(train: list[cv.Row], window: float) -> tuple[Choice, tuple[float, ...]]:
    """Thresholds, then the early rule, on these rows; and how good they are there (goals, then closeness)."""
    t, tt = cv.choose(train)
    et, nmin = cv.choose_early(train, t, tt, window)
    f = cv.figures(train, lambda r: cv.decide_early(r, t, tt, et, nmin, window)[0])
    return (t, tt, et, nmin), (*cv.badness(f), closeness(f))


def nested(
    rows: list[cv.Row] | dict[str, list[cv.Row]], feats: dict[str, Frames], moire_peak: float, window: float, progress: bool = False
) -> dict[str, Any]:
    """``rows``: one details file's rows, or several candidates' (name -> rows, in order of preference: the
    same presentations scored another way, e.g. ``[liveness] mirror_unsure`` on and off).  With candidates,
    each fold also picks one, on the other units, by the goals and then :func:`closeness`; ties to the earlier."""
    candidates = rows if isinstance(rows, dict) else {"details": rows}
    names = list(candidates)
    first = candidates[names[0]]
    x, y, k, u = training_set(first, feats)
    peaks = x[:, HF_PEAK]
    units = sorted({r.unit for r in first})
    choice: dict[str, dict[str, Any]] = {}
    full: dict[str, bool] = {}
    early: dict[str, tuple[bool, float | None, int | None]] = {}
    vetoed = 0  # held-out presentations whose learned score passed and whose (out-of-sample) texture veto fired
    for i, unit in enumerate(units):
        keep = u != unit
        # The texture cues do not depend on the learned score (--all-cues): one model per fold serves every candidate.
        model, _, lam, _ = fit_and_calibrate(x[keep], y[keep], k[keep], u[keep], peaks[keep], LAMS, moire_peak)
        best: tuple[tuple[float, ...], str, Choice, list[cv.Row]] | None = None
        for name in names:  # in order of preference: a tie keeps the earlier
            scored = rescore(model, candidates[name], feats)
            picked, key = choose_all([r for r in scored if r.unit != unit], window)
            if best is None or key < best[0]:
                best = (key, name, picked, scored)
        assert best is not None
        _, name, (t, tt, et, nmin), scored = best
        choice[unit] = {"lambda": lam, "threshold": t, "texture_threshold": cv.veto_text(tt), "early_threshold": et, "early_min_frames": nmin}
        if len(names) > 1:
            choice[unit]["candidate"] = name
        for r in scored:
            if r.unit == unit:
                full[r.id] = cv.passes(r, t, tt)
                early[r.id] = cv.decide_early(r, t, tt, et, nmin, window)
                vetoed += int(r.learned is not None and r.learned >= t and not r.other_veto and r.texture < tt)
        if progress:
            print(
                f"  {i + 1}/{len(units)} {unit}: {name}, lambda {lam:g}, threshold {t}, texture veto {cv.veto_text(tt)}, early {et}/{nmin}",
                file=sys.stderr,
            )
    by_subject, worst_print, worst_bpcer = cv.subject_figures(first, lambda r: early[r.id][0])
    seq_live = [r for r in first if not r.attack and r.kind != "image" and r.trace]
    out: dict[str, Any] = {
        "protocol": "leave-one-unit-out; in each fold the texture model, then the thresholds, then the early rule, chosen on the other units only",
        "units": len(units),
        "training_rows": {"stills": int((k != VIDEO_KIND).sum()), "clip_frames": int((k == VIDEO_KIND).sum())},
        "per_unit_choice": choice,
        "out_of_fold_full_window": cv.rounded(cv.figures(first, lambda r: full[r.id])),
        "out_of_fold": cv.rounded(cv.figures(first, lambda r: early[r.id][0])),
        "out_of_fold_worst_subject_print_apcer": worst_print,
        "out_of_fold_worst_subject_bpcer": worst_bpcer,
        "out_of_fold_live_passed_early": f"{sum(1 for r in seq_live if early[r.id][0] and (early[r.id][1] or 0) < window)}/{len(seq_live)}",
        "out_of_fold_texture_vetoes": vetoed,
        "out_of_fold_by_subject": by_subject,
    }
    if len(names) > 1:
        # What all units choose, each candidate scored as recorded (the shipped texture model): what to ship.
        keys = {name: choose_all(candidates[name], window) for name in names}
        ship = min(names, key=lambda n: keys[n][1])  # min keeps the first of equals: ties to the earlier
        out["candidates"] = names
        out["all_units_choice"] = {
            "candidate": ship,
            **{
                n: {"threshold": c[0], "texture_threshold": cv.veto_text(c[1]), "early_threshold": c[2], "early_min_frames": c[3]}
                for n, (c, _) in keys.items()
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from firmware_py.config import load as load_config
    from firmware_py.liveness.presentations import ManifestError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument(
        "--details",
        action="append",
        required=True,
        metavar="[NAME=]FILE",
        help="the --details file of `kaoclock eval liveness ... --all-cues --trace --features`; give several (NAME=FILE, "
        "in order of preference) to let each fold choose between runs of other settings (e.g. mirror_unsure on / off)",
    )
    ap.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    args = ap.parse_args(argv)
    c = load_config(None).liveness
    try:
        candidates: dict[str, list[cv.Row]] = {}
        feats: dict[str, Frames] = {}
        for spec in args.details:
            name, _, path = spec.rpartition("=")
            name = name or Path(path).stem
            if name in candidates:
                raise ValueError(f"--details {spec}: the name {name!r} is given twice")
            rows, f = load(args.manifest, Path(path), c.moire_peak, c.planar_distortion, c.planar_ratio)
            if feats and not same_features(feats, f):
                raise ValueError(f"--details {spec}: its presentations or texture features differ from the first file's (runs of one manifest?)")
            candidates[name], feats = rows, feats or f
    except (ValueError, OSError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = next(iter(candidates.values()))
    out = nested(candidates if len(candidates) > 1 else rows, feats, c.moire_peak, c.passive_window_s, progress=sys.stderr.isatty())
    out["rows"] = len(rows)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
