"""`kaoclock eval align` and `kaoclock eval detect`: how close and how complete the vision stages are, on real data.

``eval align`` puts our chip next to dlib's own chip of the same photo
(dlib's HOG detector, its 5-point shape predictor, ``get_face_chip(img,
shape, 150, 0.25)``) and embeds both with dlib's ResNet descriptor: the
descriptor distance is what misalignment costs recognition.  Every landmark
source is measured (FaceMesh's 5 points, the detector's 4 keypoints, and
FaceMesh's points with dlib's template uncalibrated), plus a noise floor:
dlib against itself when its detector box changes (upsample 0 instead of 1).
``--fit`` also prints the calibrated templates (the constants in
:mod:`firmware_py.vision.align`).  Needs dlib (the dev extra).

``eval detect`` counts faces found in a folder of images and in video clips
(frames scaled to a camera mode, default 640x480), with per-stage times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from firmware_py.config import load
from firmware_py.errors import KaoclockError, UsageError
from firmware_py.models.manifest import load_manifest
from firmware_py.vision.align import (
    CHIP_PADDING,
    CHIP_SIZE,
    DETECTOR4_TEMPLATE,
    DLIB5_TEMPLATE,
    FACEMESH5_TEMPLATE,
    align_chip,
    chip_geometry,
)
from firmware_py.vision.detector import FaceDetection, FaceDetector
from firmware_py.vision.landmarks import DLIB5, FaceMesh

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="our aligned chips vs dlib's get_face_chip, in dlib descriptor distance")
    p.add_argument("--root", required=True, help="folder of face images (searched recursively), e.g. lfw-dev/images")
    p.add_argument("--limit", type=int, default=1000, help="images to use, spread evenly over the sorted list (default 1000)")
    p.add_argument("--offset", type=int, default=0, help="shift the evenly spaced picks by this many images (a disjoint set for --fit)")
    p.add_argument("--fit", action="store_true", help="also print templates fitted on these images (the constants in vision/align.py)")
    p.add_argument("--config", help="config file ([vision] settings); default: built-in")
    p.add_argument("--json", action="store_true", help="JSON only (default: JSON too; kept for symmetry with other evals)")
    p.set_defaults(func=cmd_align)

    d = sub.add_parser("detect", help="face detection rate on images and video clips, with per-stage ms")
    d.add_argument("--root", required=True, action="append", help="folder of images and/or videos, or one video (repeatable)")
    d.add_argument("--limit", type=int, default=1000, help="images per folder, spread evenly (default 1000)")
    d.add_argument("--size", default="640x480", help="video frames are scaled to this camera mode (default 640x480)")
    d.add_argument("--max-frames", type=int, default=300, help="frames per video (default 300)")
    d.add_argument("--config", help="config file ([vision] settings); default: built-in")
    d.add_argument("--json", action="store_true", help="JSON on stdout")
    d.set_defaults(func=cmd_detect)


def _spread(files: list[Path], limit: int, offset: int = 0) -> list[Path]:
    if limit <= 0 or limit >= len(files):
        return files
    step = len(files) / limit
    return [files[min(len(files) - 1, int(i * step) + offset)] for i in range(limit)]


def _stats(v: list[float]) -> dict[str, float | int]:
    if not v:
        return {"n": 0}
    a = np.asarray(v, np.float64)
    return {
        "n": len(a),
        "mean": round(float(a.mean()), 4),
        "median": round(float(np.median(a)), 4),
        "p95": round(float(np.percentile(a, 95)), 4),
        "max": round(float(a.max()), 4),
    }


def _nearest_centre(dets: list[FaceDetection], w: int, h: int) -> FaceDetection | None:
    if not dets:
        return None
    return min(dets, key=lambda d: np.hypot(d.centre[0] - w / 2, d.centre[1] - h / 2))


def _load_rgb(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError:
        return None


def _images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise UsageError(f"--root {root} is not a folder (fix: give a folder of images, e.g. .../lfw-dev/images)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"--root {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _dlib() -> Any:
    try:
        import dlib
    except ImportError:
        raise KaoclockError("eval align needs dlib as the reference (fix: pip install -e '.[dev]', which brings dlib-bin)") from None
    return dlib


def _unit(geom_to_chip: np.ndarray) -> np.ndarray:
    """Chip pixels -> dlib's unit-square template coordinates."""
    return geom_to_chip / CHIP_SIZE * (1 + 2 * CHIP_PADDING) - CHIP_PADDING


