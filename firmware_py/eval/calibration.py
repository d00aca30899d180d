"""`kaoclock eval calibration`: does `gallery calibrate` reach the FPIR it targets, on sites of a given size?

One gallery says little about an estimator (taiwan-dev is one site of 7
people), so this draws many sites: for each size in ``--sizes``, ``--draws``
random sets of enrolled identities of the ``eval identify`` protocol (one
template each) form a gallery; :func:`~firmware_py.gallery.calibration.calibrate`
estimates its threshold for ``--target-fpir`` from that gallery alone (not
capped at the configured default, so the estimator itself is judged); the
FPIR it reaches is measured with every non-mated probe of the protocol
against that gallery through the product :class:`~firmware_py.gallery.matcher.Matcher`.

Prints per size: the mean (what a fleet of such sites lets through: the
criterion ``SD_INFLATION`` is chosen by), median and 90th percentile of the reached FPIR, the
share of sites whose reached FPIR exceeds the target (and twice the target),
the same with every non-mated identity weighted equally (``per_identity``),
the median threshold, and the median FNIR over the drawn people's mated
probes; ``capped_at_default`` gives the same for the estimate capped at
``recognition.threshold`` (what `gallery calibrate` stores by default and
what a reader without a stored calibration uses).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_py.config import load
from firmware_py.eval.identify import Described, Protocol, describe_protocol, fpir_per_identity, parse_split, rates, score

if TYPE_CHECKING:
    from firmware_py.config import Config


def study(d: Described, sizes: list[int], draws: int, target: float, default: float, seed: int = 0) -> list[dict[str, Any]]:
    from firmware_py.gallery.calibration import calibrate
    from firmware_py.gallery.matcher import Matcher
    from firmware_py.gallery.store import GalleryError, GalleryMatrix

    rng = np.random.default_rng(seed)
    names = np.array(d.proto.enrolled, dtype=object)
    mated_of = np.array([n for _, n in d.proto.mated], dtype=object)
    out = []
    for size in sizes:
        if size > len(names):
            continue
        fpir, fpir_cap, fpir_id, fnir, fnir_cap, ts = [], [], [], [], [], []
        unusable = 0
        for _ in range(draws):
            pick = np.sort(rng.choice(len(names), size, replace=False))
            gm = GalleryMatrix(d.gallery[pick], names[pick], {}, d.embedder, 0, "")
            try:
                t = calibrate(gm, target).threshold
            except GalleryError:  # no usable threshold (t <= 0): this site could not calibrate, counted as t = 0
                t, unusable = 0.0, unusable + 1
            m = Matcher(gm, threshold=t)
            mine = np.isin(mated_of, names[pick])
            proto = Protocol(list(names[pick]), [], [pm for pm, keep in zip(d.proto.mated, mine, strict=True) if keep], d.proto.nonmated)
            sub = Described(proto, d.gallery[pick], d.mated[mine], d.nonmated, 0, d.embedder, d.mirror, 0.0)
            ok, md, nd = score(sub, m)
            fn, fp = rates(t, ok, md, nd)
            fpir.append(fp)
            fpir_id.append(fpir_per_identity(t, nd, d.proto.nonmated))
            fpir_cap.append(rates(min(t, default), ok, md, nd)[1])
            ts.append(t)
            if len(md):
                fnir.append(fn)
                fnir_cap.append(rates(min(t, default), ok, md, nd)[0])
        a, c, w = np.array(fpir), np.array(fpir_cap), np.array(fpir_id)
        out.append(
            {
                "persons": size,
                "draws": draws,
                "fpir_reached_mean": round(float(np.mean(a)), 4),
                "fpir_reached_median": round(float(np.median(a)), 4),
                "fpir_reached_p90": round(float(np.quantile(a, 0.9)), 4),
                "share_over_target": round(float((a > target).mean()), 3),
                "share_over_2x_target": round(float((a > 2 * target).mean()), 3),
                "per_identity": {"fpir_reached_median": round(float(np.median(w)), 4), "share_over_target": round(float((w > target).mean()), 3)},
                "capped_at_default": {
                    "fpir_reached_mean": round(float(np.mean(c)), 4),
                    "fpir_reached_median": round(float(np.median(c)), 4),
                    "fpir_reached_p90": round(float(np.quantile(c, 0.9)), 4),
                    "share_over_target": round(float((c > target).mean()), 3),
                    "fnir_median": round(float(np.median(fnir_cap)), 4) if fnir_cap else None,
                },
                "threshold_median": round(float(np.median(ts)), 4),
                "unusable": unusable,
                "fnir_median": round(float(np.median(fnir)), 4) if fnir else None,
            }
        )
    return out


def run(root: Path, cfg: Config, people: Path | None, split: tuple[int, int] | None, sizes: list[int], draws: int, target: float) -> dict[str, Any]:
    d = describe_protocol(root, cfg, people, None, split)
    return {
        "target_fpir": target,
        "split": f"{split[0]}/{split[1]}" if split else None,
        "enrolled": len(d.proto.enrolled),
        "nonmated": len(d.proto.nonmated),
        "default_threshold": cfg.recognition.threshold,
        "sizes": study(d, sizes, draws, target, cfg.recognition.threshold),
        "embedder": d.embedder,
        "align_source": cfg.vision.align.source,
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibration", help="FPIR reached by `gallery calibrate` on many random sites of given sizes")
    p.add_argument("--root", type=Path, required=True, help="folder of identity folders (or with images/<identity>/)")
    p.add_argument("--people", type=Path, help="only identities listed in this file (first column)")
    p.add_argument("--split", type=parse_split, help="identities K, K+N, ... in sorted order (K/N)")
    p.add_argument("--sizes", default="7,20,50", help="site sizes in people (default 7,20,50)")
    p.add_argument("--draws", type=int, default=100, help="random sites per size (default 100)")
    p.add_argument("--target-fpir", type=float, default=0.003, help="FPIR to calibrate for (default 0.003)")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_calibration)


def cmd_calibration(args: argparse.Namespace) -> int:
    sizes = [int(x) for x in args.sizes.split(",")]
    print(json.dumps(run(args.root, load(args.config), args.people, args.split, sizes, args.draws, args.target_fpir), indent=2))
    return 0
