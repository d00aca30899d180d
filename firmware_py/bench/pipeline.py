"""`kaoclock bench pipeline`: per-frame latency of the whole recognition core on a real clip.

The clip's frames are decoded and resized to 640x480 (a typical camera mode)
before any timing, into the 4-byte RGBX frames the capture backends deliver.  Each frame then goes through the reader's pipeline
(detect, track, landmarks, align, quality, embed, 1:N match, decide) against
a gallery of ``--gallery`` templates: the clip's person enrolled from its
first usable frame, plus synthetic templates.  ``overhead_ratio`` is the
frame time over the time spent inside model invokes: how much the Python
around the models costs.  ``--peer`` runs the face_recognition-style dlib
pipeline on the same frames in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from firmware_py.config import load, with_changes
from firmware_py.errors import UsageError
from firmware_py.progress import Progress

if TYPE_CHECKING:
    from firmware_py.config import Config

SIZE = (640, 480)


def decode_frames(path: Path, max_frames: int | None = None) -> tuple[list[np.ndarray], list[float]]:
    """Frames resized to 640x480 as ``(480, 640, 4)`` RGBX pixels (the layout the capture backends
    deliver, see capture/frame.py), and their timestamps (s), all decoded up front."""
    import av

    if not path.is_file():
        raise UsageError(f"no video at {path}")
    frames, ts = [], []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for f in c.decode(stream):
            img = f.to_image().convert("RGB").resize(SIZE, Image.Resampling.BILINEAR).convert("RGBX")
            frames.append(np.ascontiguousarray(np.asarray(img)))
            ts.append(float(f.time) if f.time is not None else len(ts) / 25.0)
            if max_frames and len(frames) >= max_frames:
                break
    if not frames:
        raise UsageError(f"{path} has no decodable video frames")
    return frames, ts


def rss_mb_peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pct(v: list[float], q: float) -> float:
    return round(float(np.percentile(v, q)), 3) if v else 0.0


def run(source: Path, cfg: Config, gallery_size: int = 5000, peer: bool = False, max_frames: int | None = None) -> dict[str, Any]:
    from firmware_py.capture.frame import Frame
    from firmware_py.gallery.blas import limit_blas_threads
    from firmware_py.gallery.store import GalleryMatrix, open_from_config
    from firmware_py.pipeline.build import build_analyzer, build_pipeline
    from firmware_py.pipeline.loop import RecognitionPipeline, stage_percentiles
    from firmware_py.vision.embedding import describe_face, load_embedder

    limit_blas_threads(1)
    frames, ts = decode_frames(source, max_frames)
    embedder = load_embedder(cfg)
    analyzer = build_analyzer(cfg)

    # Gallery: the clip's person (from the first frame with a face) + synthetic templates.
    enrolled = None
    for img in frames:
        analyzer.reset()
        obs = analyzer.process(Frame.from_rgbx(img, 0.0, 0, str(source))).primary
        if obs is not None and obs.chip is not None:
            enrolled = describe_face(embedder, obs.chips, cfg.recognition.mirror_average)
            break
    analyzer.reset()
    rng = np.random.default_rng(0)
    n_syn = max(0, gallery_size - (1 if enrolled is not None else 0))
    # Synthetic people placed like real ones: ~0.6 from the clip's person, ~0.85 from each other (dlib scale).
    centre = enrolled if enrolled is not None else np.zeros(128, np.float32)
    rows = (centre + rng.normal(0.0, 0.053, (n_syn, 128))).astype(np.float32)
    ids = [f"syn{i:07d}" for i in range(n_syn)]
    if enrolled is not None:
        rows = np.concatenate([enrolled[None], rows])
        ids = ["clip-person", *ids]
    gal = GalleryMatrix(rows, np.array(ids, dtype=object), {"clip-person": "Clip Person"}, embedder.version, 1, "bench")

    # The daemon's own constructor (build_pipeline: liveness policy, threshold choice, live quality
    # limits, decision parameters from this config), on an empty gallery store in a scratch
    # directory, then the synthetic gallery swapped in the way a gallery sync does.
    scratch = tempfile.TemporaryDirectory(prefix="kaoclock-bench-")
    bcfg = with_changes(cfg, {"device.data_dir": scratch.name})

    def fresh_pipeline() -> RecognitionPipeline:
        with open_from_config(bcfg) as store:
            pipe, _ = build_pipeline(bcfg, store=store, analyzer=analyzer, embedder=embedder)
        pipe.set_gallery(gal)
        return pipe

    pipe = fresh_pipeline()
    # Warm-up on a few frames (interpreter allocation, caches), then a fresh tracker.
    for img in frames[:3]:
        pipe.process(Frame.from_rgbx(img, -10.0, 0, "warmup"))
    analyzer.reset()
    pipe = fresh_pipeline()
    gc.collect()
    results = []
    t_start = time.perf_counter()
    with Progress("frames", total=len(frames)) as bar:  # per-frame times are taken inside process(), not around the bar
        for i, (img, t) in enumerate(zip(frames, ts, strict=True)):
            results.append(pipe.process(Frame.from_rgbx(img, t, i, str(source))))
            bar.advance()
    wall = time.perf_counter() - t_start
    frame_ms = [r.frame_ms for r in results]
    invoke = [r.invoke_ms for r in results]
    decisions = [d for r in results for d in r.decisions] + pipe.finish(ts[-1] + 10)
    models = sorted({m for r in results for m in r.invoke_by_model_ms})
    out: dict[str, Any] = {
        "frames": len(results),
        "frame_ms_p50": pct(frame_ms, 50),
        "frame_ms_p95": pct(frame_ms, 95),
        "stages_ms": stage_percentiles(results),
        "model_invoke_ms_p50": pct(invoke, 50),
        "overhead_ratio": round(pct(frame_ms, 50) / max(pct(invoke, 50), 1e-9), 3),
        # Per model, and the time outside the models per frame (median of frame - invokes).
        "invoke_ms_p50": {m: pct([r.invoke_by_model_ms.get(m, 0.0) for r in results], 50) for m in models},
        "overhead_ms_p50": pct([r.frame_ms - r.invoke_ms for r in results], 50),
        "fps": round(len(results) / wall, 2),
        "rss_mb_peak": round(rss_mb_peak(), 1),
        "gallery": len(gal),
        "frames_with_face": sum(1 for r in results if r.faces),
        # The embedder runs until a walk-up is decided, not on every frame: its frames separately.
        "frames_embedded": sum(1 for r in results if r.embedded),
        "frame_ms_p50_embedded": pct([r.frame_ms for r in results if r.embedded], 50),
        "frame_ms_p50_not_embedded": pct([r.frame_ms for r in results if not r.embedded], 50),
        "decisions": [{"reason": d.reason, "person": d.person_id, "distance": d.distance} for d in decisions],
        "embedder": embedder.version,
        "threads": cfg.models.threads,
        "liveness": cfg.liveness.policy,
    }
    scratch.cleanup()
    if peer:
        from firmware_py.bench.dlib_peer import DlibPeer

        p = DlibPeer(cfg.models.dir, upsample=1)
        rgb = [np.ascontiguousarray(f[:, :, :3]) for f in frames]  # the peer takes RGB arrays (converted before timing)
        frames = rgb
        p.faces(frames[0])  # warm-up
        p.timings.frame_ms.clear()
        p.timings.detect_ms.clear()
        p.timings.describe_ms.clear()
        for img in frames:
            p.faces(img)
        out["peer_frame_ms_p50"] = pct(p.timings.frame_ms, 50)
        out["peer_stages_ms"] = {
            "hog_detect": {"p50": pct(p.timings.detect_ms, 50), "p95": pct(p.timings.detect_ms, 95)},
            "landmarks_descriptor": {"p50": pct(p.timings.describe_ms, 50), "p95": pct(p.timings.describe_ms, 95)},
        }
        out["speedup"] = round(out["peer_frame_ms_p50"] / max(out["frame_ms_p50"], 1e-9), 2)
        out["rss_mb_peak"] = round(rss_mb_peak(), 1)  # includes the peer's models
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="per-frame latency of the recognition core on a clip (optionally vs the dlib peer)")
    p.add_argument("--source", type=Path, required=True, help="video file (frames are resized to 640x480 before timing)")
    p.add_argument("--gallery", type=int, default=5000, help="gallery size in templates (the clip's person + synthetic; default 5000)")
    p.add_argument("--peer", action="store_true", help="also run the face_recognition-style dlib pipeline on the same frames")
    p.add_argument("--max-frames", type=int, help="only the first N frames")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    p.set_defaults(func=cmd_pipeline)


def cmd_pipeline(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    out = run(args.source, cfg, args.gallery, args.peer, args.max_frames)
    print(json.dumps(out, indent=2), file=sys.stdout)
    return 0
