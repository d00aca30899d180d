"""Alignment: a similarity transform into the embedder's 150x150 chip, with dlib's geometry.

The embedder is dlib's ResNet face model, trained on chips cut by dlib's
``get_face_chip(img, shape5, size=150, padding=0.25)``.  The closer our chip is
to that one, the closer the descriptor is to dlib's; :func:`align_chip`
reproduces dlib's ``get_face_chip_details`` + ``extract_image_chip``:

1. dlib's mean face for its 5-point shape (:data:`DLIB5_TEMPLATE`, unit
   square), padded: ``(padding + p) / (2 padding + 1) * size``.
2. A least-squares similarity transform (Umeyama) from those chip points to
   the image points, split into angle and scale.
3. The chip rectangle ``centered_drect(T(size/2, size/2), size*scale,
   size*scale)``, whose corners map to chip pixels 0 and size-1 (dlib's
   ``get_mapping_to_chip``: a scale of ``(size*scale - 1) / (size - 1)``
   per chip pixel).
4. When the chip is much smaller than the face in the frame (scale > 2),
   dlib samples from a 2x-downsampled pyramid level to avoid aliasing; here
   the crop around the face is halved with Pillow's filtered resize instead.
5. Bilinear resampling by Pillow's affine transform in C, black outside the
   frame.

Any set of points can drive step 2 if their positions in dlib's chip are
known: :data:`TEMPLATES` holds the unit-square positions of dlib's own five
points and of the point sets kaoclock gets from its own models (FaceMesh
points and BlazeFace keypoints), measured against dlib's chips on real faces
with ``kaoclock eval align --fit`` (see the constants' comments).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

CHIP_SIZE = 150
CHIP_PADDING = 0.25

# dlib's get_face_chip_details, 5-point shape (dlib/image_transforms/interpolation.h):
# subject's left eye outer, left eye inner, right eye outer, right eye inner corner, base of the nose.
DLIB5_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

# The same chip positions for kaoclock's own point sets, measured against dlib's chips
# (`kaoclock eval align --fit`: mean position in dlib's chip, unit square, on 1,000 lfw-dev
# faces disjoint from the ones `eval align` reports on).
# FaceMesh points DLIB5 = (263, 362, 33, 133, 2), in dlib's order.
FACEMESH5_TEMPLATE = np.array(
    [
        [0.8731, 0.2065],
        [0.6307, 0.2202],
        [0.0935, 0.2064],
        [0.3346, 0.2201],
        [0.4836, 0.6091],
    ]
)
# BlazeFace keypoints 0-3: subject's right eye, left eye, nose tip, mouth centre (ears are too unstable).
DETECTOR4_TEMPLATE = np.array(
    [
        [0.2165, 0.2171],
        [0.7810, 0.2230],
        [0.4894, 0.5418],
        [0.4887, 0.8413],
    ]
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``2x3`` matrix mapping ``src (N,2)`` onto ``dst (N,2)`` (Umeyama 1991, as dlib)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    c = (sig * np.diag(e)).sum() / var_s if var_s > 0 else 1.0
    a = c * r
    return np.hstack([a, (mu_d - a @ mu_s)[:, None]])


@dataclass(frozen=True)
class ChipGeometry:
    """Where a chip sits in the frame, in dlib's terms (``chip_details``).

    ``rect`` is dlib's chip rectangle (left, top, right, bottom) before
    rotation, ``angle`` its rotation in radians about the rectangle's centre,
    ``scale`` the frame pixels per chip pixel of the fitted similarity.
    ``matrix`` maps chip pixel (column, row) to frame pixel (x, y), pixel
    centres at integers.
    """

    rect: tuple[float, float, float, float]
    angle: float
    scale: float
    size: int

    @property
    def matrix(self) -> np.ndarray:
        return _rect_mapping(self.rect, self.angle, self.size)

    def to_frame(self, pts: np.ndarray) -> np.ndarray:
        """Chip pixel coordinates -> frame pixel coordinates."""
        m = self.matrix
        return np.asarray(pts) @ m[:, :2].T + m[:, 2]

    def to_chip(self, pts: np.ndarray) -> np.ndarray:
        """Frame pixel coordinates -> chip pixel coordinates."""
        m = self.matrix
        return (np.asarray(pts) - m[:, 2]) @ np.linalg.inv(m[:, :2]).T


def _rect_mapping(rect: tuple[float, float, float, float], angle: float, size: int) -> np.ndarray:
    """Chip pixel -> image: chip corners (0,0), (size-1,0), (0,size-1) onto the rotated rect's corners."""
    left, top, right, bottom = rect
    cx, cy = (left + right) / 2, (top + bottom) / 2
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    kx, ky = (right - left) / (size - 1), (bottom - top) / (size - 1)
    m = rot @ np.diag([kx, ky])
    b = np.array([cx, cy]) + rot @ np.array([left - cx, top - cy])
    return np.hstack([m, b[:, None]])


