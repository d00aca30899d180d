"""Enrolment at the backend: the reader's own quality gates on HR's photos, photos and templates kept sealed."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from firmware_py.backend.hr import HrError, HrMaster
from firmware_py.errors import KaoclockError
from firmware_py.gallery.enrol import EnrolmentReport, accepted, check_photo, check_photos
from firmware_py.vision.embedding import ChipEmbedder

MAX_PHOTO_BYTES = 20 << 20


def decode_photo(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))


def enrol_person(
    master: HrMaster, analyzer: Any, embedder: ChipEmbedder, person_id: str, photos: list[Path], *, replace: bool = False, mirror: bool = False
) -> EnrolmentReport:
    """Check every photo (all or nothing, :class:`~firmware_py.gallery.enrol.EnrolmentRefused`), then keep photos and templates."""
    found = master.person(person_id)
    if found is None:
        raise HrError(f"no person {person_id!r} in the HR master; import them first (`kaoclock backend people import staff.csv`)")
    data: dict[Path, bytes] = {}
    for p in photos:
        try:
            data[Path(p)] = Path(p).read_bytes()
        except OSError as exc:
            raise KaoclockError(f"cannot read {p}: {exc.strerror}") from None
        if len(data[Path(p)]) > MAX_PHOTO_BYTES:
            raise KaoclockError(f"{p} is larger than {MAX_PHOTO_BYTES >> 20} MiB; use a smaller photo")
    report = check_photos(analyzer, embedder, person_id, found[0], [Path(p) for p in photos], mirror=mirror)
    good = accepted(report)
    master.store_enrolment(person_id, [data[r.path] for r, _ in good], [d for _, d in good], embedder.version, replace=replace)
    report.stored = True
    return report


def photo_describer(analyzer: Any, embedder: ChipEmbedder, mirror: bool = False) -> Callable[[bytes], np.ndarray]:
    """A kept photo's bytes -> its descriptor under ``embedder`` (for re-extraction); raises when the photo no longer passes."""

    def describe(data: bytes) -> np.ndarray:
        try:
            image = decode_photo(data)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise KaoclockError(f"the kept photo cannot be read ({exc.__class__.__name__})") from None
        r = check_photo(analyzer, embedder, Path("kept-photo"), mirror, image)
        if not r.ok or r.descriptor is None:
            raise KaoclockError(f"the kept photo {r.message}")
        return r.descriptor

    return describe
