"""`kaoclock eval identify`: open-set 1:N identification, the issue's exact protocol.

Identity folders sorted by name (optionally only those in ``--people``).
Identities with >= 2 images alternate in that order: the 1st, 3rd, 5th ...
are enrolled (their first image by file name is the template, their other
images are mated probes); the 2nd, 4th ... are not enrolled (all their
images are non-mated probes).  Identities with one image are enrolled as
distractors.  ``--max-gallery G`` keeps the first G enrolled identities in
sorted order (mated probes only of those; non-mated probes unchanged).

``--templates N`` enrols each enrolled identity from its first N images
(file-name order), as a site enrols several photos: identities with more than
N images alternate as above (first N are templates, the rest mated probes);
identities with N images or fewer are enrolled distractors (all their images
as templates).  N = 1 is exactly the protocol above.

``--walkup M`` also scores walk-ups: each identity's probes, in file-name
order, are cut into runs of M images (a shorter remainder is dropped), and
each run goes through the reader's own :class:`DecisionMachine` (K of N from
the config, liveness off) as M frames of one track.  A mated walk-up fails
unless it is accepted as its own person; a non-mated walk-up that is
accepted as anyone is a false positive.  ``--fusion mean`` (or the config's
``recognition.track_fusion``) matches each walk-up frame on the mean
descriptor of the walk-up's last ``decision.n`` frames so far, as the
reader's pipeline then does.

FPIR(t) = share of non-mated probes whose top-1 distance passes t (<= t);
FNIR(t) = share of mated probes whose top-1 is the wrong person or does not
pass t.  ``fnir_at_fpir[F]`` uses the loosest threshold whose FPIR is <= F.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.config import load
from firmware_py.errors import UsageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff"})

TARGETS = ("0.01", "0.003", "0.001")


@dataclass
class Protocol:
    enrolled: list[str]  # identity names in the gallery, sorted
    templates: list[Path]  # one per enrolled identity, or (with template_ids) several
    mated: list[tuple[Path, str]]  # (probe, its identity)
    nonmated: list[Path]
    template_ids: list[str] | None = None  # identity of each template (None: templates[i] is enrolled[i]'s)

    @property
    def template_owner(self) -> list[str]:
        return self.template_ids if self.template_ids is not None else list(self.enrolled)


def parse_split(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N): the identities whose index in sorted order is K modulo N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--split {text!r}: expected K/N, e.g. 0/2 (tuning half) or 1/2 (reporting half)") from None
    if n < 1 or not 0 <= k < n:
        raise UsageError(f"--split {text!r}: need 0 <= K < N")
    return k, n


def identity_folders(root: Path, people: Path | None, split: tuple[int, int] | None = None) -> dict[str, list[Path]]:
    base = root / "images" if (root / "images").is_dir() else root
    if not base.is_dir():
        raise UsageError(f"{root} is not a folder of identity folders")
    wanted = None
    if people is not None:
        try:
            wanted = {ln.split("\t")[0].split()[0] for ln in people.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
        except OSError as exc:
            raise UsageError(f"cannot read --people {people}: {exc.strerror}") from None
    out = {}
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        if wanted is not None and d.name not in wanted:
            continue
        imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if imgs:
            out[d.name] = imgs
    if split is not None:
        k, n = split
        out = {name: imgs for i, (name, imgs) in enumerate(out.items()) if i % n == k}
    if not out:
        raise UsageError(f"no identity folders with images under {base}" + (f" named in {people}" if people else ""))
    return out


def build_protocol(ids: dict[str, list[Path]], max_gallery: int | None = None, templates: int = 1) -> Protocol:
    if templates < 1:
        raise UsageError(f"--templates {templates}: must be >= 1")
    enrolled: list[Any] = []
    tmpl: dict[Any, Any] = {}
    mated_by: dict[Any, Any] = {}
    nonmated: list[Any] = []
    multi = 0
    for name, imgs in ids.items():  # sorted by name
        if len(imgs) <= templates:
            enrolled.append(name)
            tmpl[name] = imgs
            mated_by[name] = []
            continue
        if multi % 2 == 0:
            enrolled.append(name)
            tmpl[name] = imgs[:templates]
            mated_by[name] = imgs[templates:]
        else:
            nonmated += imgs
        multi += 1
    enrolled.sort()
    if max_gallery is not None:
        enrolled = enrolled[:max_gallery]
    mated = [(p, n) for n in enrolled for p in mated_by[n]]
    paths = [p for n in enrolled for p in tmpl[n]]
    owners = [n for n in enrolled for _ in tmpl[n]]
    return Protocol(enrolled, paths, mated, nonmated, None if templates == 1 else owners)


def rates(t: float, mated_ok: np.ndarray, mated_d: np.ndarray, nonmated_d: np.ndarray) -> tuple[float, float]:
    """(FNIR, FPIR) at threshold t (pass = distance <= t)."""
    fpir = float((nonmated_d <= t).mean()) if len(nonmated_d) else 0.0
    fnir = float((~(mated_ok & (mated_d <= t))).mean()) if len(mated_d) else 0.0
    return fnir, fpir


def fpir_per_identity(t: float, nonmated_d: np.ndarray, nonmated: list[Path]) -> float:
    """FPIR with every non-mated identity weighted equally (each probe counts 1 / its identity's probe count).

    The protocol's FPIR counts probes, so an identity with 77 photos weighs
    77 times one with a single photo; one look-alike of an enrolled person
    with many photos can then dominate a small gallery's FPIR.
    """
    if not len(nonmated_d):
        return 0.0
    ids = np.array([p.parent.name for p in nonmated])
    _, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return float((w * (nonmated_d <= t)).sum() / w.sum())


def threshold_at_fpir(nonmated_d: np.ndarray, target: float) -> float:
    """The loosest threshold whose FPIR <= target."""
    s = np.sort(nonmated_d)
    k = int(np.floor(target * len(s)))
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], -np.inf))


@dataclass
class Described:
    """A protocol with every image described by the reader's embedding path."""

    proto: Protocol
    gallery: np.ndarray  # (T, 128) templates (one per enrolled identity unless --templates N)
    mated: np.ndarray  # (M, 128)
    nonmated: np.ndarray  # (N, 128)
    detection_failures: int
    embedder: str
    mirror: bool
    seconds: float

    @property
    def gallery_ids(self) -> np.ndarray:
        """The identity of each gallery row."""
        return np.array(self.proto.template_owner, dtype=object)

    def matrix(self) -> Any:
        from firmware_py.gallery.store import GalleryMatrix

        return GalleryMatrix(self.gallery, self.gallery_ids, {}, self.embedder, 0, "")


def describe_protocol(  # type: ignore[no-untyped-def]
    root: Path,
    cfg,
    people: Path | None = None,
    max_gallery: int | None = None,
    split: tuple[int, int] | None = None,
    mirror: bool | None = None,
    templates: int = 1,
) -> Described:
    """Build the protocol and describe its images exactly as the reader would (cached)."""
    from firmware_py.eval.stills import describer_from_config

    proto = build_protocol(identity_folders(root, people, split), max_gallery, templates)
    describer = describer_from_config(cfg, mirror=mirror)
    paths = sorted(set(proto.templates) | {p for p, _ in proto.mated} | set(proto.nonmated))
    desc = describer.describe_paths(paths)
    g = np.array([desc.of(p) for p in proto.templates], np.float32)
    mp = np.array([desc.of(p) for p, _ in proto.mated], np.float32).reshape(-1, 128)
    nm = np.array([desc.of(p) for p in proto.nonmated], np.float32).reshape(-1, 128)
    return Described(proto, g, mp, nm, desc.detection_failures, describer.embedder.version, describer.mirror, desc.seconds)


def score(d: Described, matcher: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mated top-1 correct, mated top-1 scores, non-mated top-1 scores) under ``matcher``."""
    m_ids, m_d = matcher.match_many(d.mated)
    _, n_d = matcher.match_many(d.nonmated)
    m_ok = np.array([m_ids[j] == n for j, (_, n) in enumerate(d.proto.mated)], bool)
    return m_ok, m_d, n_d


def walkup_groups(paths: list[Path], owners: list[str], m: int) -> list[list[int]]:
    """Indices of ``paths`` cut into walk-ups: each identity's images in file-name order, runs of ``m``."""
    by: dict[str, list[int]] = {}
    for i, o in enumerate(owners):
        by.setdefault(o, []).append(i)
    out = []
    for o in sorted(by):
        idx = sorted(by[o], key=lambda i: paths[i].name)
        out += [idx[j : j + m] for j in range(0, len(idx) - m + 1, m)]
    return out


def probe_matches(matcher: Any, probes: np.ndarray) -> list[Any]:
    """Each probe's MatchResult with no threshold (verdict "match" or "ambiguous"): :func:`at_threshold` applies one."""
    saved, matcher.threshold = matcher.threshold, float("inf")
    try:
        return [matcher.match(q) for q in probes]
    finally:
        matcher.threshold = saved


def at_threshold(m: Any, t: float) -> Any:
    """The reader's verdict for this result at threshold ``t`` (the margin check does not depend on it)."""
    from dataclasses import replace

    if m.distance is not None and m.distance > t:
        return replace(m, verdict="unknown", threshold=t)
    return replace(m, threshold=t)


def walkup_accepts(results: list[Any], groups: list[list[int]], t: float, k: int, n: int) -> list[str | None]:
    """The person each walk-up is accepted as (None: rejected), through the reader's DecisionMachine."""
    from firmware_py.decision.machine import DecisionMachine, DecisionParams

    # No cooldown (walk-ups are independent), no timeout inside a walk-up; liveness off.
    machine = DecisionMachine(DecisionParams(k=k, n=n, cooldown_s=0.0, track_timeout_s=1e9, liveness_timeout_s=1e9))
    out: list[str | None] = []
    for track, idx in enumerate(groups):
        decision = None
        for f, i in enumerate(idx):
            decision = machine.observe(track, track * 1000.0 + f * 0.1, at_threshold(results[i], t))
            if decision is not None:
                break
        end = machine.end_track(track, track * 1000.0 + len(idx) * 0.1 + 1.0)
        decision = decision or end
        out.append(decision.person_id if decision is not None and decision.accepted else None)
    return out


WALKUP_GRID = np.round(np.arange(0.10, 0.70001, 0.0025), 4)


def fused_probes(probes: np.ndarray, groups: list[list[int]], n: int) -> np.ndarray:
    """``recognition.track_fusion = "mean"``: each walk-up frame replaced by the mean of its walk-up's last ``n`` frames so far."""
    out = np.array(probes, np.float32, copy=True)
    for g in groups:
        for j, i in enumerate(g):
            out[i] = probes[g[max(0, j - n + 1) : j + 1]].mean(axis=0, dtype=np.float64)
    return out


def walkup_report(d: Described, matcher: Any, m: int, k: int, n: int, thresholds: dict[str, float], fusion: str = "vote") -> dict[str, Any]:
    """Per-walk-up FNIR / FPIR at the given thresholds and at fixed walk-up FPIRs (a 0.0025 grid of thresholds)."""
    mated_paths = [p for p, _ in d.proto.mated]
    mated_owner = [o for _, o in d.proto.mated]
    mg = walkup_groups(mated_paths, mated_owner, m)
    ng = walkup_groups(list(d.proto.nonmated), [p.parent.name for p in d.proto.nonmated], m)
    mp, npb = (d.mated, d.nonmated) if fusion == "vote" else (fused_probes(d.mated, mg, n), fused_probes(d.nonmated, ng, n))
    mres = probe_matches(matcher, mp) if len(mp) else []
    nres = probe_matches(matcher, npb) if len(npb) else []
    truth = [mated_owner[g[0]] for g in mg]

    def rates_at(t: float) -> tuple[float, float]:
        acc_m = walkup_accepts(mres, mg, t, k, n)
        acc_n = walkup_accepts(nres, ng, t, k, n)
        fnir = float(np.mean([a != w for a, w in zip(acc_m, truth, strict=True)])) if mg else 0.0
        fpir = float(np.mean([a is not None for a in acc_n])) if ng else 0.0
        return fnir, fpir

    out: dict[str, Any] = {"probes_per_walkup": m, "k": k, "n": n, "fusion": fusion, "mated_walkups": len(mg), "nonmated_walkups": len(ng)}
    for label, t in thresholds.items():
        fnir, fpir = rates_at(t)
        out[label] = {"value": round(t, 4), "fnir": round(fnir, 4), "fpir": round(fpir, 4)}
    curve = [(float(t), *rates_at(float(t))) for t in WALKUP_GRID]
    out["fnir_at_fpir"], out["threshold_at_fpir"] = {}, {}
    for f in TARGETS:
        best = None
        for t, fnir, fpir in curve:  # loosest threshold before the walk-up FPIR first exceeds the target
            if fpir > float(f):
                break
            best = (t, fnir)
        out["fnir_at_fpir"][f] = round(best[1], 4) if best else None
        out["threshold_at_fpir"][f] = best[0] if best else None
    return out


def run(  # type: ignore[no-untyped-def]
    root: Path,
    cfg,
    people: Path | None = None,
    max_gallery: int | None = None,
    calibrate_fpir: float | None = None,
    mirror: bool | None = None,
    normalise: bool = True,
    split: tuple[int, int] | None = None,
    templates: int = 1,
    walkup: int | None = None,
    fusion: str | None = None,
) -> dict:
    from firmware_py.gallery.calibration import calibrate
    from firmware_py.gallery.matcher import Matcher
    from firmware_py.pipeline.build import estimate_threshold

    d = describe_protocol(root, cfg, people, max_gallery, split, mirror, templates)
    proto = d.proto
    gm = d.matrix()
    # Scored exactly as the reader scores (the product Matcher, cohort normalisation included).
    matcher = Matcher(gm, threshold=cfg.recognition.threshold, min_margin=cfg.recognition.min_margin, normalise=normalise)
    m_ok, m_d, n_d = score(d, matcher)
    out: dict = {
        "gallery": len(proto.enrolled),
        "templates_per_person": templates,
        "templates": len(proto.templates),
        "mated": len(proto.mated),
        "nonmated": len(proto.nonmated),
        "rank1": round(float(m_ok.mean()), 4) if len(m_ok) else None,
        "fnir_at_fpir": {},
        "threshold_at_fpir": {},
    }
    for f in TARGETS:
        t = threshold_at_fpir(n_d, float(f)) if len(n_d) else float("inf")
        fnir, _ = rates(t, m_ok, m_d, n_d)
        out["fnir_at_fpir"][f] = round(fnir, 4)
        out["threshold_at_fpir"][f] = round(t, 4)
    t0 = cfg.recognition.threshold
    fnir, fpir = rates(t0, m_ok, m_d, n_d)
    per_id = {"fpir_per_identity": round(fpir_per_identity(t0, n_d, proto.nonmated), 4)}
    out["default_threshold"] = {"value": t0, "fnir": round(fnir, 4), "fpir": round(fpir, 4), **per_id}
    # What a reader with this gallery and no stored calibration uses (pipeline/build.py: choose_threshold).
    est = estimate_threshold(cfg, gm) if cfg.recognition.threshold_source == "gallery" else None
    t1 = est.value if est is not None else t0
    fnir, fpir = rates(t1, m_ok, m_d, n_d)
    out["reader_threshold"] = {
        "value": t1,
        "source": est.source if est else "config",
        "fnir": round(fnir, 4),
        "fpir": round(fpir, 4),
        "fpir_per_identity": round(fpir_per_identity(t1, n_d, proto.nonmated), 4),
    }
    if calibrate_fpir is not None:
        # The estimator alone (as `gallery calibrate --allow-looser`), then capped as `gallery calibrate` stores it.
        cal = calibrate(gm, calibrate_fpir)
        fnir, fpir = rates(cal.threshold, m_ok, m_d, n_d)
        capped = min(cal.threshold, t0)
        fnir_c, fpir_c = rates(capped, m_ok, m_d, n_d)
        out["calibrated_threshold"] = {
            "value": cal.threshold,
            "target_fpir": calibrate_fpir,
            "fnir": round(fnir, 4),
            "fpir": round(fpir, 4),
            "fpir_per_identity": round(fpir_per_identity(cal.threshold, n_d, proto.nonmated), 4),
            "capped": {"value": capped, "fnir": round(fnir_c, 4), "fpir": round(fpir_c, 4)},
            "method": cal.method,
        }
    if walkup is not None:
        thresholds = {"default_threshold": t0, "reader_threshold": t1}
        if "calibrated_threshold" in out:
            thresholds["calibrated_threshold"] = out["calibrated_threshold"]["capped"]["value"]
        fusion = fusion or cfg.recognition.track_fusion
        out["walkup"] = walkup_report(d, matcher, walkup, cfg.decision.k, cfg.decision.n, thresholds, fusion)
    out["cohort_normalised"] = matcher.normalised
    out["split"] = f"{split[0]}/{split[1]}" if split else None
    out["detection_failures"] = d.detection_failures
    out["embedder"] = d.embedder
    out["mirror_average"] = d.mirror
    out["align_source"] = cfg.vision.align.source
    out["describe_s"] = round(d.seconds, 1)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("identify", help="open-set 1:N identification (FNIR at FPIR), the issue's protocol")
    p.add_argument("--root", type=Path, required=True, help="folder of identity folders (or with images/<identity>/)")
    p.add_argument("--people", type=Path, help="only identities listed in this file (first column)")
    p.add_argument("--max-gallery", type=int, help="keep the first G enrolled identities (sorted)")
    p.add_argument("--split", type=parse_split, help="only identities K, K+N, K+2N... in sorted order (K/N; lfw-dev: 0/2 tunes, 1/2 reports)")
    p.add_argument("--calibrate-fpir", type=float, help="also report the threshold `gallery calibrate` would set from this gallery for this FPIR")
    p.add_argument("--config", help="TOML config file (threshold, front-end and embedder settings)")
    p.add_argument("--mirror", choices=["config", "on", "off"], default="config", help="mirrored-chip averaging (default: the config)")
    p.add_argument("--templates", type=int, default=1, help="enrol each enrolled identity from its first N images (default 1)")
    p.add_argument("--walkup", type=int, metavar="M", help="also score walk-ups of M probe images through the decision machine's K-of-N rule")
    p.add_argument(
        "--fusion",
        choices=["config", "vote", "mean"],
        default="config",
        help="walk-up frames matched one by one (vote) or on their running mean (default: the config)",
    )
    p.add_argument("--raw", action="store_true", help="raw distances, without the matcher's cohort normalisation (for comparison)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_identify)


def cmd_identify(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    mirror = None if args.mirror == "config" else args.mirror == "on"
    if args.templates < 1 or (args.walkup is not None and args.walkup < 1):
        raise UsageError("--templates and --walkup must be >= 1")
    if args.fusion != "config" and args.walkup is None:
        raise UsageError(f"--fusion {args.fusion}: only walk-ups are fused; give --walkup M too")
    if args.walkup is not None and args.walkup < cfg.decision.k:
        raise UsageError(f"--walkup {args.walkup}: fewer probes than decision.k = {cfg.decision.k}; no walk-up could ever be accepted")
    out = run(
        args.root,
        cfg,
        args.people,
        args.max_gallery,
        args.calibrate_fpir,
        mirror,
        not args.raw,
        args.split,
        args.templates,
        args.walkup,
        None if args.fusion == "config" else args.fusion,
    )
    print(json.dumps(out, indent=2))
    return 0
