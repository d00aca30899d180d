"""The presentation manifest of ``kaoclock eval liveness`` and the frames of each presentation.

A manifest is a CSV with columns ``id,label,kind,path,attack_type,subject``:
``label`` is ``live`` or ``attack``; ``kind`` is ``image`` (one still),
``video`` (a file: one presentation) or ``frames`` (a glob whose matches,
ordered by the last integer in the file name, are one presentation); paths are
relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import glob
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from firmware_py.errors import ExitCode, KaoclockError

COLUMNS = ("id", "label", "kind", "path", "attack_type", "subject")
KINDS = ("image", "video", "frames")


class ManifestError(KaoclockError):
    """The presentation manifest (or a file it names) is missing or malformed."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Presentation:
    """One row of the manifest: one presentation to the reader."""

    id: str
    label: str  # "live" | "attack"
    kind: str  # "image" | "video" | "frames"
    path: str  # as written in the manifest
    attack_type: str  # "" for live
    subject: str
    root: Path  # the manifest's folder

    @property
    def is_attack(self) -> bool:
        return self.label == "attack"

    def files(self) -> list[Path]:
        """The files of this presentation, in presentation order."""
        if self.kind == "frames":
            matches = glob.glob(str(self.root / self.path))
            return [Path(p) for p in sorted(matches, key=_last_int_key)]
        return [self.root / self.path]


def _last_int_key(path: str) -> tuple[int, str]:
    nums = re.findall(r"\d+", Path(path).name)
    return (int(nums[-1]) if nums else -1, path)


def read_manifest(path: Path) -> list[Presentation]:
    """Parse and check a manifest; every problem names the row and the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ManifestError(f"manifest {path}: missing column(s) {', '.join(missing)}; the header must be {','.join(COLUMNS)}")
    out: list[Presentation] = []
    seen: set[str] = set()
    for n, row in enumerate(reader, start=2):
        where = f"manifest {path} line {n}"
        pid = (row["id"] or "").strip()
        label = (row["label"] or "").strip()
        kind = (row["kind"] or "").strip()
        if not pid:
            raise ManifestError(f"{where}: empty id")
        if pid in seen:
            raise ManifestError(f"{where}: id {pid!r} appears twice; ids must be unique")
        seen.add(pid)
        if label not in ("live", "attack"):
            raise ManifestError(f"{where}: label {label!r} must be 'live' or 'attack'")
        if kind not in KINDS:
            raise ManifestError(f"{where}: kind {kind!r} must be one of {', '.join(KINDS)}")
        attack_type = (row["attack_type"] or "").strip()
        if label == "attack" and not attack_type:
            raise ManifestError(f"{where}: an attack needs an attack_type (e.g. print, replay)")
        out.append(Presentation(pid, label, kind, (row["path"] or "").strip(), attack_type, (row["subject"] or "").strip(), path.parent))
    return out


def select(
    presentations: list[Presentation], subjects: set[str] | None = None, ids: set[str] | None = None, kinds: set[str] | None = None
) -> list[Presentation]:
    """The presentations of the given subjects / ids / kinds (None = no filter)."""
    return [
        p
        for p in presentations
        if (subjects is None or p.subject in subjects) and (ids is None or p.id in ids) and (kinds is None or p.kind in kinds)
    ]


def load_rgb(path: Path) -> NDArray[np.uint8]:
    """An image file as an (H, W, 3) uint8 RGB array; a corrupt file is refused by name."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise ManifestError(f"cannot read image {path}: {exc}") from None


def frames(p: Presentation, fps: float = 10.0, max_seconds: float | None = None) -> Iterator[tuple[float, NDArray[np.uint8]]]:
    """(timestamp seconds, RGB image) of each frame of a presentation.

    ``frames`` globs have no timestamps: frame *i* is stamped ``i / fps``.
    Videos are decoded with PyAV and stamped with their presentation time.
    ``max_seconds`` stops a long clip (a walk-up lasts a couple of seconds).
    """
    if p.kind == "video":
        import av

        path = p.root / p.path
        try:
            container = av.open(str(path))
        except (OSError, av.error.FFmpegError) as exc:  # type: ignore[attr-defined]
            raise ManifestError(f"{p.id}: cannot open video {path}: {exc}") from None
        with container:
            t0: float | None = None
            for fr in container.decode(video=0):
                ts = float(fr.time) if fr.time is not None else 0.0
                t0 = ts if t0 is None else t0
                if max_seconds is not None and ts - t0 > max_seconds:
                    break
                yield ts - t0, np.asarray(fr.to_ndarray(format="rgb24"), np.uint8)
        return
    files = p.files()
    if not files or (p.kind == "image" and not files[0].is_file()):
        raise ManifestError(f"{p.id}: no file matches {p.root / p.path}")
    for i, f in enumerate(files):
        ts = i / fps
        if max_seconds is not None and ts > max_seconds:
            break
        yield ts, load_rgb(f)
