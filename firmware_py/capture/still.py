"""Opening a still image with a pixel limit checked from its header, before any decoding.

Pillow decodes lazily: :func:`open_still` reads only the header, refuses an
image above ``max_pixels`` with a message naming the file and its size, and
hands back the unopened-pixel image for the caller to decode.  A 144-megapixel
enrolment photo no longer peaks at 2 GB of memory, and a 20000x20000 header
in a replay folder no longer kills the capture thread with Pillow's
``DecompressionBombError``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

MAX_PIXELS = 50_000_000  # above any phone camera a technician enrols from, far below what a 1-2 GB board can decode


class ImageTooLarge(ValueError):
    """The image's header announces more pixels than the limit; nothing was decoded."""


def open_still(path: Path | str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``Image.open(path)`` after checking width x height against ``max_pixels`` (raises :class:`ImageTooLarge`)."""
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{path}: the image is far too large to decode (over {max_pixels / 1e6:.0f} megapixels); downscale it") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageTooLarge(
            f"{path}: {w}x{h} is {w * h / 1e6:.0f} megapixels, above the limit of {max_pixels / 1e6:.0f}; "
            "downscale it (a face needs far fewer pixels) and try again"
        )
    return im
