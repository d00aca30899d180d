"""Per-frame presentation-attack cues from the pixels of one face.

Everything here is a pure function of an RGB frame and a face box, in numpy
and Pillow only (no OpenCV, no TensorFlow), so it runs on the reader in a few
milliseconds per face and can be unit-tested on any photo.

What the cues look for:

* **colour gamut**: a print re-renders skin through CMYK ink, a phone screen
  through its own backlit RGB primaries; both shift and compress the chroma
  of real skin seen by the camera (mean / spread of Cb, Cr, saturation).
* **specular / clipping**: a glossy print or a screen throws flat highlight
  patches and a lifted black level (fraction of near-white and near-black
  pixels).
* **frequency**: halftone dots and screen pixel grids put isolated peaks
  into the high band of the spectrum (moire); a re-captured picture also loses
  fine detail (high-band energy ratio, peak-to-mean ratio of the band,
  Laplacian energy relative to contrast).
* **micro-texture**: rotation-invariant uniform LBP histograms at radius 1
  and 2, and the 59-bin uniform LBP of luma, the classic print-attack
  descriptor on NUAA.
* **colour texture**: the 59-bin uniform LBP of the chroma planes Cb and Cr
  and of the H, S and V planes (Boulkenafet et al., "Face anti-spoofing based
  on color texture analysis", ICIP 2015, use both spaces): recapture through
  ink or a screen leaves its grain in chroma and saturation, where skin is
  smooth.  Adding HSV halved the print APCER at a 3 % BPCER in the grouped
  5-fold cross-validation (see README).
* **context**: the colour / frequency / LBP cues again on a wider crop (1.6 x
  the face box) that takes in the paper or screen edge, the hand holding it
  and the background around the face.

The face's brightness, contrast and colour statistics enter *relative to the
context crop* (``rel_*`` = face minus context): a colour cast or brightness
offset common to the face and its surroundings cancels, what a print or
screen does to the face stays.  Measured by grouped cross-validation (NUAA
subjects held out whole; see README) against the absolute statistics, and
against two variants that lost: grey-world white balance before the colour
cues (the colour cast of ink or a backlight is itself a cue) and
square-rooted LBP histograms.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from firmware_py.capture.frame import pil_region

CROP = 64  # the face crop side the cues are computed on (pixels)
CONTEXT_SCALE = 1.6  # the context crop's side relative to the face box

Box = tuple[float, float, float, float]


def face_crop(image: NDArray[np.uint8], box: Box, size: int = CROP, scale: float = 1.0) -> NDArray[np.uint8]:
    """The square around ``box`` (side = ``scale`` x the longer box side), resized to ``size``.

    Parts outside the frame are filled by edge replication so a face at the
    border still yields a full crop.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0, 1.0) * scale
    left, top = cx - side / 2, cy - side / 2
    # Slice the region (plus a pixel of margin) first: handing Pillow the
    # whole frame would copy all of it for every crop.
    h, w = image.shape[:2]
    il, it = max(int(np.floor(left)) - 1, 0), max(int(np.floor(top)) - 1, 0)
    ir, ib = min(int(np.ceil(left + side)) + 1, w), min(int(np.ceil(top + side)) + 1, h)
    if ir <= il or ib <= it:  # the box lies wholly outside the frame
        return np.zeros((size, size, 3), np.uint8)
    img, (ox, oy) = pil_region(image, (il, it, ir, ib))  # a camera frame's pixels are read in place
    left, top = left - ox, top - oy
    out = img.transform((size, size), Image.Transform.EXTENT, (left, top, left + side, top + side), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def _ycbcr(rgb: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return y, cb, cr


def _hsv(rgb: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Hue, saturation and value planes on a 0-255 scale (only their local order matters to LBP)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    d = mx - mn + 1e-6
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) * 42.5
    s = (mx - mn) / (mx + 1e-6) * 255
    return h.astype(np.float32), s.astype(np.float32), mx


def _riu2_table(p: int = 8) -> NDArray[np.uint8]:
    """Rotation-invariant uniform LBP (riu2): code -> bin 0..p+1."""
    table = np.empty(1 << p, np.uint8)
    for code in range(1 << p):
        bits = [(code >> i) & 1 for i in range(p)]
        transitions = sum(bits[i] != bits[(i + 1) % p] for i in range(p))
        table[code] = sum(bits) if transitions <= 2 else p + 1
    return table


def _u59_table() -> NDArray[np.uint8]:
    """Uniform LBP: the 58 codes with <= 2 transitions get a bin each, the rest share bin 58."""
    table = np.full(256, 58, np.uint8)
    k = 0
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        if sum(bits[i] != bits[(i + 1) % 8] for i in range(8)) <= 2:
            table[code] = k
            k += 1
    return table


_RIU2 = _riu2_table()
_U59 = _u59_table()
_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]


def lbp_codes(plane: NDArray[np.floating], radius: int = 1) -> NDArray[np.uint8]:
    """8-neighbour LBP codes (square neighbourhood at ``radius``) of a 2-D plane (or a stack of them: the last two axes)."""
    r = radius
    h, w = plane.shape[-2:]
    c = plane[..., r : h - r, r : w - r]
    code = np.zeros(c.shape, np.uint8)  # 8 bits: uint8 codes, the comparisons' bool bytes shifted in place (no int32 copies)
    for i, (dy, dx) in enumerate(_OFFSETS):
        code |= np.greater_equal(plane[..., r + dy * r : h - r + dy * r, r + dx * r : w - r + dx * r], c).view(np.uint8) << np.uint8(i)
    return code


def lbp_histogram(plane: NDArray[np.floating], radius: int = 1) -> NDArray[np.float64]:
    """Normalised 10-bin riu2 LBP(8, ``radius``) histogram."""
    hist = np.bincount(_RIU2[lbp_codes(plane, radius)].ravel(), minlength=10).astype(np.float64)
    return hist / hist.sum()


def u59_histograms(planes: NDArray[np.floating]) -> NDArray[np.float64]:
    """The normalised 59-bin uniform LBP(8, 1) histograms of a (K, H, W) stack of planes, concatenated (one pass)."""
    bins = _U59[lbp_codes(planes)].reshape(len(planes), -1).astype(np.int64)
    bins += 59 * np.arange(len(planes))[:, None]
    hist = np.bincount(bins.ravel(), minlength=59 * len(planes)).astype(np.float64)
    return hist / (bins.shape[1])


def u59_histogram(plane: NDArray[np.floating]) -> NDArray[np.float64]:
    """Normalised 59-bin uniform LBP(8, 1) histogram."""
    hist = np.bincount(_U59[lbp_codes(plane)].ravel(), minlength=59).astype(np.float64)
    return hist / hist.sum()


def _radial(n: int) -> NDArray[np.float64]:
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    return np.sqrt(fy**2 + fx**2) / 0.5  # 0 at DC, 1 at Nyquist on an axis


_RAD = _radial(CROP)
_WINDOW = np.outer(np.hanning(CROP), np.hanning(CROP)).astype(np.float32)
_HIGH = _RAD >= 0.5
_MID = (_RAD >= 0.2) & (_RAD < 0.5)
_AC = _RAD > 0.02


def spectrum_features(grey: NDArray[np.floating]) -> tuple[float, float, float]:
    """(log high-band energy ratio, log mid-band ratio, log peak/mean of the high band)."""
    f = np.fft.rfft2((grey - grey.mean()) * _WINDOW)
    p = f.real**2 + f.imag**2 + 1e-9
    total = p[_AC].sum()
    hi = p[_HIGH]
    return float(np.log(hi.sum() / total)), float(np.log(p[_MID].sum() / total)), float(np.log(hi.max() / hi.mean()))


FEATURE_NAMES: tuple[str, ...] = (
    "luma_mean",
    "luma_std",
    "cb_mean",
    "cr_mean",
    "cb_std",
    "cr_std",
    "sat_mean",
    "sat_std",
    "clip_high",
    "clip_low",
    "hf_ratio",
    "mf_ratio",
    "hf_peak",
    "lap_energy",
    *(f"lbp1_{i}" for i in range(10)),
    *(f"lbp2_{i}" for i in range(10)),
)


def texture_features(
    crop: NDArray[np.uint8], planes: tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]] | None = None
) -> NDArray[np.float64]:
    """The colour / specular / frequency / LBP cue vector (order: :data:`FEATURE_NAMES`) of one crop.

    ``planes``: the crop's (Y, Cb, Cr) when the caller already has them.
    """
    rgb = crop.astype(np.float32)
    y, cb, cr = planes if planes is not None else _ycbcr(rgb)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(r, g), b)  # a reduction over the 3-long axis is ~10x slower
    mn = np.minimum(np.minimum(r, g), b)
    sat = (mx - mn) / (mx + 1.0)
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    luma_std = float(y.std()) + 1e-3
    hf, mf, peak = spectrum_features(y)
    n = mx.size
    head = [
        float(y.mean()) / 255,
        luma_std / 255,
        (float(cb.mean()) - 128) / 32,
        (float(cr.mean()) - 128) / 32,
        float(cb.std()) / 32,
        float(cr.std()) / 32,
        float(sat.mean()),
        float(sat.std()),
        np.count_nonzero(mx >= 245) / n,
        np.count_nonzero(mx <= 20) / n,
        hf,
        mf,
        peak,
        float(np.log(float(lap.std()) / luma_std + 1e-6)),
    ]
    return np.concatenate([np.array(head), lbp_histogram(y, 1), lbp_histogram(y, 2)])


