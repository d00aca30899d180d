"""`kaoclock eval identify`: open-set 1:N identification, the issue's exact protocol.

Identity folders sorted by name (optionally only those in ``--people``).
Identities with >= 2 images alternate in that order: the 1st, 3rd, 5th ...
are enrolled (their first image by file name is the template, their other
images are mated probes); the 2nd, 4th ... are not enrolled (all their
images are non-mated probes).  Identities with one image are enrolled as
distractors.  ``--max-gallery G`` keeps the first G enrolled identities in
sorted order (mated probes only of those; non-mated probes unchanged).

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
    templates: list[Path]  # one per enrolled identity
    mated: list[tuple[Path, str]]  # (probe, its identity)
    nonmated: list[Path]


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


def build_protocol(ids: dict[str, list[Path]], max_gallery: int | None = None) -> Protocol:
    enrolled, templates, mated_by, nonmated = [], {}, {}, []
    multi = 0
    for name, imgs in ids.items():  # sorted by name
        if len(imgs) == 1:
            enrolled.append(name)
            templates[name] = imgs[0]
            mated_by[name] = []
            continue
        if multi % 2 == 0:
            enrolled.append(name)
            templates[name] = imgs[0]
            mated_by[name] = imgs[1:]
        else:
            nonmated += imgs
        multi += 1
    enrolled.sort()
    if max_gallery is not None:
        enrolled = enrolled[:max_gallery]
    mated = [(p, n) for n in enrolled for p in mated_by[n]]
    return Protocol(enrolled, [templates[n] for n in enrolled], mated, nonmated)


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
    gallery: np.ndarray  # (G, 128) one template per enrolled identity
    mated: np.ndarray  # (M, 128)
    nonmated: np.ndarray  # (N, 128)
    detection_failures: int
    embedder: str
    mirror: bool
    seconds: float

    def matrix(self) -> Any:
        from firmware_py.gallery.store import GalleryMatrix

        return GalleryMatrix(self.gallery, np.array(self.proto.enrolled, dtype=object), {}, self.embedder, 0, "")


def describe_protocol(  # type: ignore[no-untyped-def]
    root: Path,
    cfg,
    people: Path | None = None,
    max_gallery: int | None = None,
    split: tuple[int, int] | None = None,
    mirror: bool | None = None,
) -> Described:
    """Build the protocol and describe its images exactly as the reader would (cached)."""
    from firmware_py.eval.stills import describer_from_config

    proto = build_protocol(identity_folders(root, people, split), max_gallery)
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


def run(  # type: ignore[no-untyped-def]
    root: Path,
    cfg,
    people: Path | None = None,
    max_gallery: int | None = None,
    calibrate_fpir: float | None = None,
    mirror: bool | None = None,
    normalise: bool = True,
    split: tuple[int, int] | None = None,
) -> dict:
    from firmware_py.gallery.calibration import calibrate
    from firmware_py.gallery.matcher import Matcher
    from firmware_py.pipeline.build import estimate_threshold

    d = describe_protocol(root, cfg, people, max_gallery, split, mirror)
    proto = d.proto
    gm = d.matrix()
    # Scored exactly as the reader scores (the product Matcher, cohort normalisation included).
    matcher = Matcher(gm, threshold=cfg.recognition.threshold, normalise=normalise)
    m_ok, m_d, n_d = score(d, matcher)
    out: dict = {
        "gallery": len(proto.enrolled),
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
    p.add_argument("--raw", action="store_true", help="raw distances, without the matcher's cohort normalisation (for comparison)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_identify)


def cmd_identify(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    mirror = None if args.mirror == "config" else args.mirror == "on"
    print(json.dumps(run(args.root, cfg, args.people, args.max_gallery, args.calibrate_fpir, mirror, not args.raw, args.split), indent=2))
    return 0
