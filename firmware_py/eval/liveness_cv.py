"""Leave-one-unit-out choice of the liveness thresholds, and the out-of-fold figures that go with it.

Input: the per-presentation details of one ``kaoclock eval liveness --details``
run (its verdicts carry every cue's score; when a verdict is reached does not
depend on the thresholds, so one run serves every threshold).  Units held out
whole: each NUAA subject, each of 5 contiguous replay-crop blocks (one
webcam, no subject ids), each clip.  For every unit, the thresholds are chosen
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

    python -m firmware_py.eval.liveness_cv --manifest $KAOCLOCK_DATA/liveness-dev.csv --details details.jsonl --json
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

THRESHOLDS = tuple(round(0.05 + 0.01 * i, 2) for i in range(91))
TEXTURE_VETOES = (-math.inf, -2.0, -1.5, -1.0, -0.75, -0.5)
GOALS = {"bpcer": 0.02, "print": 0.003, "replay": 0.02}
REPLAY_BLOCKS = 5


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


def load_rows(manifest: Path, details: Path, moire_peak: float, planar_distortion: float, planar_ratio: float) -> list[Row]:
    from firmware_py.liveness.presentations import read_manifest

    pres = read_manifest(manifest)
    replay = [p.id for p in pres if p.subject == "replaycrop"]
    block = {pid: f"replaycrop-b{i * REPLAY_BLOCKS // len(replay)}" for i, pid in enumerate(replay)}
    rows = []
    for line in details.read_text().splitlines():
        d = json.loads(line)
        if not d["acquired"]:
            continue
        cues = d.get("cues") or {}
        learned = cues.get("learned")
        veto = False
        if learned is not None:
            veto = moire_peak > 0 and cues.get("moire_peak", 0.0) > moire_peak
            if planar_ratio > 0 and cues.get("planar_distortion", 0.0) >= planar_distortion and cues.get("planarity", 0.0) >= planar_ratio:
                veto = True
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


def cross_validate(rows: list[Row]) -> dict[str, Any]:
    units = sorted({r.unit for r in rows})
    chosen: dict[str, tuple[float, float]] = {}
    for u in units:
        chosen[u] = choose([r for r in rows if r.unit != u])
    oof = {r.id: passes(r, *chosen[r.unit]) for r in rows}
    pooled = figures(rows, lambda r: oof[r.id])
    by_subject: dict[str, Any] = {}
    for s in sorted({r.subject for r in rows}):
        sub = [r for r in rows if r.subject == s]
        f = figures(sub, lambda r: oof[r.id])
        by_subject[s] = {
            "n_live": sum(1 for r in sub if not r.attack),
            "n_attack": sum(1 for r in sub if r.attack),
            "bpcer_stills": _r(f["bpcer"]),
            "apcer_stills": {k: _r(f[k]) for k in ("print", "replay") if f[k] is not None},
            "print_sequences_accepted": f"{f['print_accepted']}/{f['print_n']}",
            "live_sequences_rejected": f"{f['live_rejected']}/{f['live_n']}",
        }
    ts = [c[0] for c in chosen.values()]
    tts = [c[1] for c in chosen.values()]
    ship = choose(rows)
    at_ship = figures(rows, lambda r: passes(r, *ship))
    stills_apcer = [v["apcer_stills"].get("print") for v in by_subject.values() if "print" in v["apcer_stills"]]
    stills_bpcer = [v["bpcer_stills"] for v in by_subject.values() if v["bpcer_stills"] is not None]
    return {
        "protocol": "leave-one-unit-out: each NUAA subject, each of 5 replay-crop blocks, each clip held out; thresholds chosen on the rest",
        "units": len(units),
        "per_unit_choice": {u: {"threshold": c[0], "texture_threshold": _veto(c[1])} for u, c in chosen.items()},
        "threshold_range": [min(ts), max(ts)],
        "texture_threshold_range": [_veto(min(tts)), _veto(max(tts))],
        "out_of_fold": {k: (_r(v) if isinstance(v, float) else v) for k, v in pooled.items()},
        "out_of_fold_worst_subject_print_apcer": _r(max(stills_apcer)) if stills_apcer else None,
        "out_of_fold_worst_subject_bpcer": _r(max(stills_bpcer)) if stills_bpcer else None,
        "out_of_fold_by_subject": by_subject,
        "shipped": {"threshold": ship[0], "texture_threshold": _veto(ship[1])},
        "all_units_at_shipped (in-sample)": {k: (_r(v) if isinstance(v, float) else v) for k, v in at_ship.items()},
    }


def _veto(v: float) -> float | str:
    return "off" if v == -math.inf else v


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def main(argv: list[str] | None = None) -> int:
    from firmware_py.config import load

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--details", type=Path, required=True, help="the --details file of a `kaoclock eval liveness` run over the manifest")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    c = load(None).liveness
    rows = load_rows(args.manifest, args.details, c.moire_peak, c.planar_distortion, c.planar_ratio)
    out = cross_validate(rows)
    out["rows"] = len(rows)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
