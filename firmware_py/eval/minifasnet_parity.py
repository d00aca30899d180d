"""Parity of the committed LiteRT MiniFASNet nets with the numpy float64 reference forward pass, on real dev crops.

Used by ``kaoclock models verify --data DATA``.  The crops are the daemon's:
BlazeFace's box on each dev still (NUAA live and print, replay-crops real and
fake: ``liveness-dev.csv`` rows of kind ``image``, evenly spaced), mapped by
:data:`~firmware_py.liveness.learned.BOX_MAP`, cropped at 2.7 and 4.0.  The
reference reads the source ``.pth`` files (``<data>/models-src/minifasnet/``)
with the torch-free reader.  Reported: max and mean absolute difference of
the real-class probability per net and for the ensemble (their mean), over
``n`` faces.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.errors import UsageError


def learned_parity(models_dir: Path, data: Path, faces: int = 600) -> dict[str, Any]:
    from firmware_py.convert.minifasnet import REAL_CLASS, forward, load_network
    from firmware_py.convert.minifasnet_build import SOURCES, check_sources
    from firmware_py.liveness.learned import BOX_MAP, SCALES, crop, load_learned
    from firmware_py.liveness.presentations import load_rgb, read_manifest
    from firmware_py.models.manifest import load_manifest
    from firmware_py.vision.detector import FaceDetector

    manifest_csv = Path(data) / "liveness-dev.csv"
    if not manifest_csv.is_file():
        raise UsageError(f"{manifest_csv}: missing; --data must be the shared face data set")
    sources = check_sources(data)
    refs = {n: load_network(sources[n]) for n in SOURCES}

    model = load_learned(models_dir)
    det = FaceDetector(load_manifest().require("blazeface_short_range", models_dir))
    stills = [p for p in read_manifest(manifest_csv) if p.kind == "image"]
    step = max(1, len(stills) // faces)
    picked = stills[::step][:faces]
    diffs: dict[str, list[float]] = {n: [] for n in (*SCALES, "ensemble")}
    lite_s = ref_s = 0.0
    skipped = 0
    for p in picked:
        img = load_rgb(p.files()[0])
        found = det.detect(img)
        if not found:
            skipped += 1
            continue
        x0, y0, x1, y1 = (float(v) for v in found[0].box)
        xywh = BOX_MAP.apply((x0, y0, x1, y1))
        t = time.perf_counter()
        lite = model.probabilities(img, xywh)
        lite_s += time.perf_counter() - t
        t = time.perf_counter()
        ref = {n: forward(refs[n], crop(img, xywh, s)[0][None].astype(np.float64))[0] for n, s in SCALES.items()}
        ref_s += time.perf_counter() - t
        for n in SCALES:
            diffs[n].append(abs(float(lite[n][REAL_CLASS]) - float(ref[n][REAL_CLASS])))
        diffs["ensemble"].append(abs(np.mean([lite[n][REAL_CLASS] for n in SCALES]) - np.mean([ref[n][REAL_CLASS] for n in SCALES])))
    count = len(diffs["ensemble"])
    if count == 0:
        raise UsageError("no face found in any dev still: is --data the shared face data set?")
    return {
        "n": count,
        "no_face": skipped,
        "source": f"{manifest_csv.name} stills (NUAA live/print, replay-crops real/fake), every {step}th; BlazeFace box mapped by {BOX_MAP}",
        "reference": "numpy float64 forward pass of the source .pth files (firmware_py.convert.minifasnet)",
        **{f"{k}_p_real": {"max_abs_diff": float(f"{max(v):.3g}"), "mean_abs_diff": float(f"{np.mean(v):.3g}")} for k, v in diffs.items()},
        "ms_per_face_litert": round(1000 * lite_s / count, 3),
        "ms_per_face_reference": round(1000 * ref_s / count, 3),
    }