def chip_points(template: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Unit-square template points -> chip pixels, with dlib's padding."""
    return (padding + np.asarray(template, np.float64)) / (2 * padding + 1) * size


def chip_geometry(points: np.ndarray, template: np.ndarray = DLIB5_TEMPLATE, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> ChipGeometry:
    """dlib's ``get_face_chip_details`` for image ``points`` matching ``template``."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if pts.shape != np.asarray(template).shape:
        raise ValueError(f"alignment needs {len(template)} points matching the template, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("alignment points are not finite")
    t = similarity_transform(chip_points(template, size, padding), pts)
    a = t[:, :2]
    angle = math.atan2(a[1, 0], a[0, 0])
    scale = math.hypot(a[0, 0], a[1, 0])
    cx, cy = a @ np.array([size / 2, size / 2]) + t[:, 2]
    half = (size * scale - 1) / 2  # centered_drect(p, w, h) spans w - 1
    return ChipGeometry((cx - half, cy - half, cx + half, cy + half), angle, scale, size)


def _rect_area(rect: tuple[float, float, float, float]) -> float:
    # dlib's drectangle: width = right - left + 1.
    return (rect[2] - rect[0] + 1) * (rect[3] - rect[1] + 1)


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    # pyramid_down<2>::point_down(p) = p/2 - (1.25, 0.75)
    return (rect[0] / 2 - 1.25, rect[1] / 2 - 0.75, rect[2] / 2 - 1.25, rect[3] / 2 - 0.75)


def _pyramid_down(a: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>`` on an RGB image, bit-exact.

    A separable 5x5 [1 4 6 4 1] filter keeping every other row and column
    (output pixel (r, c) centred on input (2r + 2, 2c + 2)), integer sums
    divided by 256 with truncation, output ``((h - 3) // 2, (w - 3) // 2)``.
    The sums are exact integers, so filtering rows before columns (dlib's
    order) or after gives the same result; decimating rows first halves the
    work.
    """
    h, w = a.shape[:2]
    nc, nr = (w - 3) // 2, (h - 3) // 2
    x = a.astype(np.uint16)
    even, odd = x[0 : 2 * nr + 3 : 2], x[1 : 2 * nr + 2 : 2]
    v = even[:nr] + even[2 : nr + 2]
    t = odd[:nr] + odd[1 : nr + 1]
    t <<= 2
    v += t
    v += even[1 : nr + 1] * np.uint16(6)
    even, odd = v[:, 0 : 2 * nc + 3 : 2], v[:, 1 : 2 * nc + 2 : 2]
    d = even[:, :nc] + even[:, 2 : nc + 2]
    t = odd[:, :nc] + odd[:, 1 : nc + 1]
    t <<= 2
    d += t
    d += even[:, 1 : nc + 1] * np.uint16(6)
    d >>= 8
    return d.astype(np.uint8)


class Resampler:
    """Affine resampling of one frame with Pillow (bilinear, black outside), shared by every crop of that frame.

    Pillow's transform in C is the fast path: the frame is converted to a
    Pillow image once, on first use.  When a crop shrinks the frame by 2x or
    more, the region it covers is first reduced by the whole factor with
    Pillow's box filter: bilinear sampling alone would alias (skip pixels),
    and sampling the smaller image is faster too.
    """

    def __init__(self, image: np.ndarray | Image.Image | Callable[[], Image.Image]) -> None:
        # A callable makes the Pillow image on first use (a frame's pil(): most frames cut no chip).
        self._make: Callable[[], Image.Image] | None = None
        self._pil: Image.Image | None = None
        self._array: np.ndarray | None = None
        if isinstance(image, Image.Image):
            self._pil = image
        elif isinstance(image, np.ndarray):
            self._array = image
        else:
            self._make = image

    @property
    def pil(self) -> Image.Image:
        if self._pil is None:
            if self._make is not None:
                self._pil = self._make()
            else:
                assert self._array is not None  # one of the three is always set
                self._pil = Image.fromarray(self._array)
        return self._pil

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.asarray(self._pil)
        return self._array

    def sample(self, data: tuple[float, ...], size: tuple[int, int], antialias: bool = True, nearest: bool = False) -> np.ndarray:
        """The ``size`` (w, h) output of Pillow's affine ``data``.

        ``data`` = ``(a, b, c, d, e, f)``: output pixel centre (u, v), in
        continuous coordinates (pixel centres at +0.5), samples the frame at
        ``(a u + b v + c, d u + e v + f)``.  ``nearest`` picks the nearest
        pixel instead of interpolating (8x faster in Pillow).
        """
        a, b, c, d, e, f = data
        pil = self.pil
        k = int(math.hypot(a, d) * 0.999) if antialias else 1  # whole shrink factor
        if k >= 2:
            w, h = size
            xs = (0.0, a * w, b * h, a * w + b * h)
            ys = (0.0, d * w, e * h, d * w + e * h)
            x0 = max(0, math.floor(c + min(xs)) - k)
            y0 = max(0, math.floor(f + min(ys)) - k)
            x1 = min(pil.width, math.ceil(c + max(xs)) + k)
            y1 = min(pil.height, math.ceil(f + max(ys)) + k)
            nw, nh = (x1 - x0) // k, (y1 - y0) // k
            if nw >= 2 and nh >= 2:
                # Reduced pixel j covers frame [x0 + jk, x0 + (j+1)k): continuous coordinates scale by 1/k.
                pil = pil.reduce(k, box=(x0, y0, x0 + nw * k, y0 + nh * k))
                data = (a / k, b / k, (c - x0) / k, d / k, e / k, (f - y0) / k)
        method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
        return np.asarray(pil.transform(size, Image.Transform.AFFINE, data, method))  # black outside (Pillow zero-fills)


def _affine_data(m: np.ndarray) -> tuple[float, ...]:
    """Pillow's affine data for a chip whose pixel (u, v) sits at ``m @ (u, v, 1)`` (pixel centres at integers)."""
    # Pillow samples output pixel u at A (u + 0.5) + c in continuous coordinates (centres at +0.5).
    a = m[:, :2]
    c = m[:, 2] + 0.5 - a @ np.array([0.5, 0.5])
    return (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1])


def warp_chip(image: np.ndarray | Image.Image | Resampler, geom: ChipGeometry, *, exact: bool = True) -> np.ndarray:
    """Cut the chip ``geom`` describes out of an RGB image: ``(size, size, 3)`` uint8.

    Up to a 2x shrink this is dlib's ``extract_image_chip`` pixel for pixel
    (bilinear from the frame).  Beyond, dlib samples a ``pyramid_down<2>``
    level of the face's region: ``exact=True`` reproduces that level bit for
    bit in numpy (about 2 ms for a face filling a 640x480 frame);
    ``exact=False`` uses Pillow's 2x box reduction instead (about 0.2 ms;
    descriptors differ from the exact chip's by about 0.04).
    """
    rs = image if isinstance(image, Resampler) else Resampler(image)
    size = geom.size
    if _rect_area(_rect_down(geom.rect)) <= size * size:
        return rs.sample(_affine_data(geom.matrix), (size, size), antialias=False)
    if not exact:
        return rs.sample(_affine_data(geom.matrix), (size, size), antialias=True)
    # Like dlib: a pyramid built on the face's bounding box (grown by 2 px per level, clipped to the frame).
    arr = rs.array
    h, w = arr.shape[:2]
    grow, r = 2.0, _rect_down(geom.rect)
    while _rect_area(_rect_down(r)) > size * size:
        r, grow = _rect_down(r), grow * 2 + 2
    corners = _rect_mapping(geom.rect, geom.angle, size)
    pts = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], np.float64)
    img_pts = pts @ corners[:, :2].T + corners[:, 2]
    # dlib rounds the drectangle to an integer rectangle (floor(x + 0.5)).
    bl = max(0, math.floor(img_pts[:, 0].min() - grow + 0.5))
    bt = max(0, math.floor(img_pts[:, 1].min() - grow + 0.5))
    br = min(w - 1, math.floor(img_pts[:, 0].max() + grow + 0.5))
    bb = min(h - 1, math.floor(img_pts[:, 1].max() + grow + 0.5))
    if br - bl < 8 or bb - bt < 8:
        return np.zeros((size, size, 3), np.uint8)
    level = arr[bt : bb + 1, bl : br + 1]
    rect = (geom.rect[0] - bl, geom.rect[1] - bt, geom.rect[2] - bl, geom.rect[3] - bt)
    while _rect_area(_rect_down(rect)) > size * size and min(level.shape[:2]) > 8:
        level = _pyramid_down(level)
        rect = _rect_down(rect)
    return Resampler(np.ascontiguousarray(level)).sample(_affine_data(_rect_mapping(rect, geom.angle, size)), (size, size), antialias=False)


def align_chip(
    image: np.ndarray | Image.Image | Resampler,
    points: np.ndarray,
    template: np.ndarray = DLIB5_TEMPLATE,
    size: int = CHIP_SIZE,
    padding: float = CHIP_PADDING,
    *,
    exact: bool = True,
) -> np.ndarray:
    """The ``(size, size, 3)`` uint8 chip for face ``points`` (frame pixels) matching ``template``.

    With dlib's five points and the defaults this is dlib's
    ``get_face_chip(img, shape, 150, 0.25)``; ``exact`` as in :func:`warp_chip`.
    """
    return warp_chip(image, chip_geometry(points, template, size, padding), exact=exact)
