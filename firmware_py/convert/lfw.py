"""LFW (``lfw-dev``: View 1 DevTrain, deep-funneled 250x250) for calibration and parity.

The split keeps what the converter calibrates on apart from what parity is
reported on, by *identity*:

* verification: the images named in ``pairsDevTrain.txt`` (2,132 people);
* calibration: images of the people who appear in no pair (1,906 people,
  2,840 images), in a fixed order (sha256 of the relative path).

The data set is read from a path (``--data`` or ``KAOCLOCK_DATA``) and never
copied into the repository.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from firmware_py.errors import UsageError


@dataclass(frozen=True)
class Pair:
    a: str  # image path relative to lfw-dev/
    b: str
    same: bool


def image_rel(name: str, n: int) -> str:
    return f"images/{name}/{name}_{n:04d}.jpg"


def lfw_root(data: Path) -> Path:
    """``data`` itself or ``data/lfw-dev``, whichever holds pairsDevTrain.txt."""
    for cand in (data / "lfw-dev", data):
        if (cand / "pairsDevTrain.txt").is_file() and (cand / "images").is_dir():
            return cand
    raise UsageError(f"{data} holds no lfw-dev/ (pairsDevTrain.txt and images/): point --data at the shared data set, e.g. --data ../shared/data")


def read_pairs(root: Path) -> list[Pair]:
    """``pairsDevTrain.txt``: ``name n1 n2`` (same person) or ``name1 n1 name2 n2``."""
    path = root / "pairsDevTrain.txt"
    pairs = []
    lines = path.read_text("utf-8").splitlines()
    for lineno, line in enumerate(lines[1:], start=2):
        f = line.split()
        if len(f) == 3:
            pairs.append(Pair(image_rel(f[0], int(f[1])), image_rel(f[0], int(f[2])), True))
        elif len(f) == 4:
            pairs.append(Pair(image_rel(f[0], int(f[1])), image_rel(f[2], int(f[3])), False))
        elif f:
            raise UsageError(f"{path}:{lineno}: not a pair line: {line!r}")
    return pairs


def _person(rel: str) -> str:
    return rel.split("/")[1]


def calibration_pool(root: Path) -> list[str]:
    """Images of people in no pair, ordered by sha256 of their relative path."""
    in_pairs = {_person(p) for pair in read_pairs(root) for p in (pair.a, pair.b)}
    rels = [f"images/{d.name}/{f.name}" for d in (root / "images").iterdir() if d.is_dir() and d.name not in in_pairs for f in d.glob("*.jpg")]
    return sorted(rels, key=lambda r: hashlib.sha256(r.encode()).hexdigest())


def verification_pairs(root: Path, min_images: int) -> tuple[list[Pair], list[str]]:
    """Pairs taken alternately from the same / different halves until ``min_images`` distinct images
    (all pairs when ``min_images`` is 0), and those images in first-use order."""
    pairs = read_pairs(root)
    same = [p for p in pairs if p.same]
    diff = [p for p in pairs if not p.same]
    order = [p for two in zip(same, diff, strict=False) for p in two] + same[len(diff) :] + diff[len(same) :]
    chosen: list[Pair] = []
    images: dict[str, None] = {}
    for p in order:
        if min_images and len(images) >= min_images:
            break
        chosen.append(p)
        images.setdefault(p.a)
        images.setdefault(p.b)
    return chosen, list(images)


def list_digest(rels: list[str]) -> str:
    """sha256 of the newline-joined relative paths: names a file list in a build record."""
    return hashlib.sha256("\n".join(rels).encode()).hexdigest()