RELATIVE = 8  # the first 8 head features (luma, chroma, saturation statistics) enter as face minus context

FRAME_FEATURE_NAMES: tuple[str, ...] = (
    *(f"rel_{n}" for n in FEATURE_NAMES[:RELATIVE]),
    *FEATURE_NAMES[RELATIVE:],
    *(f"lbpY_{i}" for i in range(59)),
    *(f"lbpCb_{i}" for i in range(59)),
    *(f"lbpCr_{i}" for i in range(59)),
    *(f"lbpH_{i}" for i in range(59)),
    *(f"lbpS_{i}" for i in range(59)),
    *(f"lbpV_{i}" for i in range(59)),
    *(f"ctx_{n}" for n in FEATURE_NAMES),
)


def frame_features(image: NDArray[np.uint8], box: Box) -> NDArray[np.float64]:
    """All per-frame cues of the face in ``box`` (order: :data:`FRAME_FEATURE_NAMES`)."""
    face = face_crop(image, box, CROP, 1.0)
    ctx = face_crop(image, box, CROP, CONTEXT_SCALE)
    rgb = face.astype(np.float32)
    y, cb, cr = _ycbcr(rgb)
    h, s, v = _hsv(rgb)
    f, c = texture_features(face, (y, cb, cr)), texture_features(ctx)
    f[:RELATIVE] -= c[:RELATIVE]  # a cast common to face and surroundings cancels
    return np.concatenate([f, u59_histograms(np.stack([y, cb, cr, h, s, v])), c])


def cue_group(name: str) -> str:
    """The cue a feature belongs to (how a verdict explains itself)."""
    if name.startswith("ctx_"):
        return "context"
    if name.startswith(("lbpCb", "lbpCr", "lbpH", "lbpS", "lbpV")):
        return "colour_texture"
    if name.startswith("lbp"):
        return "micro_texture"
    if name in ("clip_high", "clip_low"):
        return "specular"
    if name in ("hf_ratio", "mf_ratio", "hf_peak", "lap_energy"):
        return "frequency"
    return "colour"
