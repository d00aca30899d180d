"""Leave-one-unit-out choice of the liveness thresholds, and the out-of-fold figures that go with it.

Input: the per-presentation details of one ``kaoclock eval liveness --details``
run (its verdicts carry every cue's score; when a verdict is reached does not
depend on the thresholds, so one run serves every threshold).  Units held out
whole: each NUAA subject, each of 5 replay-crop blocks (one webcam, no
subject ids: block b of ``real/`` and of ``fake/``, each folder cut into 5
runs of contiguous file numbers, as ``liveness_train.units`` cuts them), each
clip.  For every unit, the thresholds are chosen
on the *other* units by the rule below and the unit is scored at them; the
pooled and per-subject figures of those out-of-fold decisions are what the
README reports.  The shipped thresholds are the rule applied to all units.

The rule: for each candidate (``threshold`` on the learned score,
``texture_threshold`` veto), the errors as multiples of their goals (stills
BPCER 2 %, print APCER 0.3 %, replay APCER 2 %; a print sequence accepted or
a live sequence / clip rejected counts as a missed goal of 0), a met goal
counting as 0; candidates are compared worst error first, then the next
(leximin).  Among the best, the weakest texture veto, then the middle of the
learned thresholds.

    kaoclock eval liveness --manifest $KAOCLOCK_DATA/liveness-dev.csv --json --details details.jsonl --all-cues
    python -m firmware_py.eval.liveness_cv --manifest $KAOCLOCK_DATA/liveness-dev.csv --details details.jsonl --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

THRESHOLDS = tuple(round(0.05 + 0.01 * i, 2) for i in range(91))
TEXTURE_VETOES = (-math.inf, -2.0, -1.5, -1.0, -0.75, -0.5)
GOALS = {"bpcer": 0.02, "print": 0.003, "replay": 0.02}


@dataclass(frozen=True)
class Row:
    id: str
    unit: str
    subject: str
    kind: str
    attack: bool
    attack_type: str
    learned: float | None  # None: no verdict could score it (always a reject)
    texture: float
    other_veto: bool  # moire / planar / strict cue: independent of the two thresholds
    trace: tuple[Step, ...] = ()  # sequences: the running cues after each frame up to the full window (``--trace``)


@dataclass(frozen=True)
class Step:
    """What the early rule sees after one frame of a sequence."""

    t: float  # seconds since the track's first frame
    n: int  # scored frames so far
    learned: float  # their mean learned score
    texture: float  # the mean texture score so far
    other_veto: bool  # moire veto, or motion so far like a flat picture (the early rule's planar check)


def load_rows(manifest: Path, details: Path, moire_peak: float, planar_distortion: float, planar_ratio: float) -> list[Row]:
    from firmware_py.eval.liveness_train import SPLIT, units
    from firmware_py.liveness.presentations import read_manifest

    # The training script's units: each replay-crop folder (real, fake) cut into 5 blocks of contiguous file
    # numbers, block b of both folders one unit, so every unit holds live and attack stills like a subject.
    block = units(read_manifest(manifest), SPLIT)
    rows = []
    for line in details.read_text().splitlines():
        d = json.loads(line)
        if not d["acquired"]:
            continue
        cues = d.get("cues") or {}
        learned = cues.get("learned")
        if learned is not None and "texture" not in cues:
            raise ValueError(
                f"{details}: {d['id']} has a learned score but no texture cues: write the details with "
                "`kaoclock eval liveness --details FILE --all-cues` (the reader skips the cues where the nets reject)"
            )
        veto = False
        if learned is not None:
            veto = moire_peak > 0 and cues.get("moire_peak", 0.0) > moire_peak
            if planar_ratio > 0 and cues.get("planar_distortion", 0.0) >= planar_distortion and cues.get("planarity", 0.0) >= planar_ratio:
                veto = True
        steps = []
        for st in d.get("trace") or ():
            planar = planar_ratio > 0 and st.get("planarity", 0.0) >= planar_ratio  # early: no distortion gate
            moire = moire_peak > 0 and st.get("moire_peak", 0.0) > moire_peak
            steps.append(Step(float(st["t"]), int(st["n"]), float(st["learned"]), float(st["texture"]), bool(planar or moire)))
        rows.append(
            Row(
                d["id"],
                block.get(d["id"], d["subject"]),
                d["subject"],
                d["kind"],
                d["label"] == "attack",
                d.get("attack_type") or "",
                learned,
                float(cues.get("texture", 0.0)),
                veto,
                tuple(steps),
            )
        )
    return rows


def passes(r: Row, t: float, tt: float) -> bool:
    return r.learned is not None and r.learned >= t and r.texture >= tt and not r.other_veto


def figures(rows: list[Row], decide: Any) -> dict[str, Any]:
    """Stills BPCER / APCER per type, sequence and clip errors, for a decision function row -> passed."""
    cnt: dict[str, list[int]] = {}
    seq = {"print_accepted": 0, "print_n": 0, "live_rejected": 0, "live_n": 0}
    for r in rows:
        ok = decide(r)
        if r.kind == "image":
            key = r.attack_type if r.attack else "live"
            c = cnt.setdefault(key, [0, 0])
            c[0] += int(ok if r.attack else not ok)
            c[1] += 1
        elif r.attack:
            seq["print_n"] += 1
            seq["print_accepted"] += int(ok)
        else:
            seq["live_n"] += 1
            seq["live_rejected"] += int(not ok)
    rate = {k: (v[0] / v[1] if v[1] else None) for k, v in cnt.items()}
    return {"bpcer": rate.get("live"), "print": rate.get("print"), "replay": rate.get("replay"), "n": {k: v[1] for k, v in cnt.items()}, **seq}


def badness(f: dict[str, Any]) -> tuple[float, ...]:
    errs = []
    for k, goal in GOALS.items():
        v = f[k]
        errs.append(0.0 if v is None or v <= goal else v / goal)
    errs.append(10.0 * f["print_accepted"])  # a goal of zero: any miss is worse than any rate near its goal
    errs.append(10.0 * f["live_rejected"])
    return tuple(sorted(errs, reverse=True))


def choose(rows: list[Row]) -> tuple[float, float]:
    best: tuple[float, ...] | None = None
    ties: list[tuple[float, float]] = []
    for tt in TEXTURE_VETOES:
        for t in THRESHOLDS:
            b = badness(figures(rows, lambda r, t=t, tt=tt: passes(r, t, tt)))
            if best is None or b < best:
                best, ties = b, [(tt, t)]
            elif b == best:
                ties.append((tt, t))
    tt = min(x[0] for x in ties)
    ts = sorted(t for v, t in ties if v == tt)
    return ts[len(ts) // 2], tt


# The early pass (``early_threshold``, ``early_min_frames``): candidates, and a declared safety margin.
EARLY_THRESHOLDS = tuple(round(0.40 + 0.01 * i, 2) for i in range(60))
EARLY_MIN_FRAMES = (2, 3, 4, 5, 6, 8)
EARLY_MARGIN = 0.1  # no training print sequence may pass early even at early_threshold - this (declared, not tuned)


def early_step(r: Row, et: float, nmin: int, tt: float, window: float) -> Step | None:
    """The first frame at which the early rule passes the sequence (before the full window), or None."""
    if nmin <= 0 or r.kind == "image":
        return None
    for st in r.trace:
        if st.t >= window:
            break
        if st.n >= nmin and st.learned >= et and st.texture >= tt and not st.other_veto:
            return st
    return None


def decide_early(r: Row, t: float, tt: float, et: float, nmin: int, window: float) -> tuple[bool, float | None, int | None]:
    """(passed, verdict time s, scored frames) with the early rule in front of the full-window decision."""
    st = early_step(r, et, nmin, tt, window)
    if st is not None:
        return True, st.t, st.n
    last = r.trace[-1] if r.trace else None
    return passes(r, t, tt), (last.t if last else None), (last.n if last else None)


def live_times(rows: list[Row], t: float, tt: float, et: float, nmin: int, window: float) -> list[float]:
    """Verdict times (s) of the live sequences and clips that have a trace."""
    return [x for r in rows if not r.attack and r.kind != "image" and r.trace for x in [decide_early(r, t, tt, et, nmin, window)[1]] if x is not None]


def choose_early(rows: list[Row], t: float, tt: float, window: float) -> tuple[float, int]:
    """(early_threshold, early_min_frames) for the full-window choice (t, tt), on these rows.

    Goals first (as :func:`badness`, with the early passes counted, and a print
    sequence that would pass early at ``early_threshold - EARLY_MARGIN`` counted
    as accepted), then the number of attack stills (print, replay) scoring at or
    above the early threshold, then the mean verdict time of the live
    sequences and clips; ties go to the higher threshold, then the more frames.
    ``(1.0, 0)`` = no early pass.
    """
    best: tuple[float, ...] | None = None
    pick = (1.0, 0)
    # An attack's frames look alike, so a mean over a few of them scores like one still: an attack still
    # at or above the early threshold stands for an attack sequence that could pass early.
    still_attacks = [r for r in rows if r.attack and r.kind == "image"]
    candidates = [(0, 1.0), *((n, e) for n in EARLY_MIN_FRAMES for e in EARLY_THRESHOLDS if e >= t)]  # (0, 1.0): none
    for nmin, et in candidates:
        f = figures(rows, lambda r, et=et, nmin=nmin: decide_early(r, t, tt, et, nmin, window)[0])
        near = sum(1 for r in rows if r.attack and early_step(r, et - EARLY_MARGIN, nmin, tt, window) is not None)
        still = sum(1 for r in still_attacks if r.learned is not None and r.learned >= et)
        times = live_times(rows, t, tt, et, nmin, window)
        mean = round(sum(times) / len(times), 6) if times else 0.0
        key = (*badness(f), 10.0 * near, float(still), mean, -et, -nmin)
        if best is None or key < best:
            best, pick = key, (et, nmin)
    return pick


def _dist(xs: list[float]) -> dict[str, float | None]:
    xs = sorted(xs)
    if not xs:
        return {"n": 0, "p50": None, "p90": None, "max": None}
    return {"n": len(xs), "p50": round(xs[len(xs) // 2], 3), "p90": round(xs[min(len(xs) - 1, int(0.9 * len(xs)))], 3), "max": round(xs[-1], 3)}


def cross_validate_early(rows: list[Row], chosen: dict[str, tuple[float, float]], window: float) -> dict[str, Any]:
    """Leave-one-unit-out for the early rule: each unit at the early parameters chosen without it."""
    units = sorted({r.unit for r in rows})
    early: dict[str, tuple[float, int]] = {u: choose_early([r for r in rows if r.unit != u], *chosen[u], window) for u in units}
    out = {r.id: decide_early(r, *chosen[r.unit], *early[r.unit], window) for r in rows}
    pooled = figures(rows, lambda r: out[r.id][0])
    seq_live = [r for r in rows if not r.attack and r.kind != "image" and r.trace]
    early_live = [r for r in seq_live if early_step(r, early[r.unit][0], early[r.unit][1], chosen[r.unit][1], window) is not None]
    replay = [r for r in rows if r.attack and r.attack_type == "replay" and r.kind == "image" and r.learned is not None]
    ship_t, ship_tt = choose(rows)
    ship = choose_early(rows, ship_t, ship_tt, window)
    return {
        "protocol": "leave-one-unit-out; in each fold the full-window thresholds, then the early rule, chosen on the other units",
        "window_s": window,
        "margin": EARLY_MARGIN,
        "per_unit_choice": {u: {"early_threshold": e[0], "early_min_frames": e[1]} for u, e in early.items()},
        "out_of_fold": rounded(pooled),
        "out_of_fold_attack_sequences_passed_early": sum(
            1 for r in rows if r.attack and early_step(r, early[r.unit][0], early[r.unit][1], chosen[r.unit][1], window) is not None
        ),
        "out_of_fold_live_passed_early": f"{len(early_live)}/{len(seq_live)}",
        "out_of_fold_live_verdict_s": _dist([x for r in seq_live if (x := out[r.id][1]) is not None]),
        "out_of_fold_live_verdict_frames": _dist([float(n) for r in seq_live if (n := out[r.id][2]) is not None]),
        "out_of_fold_live_verdict_s_by_kind": {
            k: _dist([x for r in seq_live if r.kind == k and (x := out[r.id][1]) is not None]) for k in sorted({r.kind for r in seq_live})
        },
        "out_of_fold_replay_stills_at_or_above_early_threshold": _r(
            sum(1 for r in replay if r.learned is not None and r.learned >= early[r.unit][0]) / len(replay) if replay else None
        ),
        "shipped": {"early_threshold": ship[0], "early_min_frames": ship[1]},
        "all_units_at_shipped_live_verdict_s (in-sample)": _dist(live_times(rows, ship_t, ship_tt, *ship, window)),
    }


def subject_figures(rows: list[Row], decide: Any) -> tuple[dict[str, Any], float | None, float | None]:
    """Per subject (stills' BPCER and APCER per type, sequences' errors), the worst print APCER and the worst BPCER."""
    by_subject: dict[str, Any] = {}
    for s in sorted({r.subject for r in rows}):
        sub = [r for r in rows if r.subject == s]
        f = figures(sub, decide)
        by_subject[s] = {
            "n_live": sum(1 for r in sub if not r.attack),
            "n_attack": sum(1 for r in sub if r.attack),
            "bpcer_stills": _r(f["bpcer"]),
            "apcer_stills": {k: _r(f[k]) for k in ("print", "replay") if f[k] is not None},
            "print_sequences_accepted": f"{f['print_accepted']}/{f['print_n']}",
            "live_sequences_rejected": f"{f['live_rejected']}/{f['live_n']}",
        }
    prints = [v["apcer_stills"]["print"] for v in by_subject.values() if "print" in v["apcer_stills"]]
    bpcers = [v["bpcer_stills"] for v in by_subject.values() if v["bpcer_stills"] is not None]
    return by_subject, (max(prints) if prints else None), (max(bpcers) if bpcers else None)


def cross_validate(rows: list[Row]) -> dict[str, Any]:
    units = sorted({r.unit for r in rows})
    chosen: dict[str, tuple[float, float]] = {}
    for u in units:
        chosen[u] = choose([r for r in rows if r.unit != u])
    oof = {r.id: passes(r, *chosen[r.unit]) for r in rows}
    pooled = figures(rows, lambda r: oof[r.id])
    by_subject, worst_print, worst_bpcer = subject_figures(rows, lambda r: oof[r.id])
    ts = [c[0] for c in chosen.values()]
    tts = [c[1] for c in chosen.values()]
    ship = choose(rows)
    at_ship = figures(rows, lambda r: passes(r, *ship))
    return {
        "protocol": "leave-one-unit-out: each NUAA subject, each of 5 replay-crop blocks, each clip held out; thresholds chosen on the rest",
        "units": len(units),
        "per_unit_choice": {u: {"threshold": c[0], "texture_threshold": veto_text(c[1])} for u, c in chosen.items()},
        "threshold_range": [min(ts), max(ts)],
        "texture_threshold_range": [veto_text(min(tts)), veto_text(max(tts))],
        "out_of_fold": rounded(pooled),
        "out_of_fold_worst_subject_print_apcer": worst_print,
        "out_of_fold_worst_subject_bpcer": worst_bpcer,
        "out_of_fold_by_subject": by_subject,
        "shipped": {"threshold": ship[0], "texture_threshold": veto_text(ship[1])},
        "all_units_at_shipped (in-sample)": rounded(at_ship),
    }


def veto_text(v: float) -> float | str:
    return "off" if v == -math.inf else v


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def rounded(f: dict[str, Any]) -> dict[str, Any]:
    """A :func:`figures` result with its rates rounded for the report."""
    return {k: (_r(v) if isinstance(v, float) else v) for k, v in f.items()}


def main(argv: list[str] | None = None) -> int:
    from firmware_py.config import load
    from firmware_py.liveness.presentations import ManifestError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--details", type=Path, required=True, help="the --details file of a `kaoclock eval liveness` run over the manifest")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--early", action="store_true", help="also cross-validate the early pass (needs a details file written with --trace)")
    args = ap.parse_args(argv)
    c = load(None).liveness
    try:
        rows = load_rows(args.manifest, args.details, c.moire_peak, c.planar_distortion, c.planar_ratio)
    except (ValueError, OSError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = cross_validate(rows)
    if args.early:
        if not any(r.trace for r in rows):
            print("error: --early needs traces: write the details with `kaoclock eval liveness ... --all-cues --trace`", file=sys.stderr)
            return 2
        chosen = {
            u: (v["threshold"], -math.inf if v["texture_threshold"] == "off" else v["texture_threshold"]) for u, v in out["per_unit_choice"].items()
        }
        out["early"] = cross_validate_early(rows, chosen, c.passive_window_s)
    out["rows"] = len(rows)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
