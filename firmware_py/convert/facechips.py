"""Aligned 150x150 face chips of real photos, for the converter and the parity checks.

Two ways to get a chip:

* :class:`DlibAligner`: dlib's HOG face detector, its 5-point shape predictor
  (``shape_predictor_5_face_landmarks.dat``, fetched) and
  ``dlib.get_face_chip(img, shape, 150, 0.25)``: exactly how dlib itself feeds
  its ResNet.  Needs dlib (the ``dev`` and ``models`` extras).
* fixed crops, when dlib is not importable: for the two photos that ship in
  PyPI packages, the square dlib's alignment chose (measured once with dlib,
  recorded in :data:`FIXED_CROPS`; the small in-plane rotation is ignored), and
  for LFW's deep-funneled 250x250 images the centre 150x150 pixels (the faces
  are centred and about 100-120 px wide there; no resampling).

Parity compares two models on the *same* chip, so either kind is a fair input;
the parity report says which one it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CHIP = 150
PADDING = 0.25

#: Square (left, top, right, bottom) that dlib's get_face_chip_details(shape, 150, 0.25)
#: picked for the largest HOG detection in each photo (angles -0.096 and 0.048 rad ignored).
FIXED_CROPS: dict[str, tuple[float, float, float, float]] = {
    "grace_hopper": (153.604, 117.848, 387.018, 351.262),
    "astronaut": (164.868, 65.566, 284.805, 185.503),
}

#: Centre crop of an LFW deep-funneled 250x250 image.
LFW_CENTRE_BOX = (50, 50, 200, 200)


def dlib_available() -> bool:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class DlibAligner:
    """dlib's own detection + 5-point alignment into 150x150 chips."""

    shape_predictor: Path
    upsample: int = 1

    def __post_init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._sp = dlib.shape_predictor(str(self.shape_predictor))

    def chip(self, img: np.ndarray) -> np.ndarray | None:
        """The chip of the largest face in an RGB uint8 image, or None when no face is found."""
        img = np.ascontiguousarray(img, np.uint8)
        dets = self._detector(img, self.upsample)
        if len(dets) == 0:
            return None
        det = max(dets, key=lambda r: r.area())
        shape = self._sp(img, det)
        return np.asarray(self._dlib.get_face_chip(img, shape, CHIP, PADDING), np.uint8)


def crop_chip(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The square ``box`` of ``img`` resized to 150x150 (bilinear)."""
    return np.asarray(Image.fromarray(img).resize((CHIP, CHIP), Image.Resampling.BILINEAR, box=box), np.uint8)


def lfw_centre_chip(img: np.ndarray) -> np.ndarray:
    """The fixed 150x150 centre crop of a 250x250 LFW image (no resampling)."""
    if img.shape[:2] != (250, 250):
        raise ValueError(f"an LFW deep-funneled image is 250x250, got {img.shape[:2]}")
    x0, y0, x1, y1 = LFW_CENTRE_BOX
    return np.ascontiguousarray(img[y0:y1, x0:x1])


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def package_photos() -> tuple[dict[str, np.ndarray], list[str]]:
    """The real photos that ship inside PyPI packages, and notes on any that are missing."""
    photos: dict[str, np.ndarray] = {}
    notes: list[str] = []
    try:
        import matplotlib.cbook

        photos["grace_hopper"] = load_rgb(Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    except ImportError:
        notes.append("grace_hopper.jpg unavailable (matplotlib not installed)")
    try:
        from skimage import data

        photos["astronaut"] = np.ascontiguousarray(data.astronaut())
    except ImportError:
        notes.append("astronaut.png unavailable (scikit-image not installed)")
    return photos, notes


def package_photo_chips(shape_predictor: Path | None) -> tuple[dict[str, np.ndarray], str]:
    """Chips of grace_hopper / astronaut: dlib-aligned when dlib is importable, else fixed crops."""
    photos, notes = package_photos()
    chips: dict[str, np.ndarray] = {}
    if shape_predictor is not None and dlib_available() and shape_predictor.is_file():
        aligner = DlibAligner(shape_predictor)
        for name, img in photos.items():
            chip = aligner.chip(img)
            if chip is None:
                notes.append(f"dlib found no face in {name}")
            else:
                chips[name] = chip
        how = "dlib get_face_chip(HOG detection, 5-point shape, 150, 0.25)"
    else:
        for name, img in photos.items():
            chips[name] = crop_chip(img, FIXED_CROPS[name])
        how = "fixed crops (dlib not importable)"
    desc = f"{', '.join(chips) or 'no package photos'}: {how}" + (f"; {'; '.join(notes)}" if notes else "")
    return chips, desc
