"""The embedded demo: `kaoclock run` without a config.

No camera, no broker: it enrols Grace Hopper from matplotlib's photo into a
throw-away gallery, replays a synthetic walk-up built from real photos (each
photo scaled up over the frames as if the person walked towards the camera,
with empty frames in between so each walk-up is its own track):

1. Grace Hopper walks up            -> ACCEPT
2. the astronaut (not enrolled)     -> REJECT unknown
3. Grace Hopper again, moments later -> REJECT cooldown

and prints each decision with its reason.  ``--source`` replays any video
or image folder instead of the walk-up (still against the demo gallery).
Everything runs through the real replay camera, the real front-end and the
real int8 embedder, and finishes by itself.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from firmware_py.config import load, with_changes
from firmware_py.decision.outcome import Decision
from firmware_py.decision.sinks import JsonLinesSink
from firmware_py.demo_assets import ensure_demo_assets
from firmware_py.gallery.enrol import enrol_photos, load_photo
from firmware_py.gallery.store import open_from_config
from firmware_py.pipeline.build import build_analyzer
from firmware_py.vision.embedding import ChipEmbedder, load_embedder

log = logging.getLogger(__name__)

FRAME_SIZE = (640, 480)
WALK_FRAMES = 16
GAP_FRAMES = 14
FPS = 10.0


@dataclass
class DemoResult:
    frames: int
    decisions: list[Decision]


def _face_square(image: np.ndarray, analyzer: Any) -> tuple[int, int, int]:
    """(cx, cy, side): a square around the photo's main face, 2.4 face widths wide."""
    from firmware_py.capture.frame import Frame

    analyzer.reset()
    analysis = analyzer.process(Frame(image, 0.0, 0, "demo"))
    obs = analysis.primary
    if obs is None:
        h, w = image.shape[:2]
        return w // 2, h // 2, min(h, w)
    cx, cy = obs.detection.centre
    side = int(2.4 * obs.detection.width)
    return int(cx), int(cy), side


def walkup_frames(image: np.ndarray, square: tuple[int, int, int], frames: int = WALK_FRAMES) -> list[np.ndarray]:
    """A person approaching: the face square pasted ever larger on a plain wall."""
    cx, cy, side = square
    pil = Image.fromarray(image)
    crop = pil.crop((cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2))
    w, h = FRAME_SIZE
    wall = np.tile(np.linspace(150, 110, h, dtype=np.float32)[:, None, None], (1, w, 3)).astype(np.uint8)
    out = []
    for i in range(frames):
        s = int(210 + (430 - 210) * i / max(frames - 1, 1))  # face about 90 -> 180 px wide
        canvas = Image.fromarray(wall.copy())
        canvas.paste(crop.resize((s, s), Image.Resampling.BILINEAR), ((w - s) // 2 + (frames - i), (h - s) // 2))
        out.append(np.asarray(canvas))
    return out


def empty_frames(n: int = GAP_FRAMES) -> list[np.ndarray]:
    w, h = FRAME_SIZE
    wall = np.tile(np.linspace(150, 110, h, dtype=np.float32)[:, None, None], (1, w, 3)).astype(np.uint8)
    return [wall] * n


def write_walkup(folder: Path, photos: dict[str, Path], analyzer: Any) -> int:
    """Write the demo sequence as numbered PNGs; returns the frame count."""
    seq: list[np.ndarray] = []
    for name in ("grace_hopper.jpg", "astronaut.png", "grace_hopper.jpg"):
        img = load_photo(photos[name])
        seq += walkup_frames(img, _face_square(img, analyzer)) + empty_frames()
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(seq):
        Image.fromarray(f).save(folder / f"frame_{i:04d}.png", compress_level=1)
    return len(seq)


def run_demo(
    source: Path | None = None,
    out: IO[str] | None = None,
    jsonl: Path | str | None = None,
    embedder: ChipEmbedder | None = None,
    models_dir: Path | None = None,
) -> DemoResult:
    """Run the demo in a temporary state directory; returns what it decided."""
    base = load(None)
    if models_dir is not None:
        base = with_changes(base, {"models.dir": str(models_dir)})
    photos = ensure_demo_assets(base.models.dir)
    with tempfile.TemporaryDirectory(prefix="kaoclock-demo-") as tmp:
        tmpdir = Path(tmp)
        frames_dir = tmpdir / "walkup"
        changes: dict[str, Any] = {
            "device.data_dir": str(tmpdir / "state"),
            "camera.backend": "replay",
            "camera.source": str(source) if source else str(frames_dir),
            "camera.replay_realtime": False,  # as fast as the pipeline goes, no frame dropped
            "camera.fps": FPS,
            "decision.cooldown_s": 60.0,
        }
        cfg = with_changes(base, changes)
        embedder = embedder or load_embedder(cfg)
        enrol_analyzer = build_analyzer(cfg, enrolment=True)
        say = out
        with open_from_config(cfg) as store:
            report = enrol_photos(
                store,
                enrol_analyzer,
                embedder,
                "grace",
                "Grace Hopper",
                [cfg.device.site],
                [photos["grace_hopper.jpg"]],
                mirror=cfg.recognition.mirror_average,
            )
            print(f"demo: enrolled grace (Grace Hopper) from {photos['grace_hopper.jpg'].name}; gallery version {report.gallery_version}", file=say)
            if source is None:
                n = write_walkup(frames_dir, photos, enrol_analyzer)
                print(
                    f"demo: replaying {n} frames: Grace Hopper walks up, then the astronaut (not enrolled), then Grace Hopper again",
                    file=say,
                )
            from firmware_py.reader import DEMO_LIVENESS_OFF, build_reader, demo_overrides

            decisions: list[Decision] = []

            class _Collect:
                def on_decision(self, d: Decision) -> None:
                    decisions.append(d)

            extra: list[Any] = [_Collect()]
            if jsonl:
                extra.append(JsonLinesSink(None if str(jsonl) == "-" else jsonl))
            # The whole reader: gate on mock pins, signed punches into the outbox (no broker), LEDs.
            run_cfg = demo_overrides(cfg)
            reader = build_reader(run_cfg, store=store, embedder=embedder, extra_sinks=extra, console_out=out)
            choice = reader.threshold
            print(f"demo: threshold {choice.value:.3f} ({choice.source}: {choice.detail}); liveness policy {run_cfg.liveness.policy}", file=say)
            if run_cfg.liveness.policy != cfg.liveness.policy:
                print(f"demo: liveness check OFF: {DEMO_LIVENESS_OFF}; a real reader runs policy {cfg.liveness.policy!r}", file=say)
            reader.daemon.install_signal_handlers()
            frames = reader.run()
        print(f"demo: done, {frames} frames, {len(decisions)} decision(s)", file=say)
        return DemoResult(frames, decisions)
