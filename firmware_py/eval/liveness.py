"""``kaoclock eval liveness``: presentation-attack detection measured the ISO/IEC 30107-3 way.

Every presentation of a manifest (:mod:`firmware_py.liveness.presentations`)
goes through the daemon's own front-end (detection, landmarks, tracking) and
the daemon's own liveness stage at the operating threshold of the config, and
is classified *attack* or *bona fide* exactly as at the gate: the first
verdict the stage gives for the presentation's track, or, when the frames run
out first, the verdict on what was seen: for a still, on its one frame; for a
sequence, only when its last track has at least the policy's minimum frames
(``passive_min_frames`` / ``strict_min_frames``).  A sequence whose face keeps
being lost (a shaky hand-held print sampled every 5th frame breaks the IoU
tracker into one- and two-frame tracks) is refused, as the daemon refuses a
track that ends while liveness is still watching (``timeout``); it is never
accepted on a single frame.

Reported (JSON on stdout):

* ``apcer``: per attack type (ISO/IEC 30107-3 asks for it per PAI species),
  the share of attack presentations accepted as live; ``apcer_max`` the worst;
* ``bpcer``: the share of live presentations rejected;
* ``acer`` = (apcer_max + bpcer) / 2, the usual single figure;
* ``by_subject``: the same per subject (``n_live``, ``n_attack``, ``bpcer``,
  ``apcer`` per attack type), and the worst subject's figures
  ``worst_subject_apcer`` (the highest APCER of any subject and attack type),
  ``worst_subject_bpcer``, and ``worst_subjects`` naming them: a mean can
  hide one person whose photo always passes;
* ``live_verdict``: for the live sequences and clips, how many passed early
  and when their verdict came (``frames`` fed and ``seconds`` watched: p50,
  p90, max);
* failures to acquire (no face in any frame) counted apart in ``fta`` and
  left out of the rates;
* ``ms_per_frame``: what the liveness stage adds per frame, wall time (the
  front-end's own cost is ``frontend_ms_per_frame``); ``cpu_ms_per_frame``
  the CPU time behind it, all threads counted (with ``parallel_nets`` the two
  nets overlap: a frame waits for one, the CPU pays for both);
  ``ms_per_frame_by_kind`` splits the wall time into stills (``image``) and
  sequences (``frames``, ``video``: what a walk-up costs per frame);
  ``net_invokes_per_frame``: 2, plus 2 on each frame the nets are unsure of
  (``mirror_band``: they are then also run on the mirrored crops);
* with ``--details FILE --all-cues``: the texture cues run on every other
  frame even where the nets already reject (the reader skips them there), so
  the details serve ``python -m firmware_py.eval.liveness_cv``, which tries
  other thresholds; with ``--trace`` as well, each presentation's running cues
  after every frame (``LivenessDetector.progress``), the input of the early
  rule's cross-validation (``--early``); with ``--features`` as well, every
  texture frame's feature vector, for the fully nested cross-validation
  (``python -m firmware_py.eval.liveness_nested``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_py.liveness.presentations import Presentation, frames, read_manifest, select
from firmware_py.progress import Progress


@dataclass(frozen=True)
class Outcome:
    """What the stage decided about one presentation."""

    presentation: Presentation
    acquired: bool
    passed: bool
    score: float | None
    reason: str
    frames_used: int
    cues: dict[str, float] | None = None
    trace: list[dict[str, float]] | None = None  # the stage's running cues after each frame (``--trace``)
    features: list[list[float]] | None = None  # each texture frame: [scored frames so far, *feature vector] (``--features``)


def run_presentation(
    p: Presentation, front: Any, stage: Any, fps: float, max_seconds: float, timing: dict[str, float], trace: bool = False
) -> Outcome:
    """Feed one presentation frame by frame until the stage gives a verdict for its track.

    ``trace``: also keep the stage's running cues after each frame of the last track (outside the timing).
    """
    from firmware_py.liveness.frontend import largest

    front.reset()
    track: int | None = None
    steps: list[dict[str, float]] = []
    verdict = None
    used = 0
    on_track = 0  # frames fed for the current track
    for index, (ts, image) in enumerate(frames(p, fps=fps, max_seconds=max_seconds)):
        t0 = time.perf_counter()
        frame, observations = front.analyze(image, ts, index, p.id)
        t1 = time.perf_counter()
        timing["frontend_s"] += t1 - t0
        timing["frames_seen"] += 1
        if not observations:
            continue
        obs = next((o for o in observations if o.track_id == track), None) if track is not None else None
        if obs is None:  # first face, or the track was lost: follow the person at the reader
            if track is not None:
                stage.forget(track)  # that track ended without a verdict
            obs = largest(observations)
            assert obs is not None  # observations is not empty here
            track = obs.track_id
            on_track = 0
            steps = []
        on_track += 1
        c1 = time.process_time()
        stage.observe(obs, frame)
        verdict = stage.verdict(track)
        spent = time.perf_counter() - t1
        timing["liveness_cpu_s"] = timing.get("liveness_cpu_s", 0.0) + time.process_time() - c1
        timing["liveness_s"] += spent
        timing["frames_fed"] += 1
        timing[f"liveness_s.{p.kind}"] = timing.get(f"liveness_s.{p.kind}", 0.0) + spent
        timing[f"frames_fed.{p.kind}"] = timing.get(f"frames_fed.{p.kind}", 0.0) + 1
        used += 1
        if trace:
            step = stage.progress(track)
            if step is not None:
                steps.append(step)
        if verdict is not None:
            break
    if track is None:
        return Outcome(p, False, False, None, "no face found in any frame", 0)
    if verdict is None:
        min_frames = stage.params.strict_min_frames if stage.policy == "strict" else stage.params.passive_min_frames
        if p.kind != "image" and on_track < min_frames and stage.policy != "off":
            stage.forget(track)
            return Outcome(p, True, False, None, f"no verdict: the face's last track lasted {on_track} frame(s) < {min_frames}", used)
        t1, c1 = time.perf_counter(), time.process_time()
        verdict = stage.conclude(track)
        spent = time.perf_counter() - t1
        timing["liveness_cpu_s"] = timing.get("liveness_cpu_s", 0.0) + time.process_time() - c1
        timing["liveness_s"] += spent
        timing[f"liveness_s.{p.kind}"] = timing.get(f"liveness_s.{p.kind}", 0.0) + spent
    feats = None
    if getattr(stage, "record_features", False):
        feats = [[float(n), *(float(f"{v:.6g}") for v in x)] for n, x in stage.recorded_features(track)]
    stage.forget(track)
    return Outcome(p, True, bool(verdict.passed), verdict.score, verdict.reason, used, dict(verdict.cues), steps if trace else None, feats)


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _spread(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    xs = sorted(xs)
    return {"p50": round(xs[len(xs) // 2], 3), "p90": round(xs[min(len(xs) - 1, int(0.9 * len(xs)))], 3), "max": round(xs[-1], 3)}


def summarise(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """The ISO/IEC 30107-3 figures of a set of outcomes."""
    outs = list(outcomes)
    fta = {"live": 0, "attack": 0}
    by_kind: dict[str, dict[str, Any]] = {}
    acc: dict[str, dict[str, list[int]]] = {}  # kind -> attack_type|"live" -> [errors, n]
    for o in outs:
        p = o.presentation
        if not o.acquired:
            fta[p.label] += 1
            continue
        key = p.attack_type if p.is_attack else "live"
        err = o.passed if p.is_attack else not o.passed
        for kind in (p.kind, "*"):
            cell = acc.setdefault(kind, {}).setdefault(key, [0, 0])
            cell[0] += int(err)
            cell[1] += 1
    for kind, cells in acc.items():
        live = cells.get("live", [0, 0])
        entry = {
            "n_live": live[1],
            "n_attack": sum(v[1] for k, v in cells.items() if k != "live"),
            "bpcer": _rate(*live),
            "apcer": {k: _rate(*v) for k, v in sorted(cells.items()) if k != "live"},
        }
        if kind != "*":
            by_kind[kind] = entry
    by_subject: dict[str, dict[str, Any]] = {}
    subj: dict[str, dict[str, list[int]]] = {}
    for o in outs:
        p = o.presentation
        if not o.acquired:
            continue
        key = p.attack_type if p.is_attack else "live"
        cell = subj.setdefault(p.subject or "?", {}).setdefault(key, [0, 0])
        cell[0] += int(o.passed if p.is_attack else not o.passed)
        cell[1] += 1
    for s_name, cells in sorted(subj.items()):
        live = cells.get("live", [0, 0])
        by_subject[s_name] = {
            "n_live": live[1],
            "n_attack": sum(v[1] for k, v in cells.items() if k != "live"),
            "bpcer": _rate(*live),
            "apcer": {k: _rate(*v) for k, v in sorted(cells.items()) if k != "live"},
        }
    worst_apcer = max(((v, s_name, k) for s_name, e in by_subject.items() for k, v in e["apcer"].items() if v is not None), default=None)
    worst_bpcer = max(((e["bpcer"], s_name) for s_name, e in by_subject.items() if e["bpcer"] is not None), default=None)
    overall = acc.get("*", {})
    apcers = [v for k, v in overall.items() if k != "live"]
    apcer_max = max((_rate(*v) or 0.0 for v in apcers), default=None)
    bpcer = _rate(*overall.get("live", [0, 0]))
    acer = round((apcer_max + bpcer) / 2, 4) if apcer_max is not None and bpcer is not None else None
    # When the verdict came for live sequences and clips (stills have one frame): the early pass shows here.
    seq_live = [o for o in outs if o.acquired and not o.presentation.is_attack and o.presentation.kind != "image" and o.cues]
    live_verdict = {
        "n": len(seq_live),
        "early": sum(1 for o in seq_live if (o.cues or {}).get("early") == 1.0),
        "frames": _spread([float(o.frames_used) for o in seq_live]),
        "seconds": _spread([float((o.cues or {}).get("window_s", 0.0)) for o in seq_live]),
    }
    return {
        "n": len(outs),
        "fta": fta,
        "by_kind": dict(sorted(by_kind.items())),
        "apcer": {k: _rate(*v) for k, v in sorted(overall.items()) if k != "live"},
        "apcer_max": apcer_max,
        "bpcer": bpcer,
        "acer": acer,
        "by_subject": by_subject,
        "worst_subject_apcer": worst_apcer[0] if worst_apcer else None,
        "worst_subject_bpcer": worst_bpcer[0] if worst_bpcer else None,
        "live_verdict": live_verdict,
        "worst_subjects": {
            "apcer": {"subject": worst_apcer[1], "attack_type": worst_apcer[2]} if worst_apcer else None,
            "bpcer": {"subject": worst_bpcer[1]} if worst_bpcer else None,
        },
    }


def evaluate(
    presentations: list[Presentation], front: Any, stage: Any, fps: float = 10.0, max_seconds: float = 6.0, trace: bool = False
) -> tuple[dict[str, Any], list[Outcome]]:
    """Run every presentation; the summary (plus timing) and the per-presentation outcomes."""
    timing = {"frontend_s": 0.0, "liveness_s": 0.0, "frames_seen": 0.0, "frames_fed": 0.0}
    outcomes = []
    with Progress("presentations", total=len(presentations)) as bar:
        for p in presentations:
            outcomes.append(run_presentation(p, front, stage, fps, max_seconds, timing, trace))
            bar.advance()
    summary = summarise(outcomes)
    thresholds = {"passive": stage.params.threshold, "strict": stage.params.strict_threshold}
    summary["threshold"] = thresholds.get(stage.policy)
    summary["policy"] = stage.policy
    summary["texture_threshold"] = stage.params.texture_threshold if stage.policy != "off" else None
    summary["ms_per_frame"] = round(1000 * timing["liveness_s"] / timing["frames_fed"], 3) if timing["frames_fed"] else None
    # The CPU time behind it (all threads): with parallel nets a frame waits for one net but pays for two.
    summary["cpu_ms_per_frame"] = round(1000 * timing.get("liveness_cpu_s", 0.0) / timing["frames_fed"], 3) if timing["frames_fed"] else None
    learned = getattr(stage, "learned", None)
    summary["parallel_nets"] = bool(learned is not None and learned.parallel)
    # Two invokes a frame, four on a frame the nets are unsure of ([liveness] mirror_unsure).
    summary["mirror_band"] = getattr(stage.params, "mirror_band", None) if stage.policy != "off" else None
    summary["net_invokes_per_frame"] = round(learned.invokes / timing["frames_fed"], 3) if learned is not None and timing["frames_fed"] else None
    summary["all_cues"] = bool(getattr(stage, "all_cues", False))
    # Stills cost more per frame than a walk-up: their one frame pays for both nets and the texture cues.
    summary["ms_per_frame_by_kind"] = {
        k: round(1000 * timing[f"liveness_s.{k}"] / timing[f"frames_fed.{k}"], 3)
        for k in sorted(x.split(".", 1)[1] for x in timing if x.startswith("frames_fed."))
        if timing[f"frames_fed.{k}"]
    }
    summary["frontend_ms_per_frame"] = round(1000 * timing["frontend_s"] / timing["frames_seen"], 3) if timing["frames_seen"] else None
    summary["frames"] = int(timing["frames_fed"])
    return summary, outcomes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "liveness",
        help="presentation-attack detection: APCER per attack type, BPCER, ACER (ISO/IEC 30107-3)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--manifest", type=Path, required=True, help="CSV id,label,kind,path,attack_type,subject (paths relative to it)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format; kept for symmetry with other evals)")
    p.add_argument("--config", type=Path, help="kaoclock config (default: the built-in defaults)")
    p.add_argument("--policy", choices=("off", "passive", "strict"), help="override [liveness] policy (default: config's; passive if off)")
    p.add_argument("--subjects", help="comma-separated subjects to keep (e.g. held-out NUAA subjects)")
    p.add_argument("--ids", type=Path, help="file of presentation ids to keep, one a line (e.g. the training script's held-out list)")
    p.add_argument("--kinds", help="comma-separated kinds to keep (image, video, frames)")
    p.add_argument("--fps", type=float, default=10.0, help="timestamps of 'frames' presentations: frame i is at i / fps s (default 10)")
    p.add_argument("--max-seconds", type=float, default=6.0, help="stop a video after this many seconds (default 6)")
    p.add_argument("--details", type=Path, help="also write one JSON line per presentation (id, label, passed, score, reason) here")
    p.add_argument(
        "--trace",
        action="store_true",
        help="with --details: each line also carries the stage's running cues after every frame (for the early rule's "
        "cross-validation); the early verdict is switched off for the run so every trace reaches the full window",
    )
    p.add_argument(
        "--all-cues",
        action="store_true",
        help="run the texture cues on every other frame, also where the nets already reject (the reader skips them "
        "there): what `python -m firmware_py.eval.liveness_cv` needs to try other thresholds; costs more per frame",
    )
    p.add_argument(
        "--features",
        action="store_true",
        help="with --details and --all-cues: each line also carries every texture frame's feature vector, for "
        "`python -m firmware_py.eval.liveness_nested` (retrains the texture model without the held-out people)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from firmware_py.config import load, with_changes
    from firmware_py.liveness.frontend import FrontEnd
    from firmware_py.liveness.presentations import ManifestError
    from firmware_py.liveness.stage import LivenessDetector

    cfg = load(args.config)
    policy = args.policy or (cfg.liveness.policy if cfg.liveness.policy != "off" else "passive")
    cfg = with_changes(cfg, {"liveness.policy": policy})
    if args.trace:
        if not args.details:
            raise ManifestError("--trace needs --details FILE (the traces are written there)")
        cfg = with_changes(cfg, {"liveness.early_min_frames": 0})
    pres = read_manifest(args.manifest)
    ids = None
    if args.ids:
        try:
            ids = {line.strip() for line in args.ids.read_text().splitlines() if line.strip()}
        except OSError as exc:
            raise ManifestError(f"cannot read ids file {args.ids}: {exc.strerror or exc}") from None
    subjects = {s for s in args.subjects.split(",") if s} if args.subjects else None
    kinds = {s for s in args.kinds.split(",") if s} if args.kinds else None
    chosen = select(pres, subjects, ids, kinds)
    if not chosen:
        raise ManifestError(f"no presentation of {args.manifest} is left after the --subjects / --ids / --kinds filters")
    if args.features and not (args.details and args.all_cues):
        raise ManifestError("--features needs --details FILE and --all-cues (the nested cross-validation reads them)")
    stage = LivenessDetector.from_config(cfg, all_cues=args.all_cues, record_features=args.features)
    summary, outcomes = evaluate(chosen, FrontEnd(cfg), stage, fps=args.fps, max_seconds=args.max_seconds, trace=args.trace)
    if args.details:
        with args.details.open("w") as fh:
            for o in outcomes:
                fh.write(
                    json.dumps(
                        {
                            "id": o.presentation.id,
                            "label": o.presentation.label,
                            "kind": o.presentation.kind,
                            "acquired": o.acquired,
                            "passed": o.passed,
                            "score": o.score,
                            "frames": o.frames_used,
                            "reason": o.reason,
                            "subject": o.presentation.subject,
                            "attack_type": o.presentation.attack_type,
                            "cues": o.cues,
                            **({"trace": o.trace} if o.trace is not None else {}),
                            **({"features": o.features} if o.features is not None else {}),
                        }
                    )
                    + "\n"
                )
    print(json.dumps(summary, indent=1))
    return 0