def cmd_align(args: argparse.Namespace) -> int:
    dlib = _dlib()
    cfg = load(args.config)
    mdir = cfg.models.dir
    manifest = load_manifest()
    exact = cfg.vision.align.resample == "dlib"
    detector = FaceDetector(manifest.require("blazeface_short_range", mdir), min_face_px=20, score_threshold=cfg.vision.detector.score_threshold)
    mesh = FaceMesh(manifest.require("facemesh", mdir), roi_scale=cfg.vision.landmarks.roi_scale)
    hog = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(manifest.require("dlib_shape_predictor_5", mdir)))
    rec = dlib.face_recognition_model_v1(str(manifest.require("dlib_resnet_v1", mdir)))

    files = _spread(_images(Path(args.root)), args.limit, args.offset)
    sources = ("facemesh", "detector", "facemesh_dlib_template")
    dist: dict[str, list[float]] = {s: [] for s in sources}
    dlib_self: list[float] = []
    fails = {"ours": 0, "dlib": 0, "unreadable": 0, "facemesh_low_presence": 0}
    fit: dict[str, list[np.ndarray]] = {"facemesh": [], "detector": []}
    ms: dict[str, list[float]] = {"ours_detect": [], "ours_landmarks": [], "ours_align": [], "dlib_detect": [], "dlib_shape_chip": []}
    t_start = time.monotonic()
    for done, path in enumerate(files):
        if done and done % 100 == 0:
            print(f"eval align: {done}/{len(files)} images, {time.monotonic() - t_start:.0f} s", file=sys.stderr, flush=True)
        img = _load_rgb(path)
        if img is None:
            fails["unreadable"] += 1
            continue
        h, w = img.shape[:2]
        t0 = time.perf_counter()
        rects = hog(img, 1)
        t1 = time.perf_counter()
        ms["dlib_detect"].append((t1 - t0) * 1000)
        det = _nearest_centre(detector.detect(img), w, h)
        t2 = time.perf_counter()
        ms["ours_detect"].append((t2 - t1) * 1000)
        if not rects:
            fails["dlib"] += 1
        if det is None:
            fails["ours"] += 1
        if not rects or det is None:
            continue
        t2 = time.perf_counter()
        lm = mesh.landmarks(img, det)
        t3 = time.perf_counter()
        ms["ours_landmarks"].append((t3 - t2) * 1000)
        if lm.presence < cfg.vision.landmarks.min_presence:
            fails["facemesh_low_presence"] += 1
        mesh5 = lm.points[list(DLIB5), :2]
        chips = {
            "facemesh": align_chip(img, mesh5, FACEMESH5_TEMPLATE, exact=exact),
            "detector": align_chip(img, det.keypoints[:4], DETECTOR4_TEMPLATE, exact=exact),
            "facemesh_dlib_template": align_chip(img, mesh5, DLIB5_TEMPLATE, exact=exact),
        }
        ms["ours_align"].append((time.perf_counter() - t3) * 1000)
        t4 = time.perf_counter()
        rect = min(rects, key=lambda r: np.hypot(r.center().x - w / 2, r.center().y - h / 2))
        shape = sp(img, rect)
        ref = dlib.get_face_chip(img, shape, CHIP_SIZE, CHIP_PADDING)
        ms["dlib_shape_chip"].append((time.perf_counter() - t4) * 1000)
        batch = [ref, *chips.values()]
        rects0 = hog(img, 0)
        if rects0:
            r0 = min(rects0, key=lambda r: np.hypot(r.center().x - w / 2, r.center().y - h / 2))
            batch.append(dlib.get_face_chip(img, sp(img, r0), CHIP_SIZE, CHIP_PADDING))
        d = np.asarray(rec.compute_face_descriptor(batch))
        for i, s in enumerate(sources, start=1):
            dist[s].append(float(np.linalg.norm(d[0] - d[i])))
        if rects0:
            dlib_self.append(float(np.linalg.norm(d[0] - d[-1])))
        if args.fit:
            g = chip_geometry(np.array([[p.x, p.y] for p in shape.parts()], float), DLIB5_TEMPLATE)
            fit["facemesh"].append(_unit(g.to_chip(mesh5)))
            fit["detector"].append(_unit(g.to_chip(det.keypoints[:4])))

    out: dict[str, Any] = {
        "root": str(args.root),
        "images": len(files),
        "n": len(dist["facemesh"]),
        "descriptor": "dlib face_recognition_model_v1 (float, dlib's own forward)",
        "reference": "dlib HOG (upsample 1) + shape_predictor_5_face_landmarks + get_face_chip(img, shape, 150, 0.25)",
        "landmark_source_used": cfg.vision.align.source,
        "resample": cfg.vision.align.resample,
        "distance": {s: _stats(v) for s, v in dist.items()},
        "dlib_self_distance": {"what": "dlib's chip with its detector at upsample 0 vs 1 (dlib's own wobble)", **_stats(dlib_self)},
        "detection_failures": fails,
        "ms_median": {k: round(float(np.median(v)), 3) for k, v in ms.items() if v},
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    if args.fit:
        out["fitted_templates"] = {k: np.round(np.mean(v, axis=0), 4).tolist() for k, v in fit.items() if v}
    print(json.dumps(out, indent=2))
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from firmware_py.capture.base import CameraError, frames_of
    from firmware_py.capture.replay import VideoReplay
    from firmware_py.vision.analyzer import FaceAnalyzer

    cfg = load(args.config)
    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {args.size!r} is not WIDTHxHEIGHT (fix: e.g. --size 640x480)") from None
    analyzer = FaceAnalyzer.from_config(cfg)
    analyzer.lazy = False  # time every stage on every frame
    detector = analyzer.detector
    out: dict[str, Any] = {"min_face_px": detector.min_face_px, "score_threshold": detector.score_threshold, "image_sets": [], "videos": []}
    for root_s in args.root:
        root = Path(root_s)
        if not root.exists():
            raise UsageError(f"--root {root} does not exist (fix: give a folder of images or videos, or a video file)")
        if root.is_dir():
            videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
            images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            videos, images = [root], []
        if images:
            picked = _spread(images, args.limit)
            found = faces = 0
            det_ms = []
            for p in picked:
                img = _load_rgb(p)
                if img is None:
                    continue
                dets = detector.detect(img)
                det_ms.append(detector.last_ms)
                found += bool(dets)
                faces += len(dets)
            out["image_sets"].append(
                {
                    "root": str(root),
                    "images": len(picked),
                    "with_face": found,
                    "rate": round(found / max(1, len(picked)), 4),
                    "faces_per_image": round(faces / max(1, len(picked)), 3),
                    "detect_ms_median": round(float(np.median(det_ms)), 3) if det_ms else None,
                }
            )
        for v in videos:
            try:
                cam = VideoReplay(v, size=(w, h))
                cam.open()
            except CameraError as exc:
                out["videos"].append({"file": str(v), "error": str(exc)})
                continue
            analyzer.tracker.reset()
            frames = with_face = 0
            ids: set[int] = set()
            stages: dict[str, list[float]] = {}
            invoke: list[float] = []
            total: list[float] = []
            try:
                for f in frames_of(cam, args.max_frames):
                    r = analyzer.process(f)
                    frames += 1
                    with_face += bool(r.observations)
                    ids.update(o.track_id for o in r.observations)
                    total.append(r.total_ms)
                    invoke.append(r.model_invoke_ms)
                    for k, val in r.stages_ms.items():
                        stages.setdefault(k, []).append(val)
            finally:
                cam.close()
            out["videos"].append(
                {
                    "file": str(v),
                    "frames": frames,
                    "with_face": with_face,
                    "rate": round(with_face / max(1, frames), 4),
                    "tracks": len(ids),
                    "frame_ms_median": round(float(np.median(total)), 3) if total else None,
                    "model_invoke_ms_median": round(float(np.median(invoke)), 3) if invoke else None,
                    "stages_ms_median": {k: round(float(np.median(x)), 3) for k, x in stages.items()},
                }
            )
    print(json.dumps(out, indent=2))
    return 0
