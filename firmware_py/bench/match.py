"""`kaoclock bench match`: 1:N latency per probe against this machine's memory bandwidth.

A probe reads the whole gallery matrix once (128 float32 per template), so
the floor of its latency is gallery bytes / memory bandwidth.  The bandwidth
is measured in the same run, with the same kind of read the matcher does (a
BLAS dot product over a buffer far larger than the caches), and each gallery
size is reported as ``ratio = ms_p50 / bound_ms``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from firmware_py.gallery.blas import limit_blas_threads
from firmware_py.gallery.matcher import Matcher
from firmware_py.gallery.store import GalleryMatrix

SIZES = (5_000, 50_000, 1_000_000)
TEMPLATES_PER_PERSON = 2


def measure_bandwidth_gb_s(mbytes: int = 512, repeats: int = 7) -> float:
    """Best-of-N read bandwidth (GB/s) of a float32 dot product over ``mbytes`` MB."""
    x = np.ones(mbytes * (1 << 20) // 4, np.float32)
    y = np.ones(128, np.float32)
    m = x.reshape(-1, 128)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        m @ y  # the matcher's own access pattern: one streaming pass over a (rows, 128) matrix
        best = min(best, time.perf_counter() - t0)
    return x.nbytes / best / 1e9


def synthetic_gallery(n: int, seed: int = 0) -> GalleryMatrix:
    """``n`` templates at dlib's scale, two per person."""
    rng = np.random.default_rng(seed)
    g = rng.normal(0.0, 0.09, (n, 128)).astype(np.float32)
    ids = np.array([f"p{i // TEMPLATES_PER_PERSON:07d}" for i in range(n)], dtype=object)
    return GalleryMatrix(g, ids, {}, "synthetic", 0, "")


def bench_size(n: int, probes: int, seed: int = 0) -> dict[str, float]:
    gal = synthetic_gallery(n, seed)
    persons = len(set(gal.person_ids.tolist()))
    # Per-person densities given (computing them is O(T^2), done once at load): each probe pays the normalisation.
    density = np.random.default_rng(seed + 2).normal(0.55, 0.05, persons).astype(np.float32)
    matcher = Matcher(gal, threshold=0.45, min_margin=0.04, density=density)
    assert matcher.normalised
    rng = np.random.default_rng(seed + 1)
    qs = rng.normal(0.0, 0.09, (probes + 3, 128)).astype(np.float32)
    for q in qs[:3]:  # warm-up
        matcher.match(q)
    times = []
    for q in qs[3:]:
        t0 = time.perf_counter()
        matcher.match(q)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"gallery": n, "ms_p50": float(np.percentile(times, 50)), "ms_p95": float(np.percentile(times, 95)), "gallery_mb": gal.matrix.nbytes / 1e6}


def run(sizes: tuple[int, ...] = SIZES, probes: int = 50) -> dict[str, object]:
    limited = limit_blas_threads(1)  # as on the reader (see gallery/blas.py)
    results = []
    bws = [measure_bandwidth_gb_s()]
    for n in sizes:
        r = bench_size(n, probes if n <= 100_000 else max(10, probes // 5))
        results.append(r)
    bws.append(measure_bandwidth_gb_s())  # before and after: the machine is shared
    bw = max(bws)
    for r in results:
        r["bound_ms"] = r["gallery_mb"] * 1e6 / (bw * 1e9) * 1e3
        r["ratio"] = r["ms_p50"] / r["bound_ms"]
        for k in ("ms_p50", "ms_p95", "bound_ms", "ratio", "gallery_mb"):
            r[k] = round(r[k], 3)
    return {
        "bandwidth_gb_s": round(bw, 2),
        "bandwidth_runs_gb_s": [round(b, 2) for b in bws],
        "blas_threads": 1 if limited else None,
        "results": results,
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("match", help="1:N latency for 5k / 50k / 1M templates vs measured memory bandwidth")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), default=SIZES, help="gallery sizes, comma-separated")
    p.add_argument("--probes", type=int, default=50, help="probes per size (a fifth of it above 100k)")
    p.set_defaults(func=cmd_match)


def cmd_match(args: argparse.Namespace) -> int:
    print(json.dumps(run(args.sizes, args.probes), indent=2))
    return 0
