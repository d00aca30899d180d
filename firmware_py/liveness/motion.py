"""Temporal presentation-attack cues from FaceMesh landmarks over a window.

Pure functions of the (468, 3) FaceMesh points of successive frames (frame
pixels), so they are cheap (well under a millisecond per window) and testable
without a camera.

* **blink**: the eye aspect ratio (lid gap over eye width) of both eyes; a
  blink is a dip well below the window's typical opening.  A photo cannot
  blink; a replayed video can, which is why blink alone never passes anyone.
* **non-rigid / non-planar motion**: a held photo or phone screen is a plane,
  so however it is moved, tilted or shaken, its face points move by one
  homography between any two frames.  A real head turning or talking does
  not: its 3-D shape and its moving mouth and eyes leave a residual after the
  best homography.  The residual is measured relative to the inter-ocular
  distance so it does not depend on the face's size in the frame.
* **planar motion**: the other side of the same geometry.  When the face
  points move well beyond a 2-D shift / turn / zoom (the residual after the
  best *similarity* is large: the thing is tilted or turned) yet one
  homography still explains that motion (the residual after the best
  homography stays small), the face is a flat picture being tilted.  A real
  head that turns that much is not a plane: its homography residual grows
  with its similarity residual (ratio about 1-1.6 on the dev clips and NUAA
  live sequences; 2.4-5 on tilted NUAA prints).  A face that barely moves
  (a person standing still) gives no evidence either way, so this cue only
  ever vetoes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# FaceMesh indices: eye corners and two lid pairs per eye (MediaPipe topology).
RIGHT_EYE = (33, 133, 160, 144, 158, 153)  # outer, inner, upper-1, lower-1, upper-2, lower-2
LEFT_EYE = (263, 362, 387, 373, 385, 380)
# A spread of stable and mobile points (contour, brows, eyes, nose, lips) for the homography fit.
MOTION_POINTS = tuple(range(0, 468, 3))


def eye_aspect_ratio(points: NDArray[np.floating]) -> float:
    """Mean lid gap over eye width of both eyes (about 0.25-0.35 open, < 0.15 closed)."""
    ears = []
    for o, i, u1, l1, u2, l2 in (RIGHT_EYE, LEFT_EYE):
        p = points[:, :2]
        width = float(np.linalg.norm(p[o] - p[i])) + 1e-6
        gap = float(np.linalg.norm(p[u1] - p[l1]) + np.linalg.norm(p[u2] - p[l2])) / 2
        ears.append(gap / width)
    return float(np.mean(ears))


def blink_score(ears: NDArray[np.floating] | list[float]) -> float:
    """How deep the deepest eye closure in the window is: 1 - min / median (0 = never closed)."""
    e = np.asarray(ears, np.float64)
    if e.size < 3:
        return 0.0
    med = float(np.median(e))
    return float(np.clip(1.0 - e.min() / (med + 1e-6), 0.0, 1.0))


def interocular(points: NDArray[np.floating]) -> float:
    """Distance between the two eye centres (pixels)."""
    r = points[list(RIGHT_EYE[:2]), :2].mean(axis=0)
    le = points[list(LEFT_EYE[:2]), :2].mean(axis=0)
    return float(np.linalg.norm(r - le))


def _normalise(p: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    c = p.mean(axis=0)
    s = np.sqrt(2) / (np.sqrt(((p - c) ** 2).sum(axis=1)).mean() + 1e-9)
    t = np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])
    return (p - c) * s, t


def homography_residual(a: NDArray[np.floating], b: NDArray[np.floating]) -> float:
    """RMS distance (pixels) between ``b`` and ``a`` mapped by the least-squares homography a -> b.

    Normalised DLT (Hartley): zero for any two views of a plane, growing with
    the 3-D and non-rigid part of the motion.
    """
    a = np.asarray(a, np.float64)[:, :2]
    b = np.asarray(b, np.float64)[:, :2]
    an, ta = _normalise(a)
    bn, tb = _normalise(b)
    n = len(a)
    rows = np.zeros((2 * n, 9))
    x, y = an[:, 0], an[:, 1]
    u, v = bn[:, 0], bn[:, 1]
    rows[0::2, 0:3] = np.c_[x, y, np.ones(n)]
    rows[0::2, 6:9] = -u[:, None] * np.c_[x, y, np.ones(n)]
    rows[1::2, 3:6] = np.c_[x, y, np.ones(n)]
    rows[1::2, 6:9] = -v[:, None] * np.c_[x, y, np.ones(n)]
    _, _, vt = np.linalg.svd(rows, full_matrices=False)
    h = np.linalg.inv(tb) @ vt[-1].reshape(3, 3) @ ta
    ph = np.c_[a, np.ones(n)] @ h.T
    mapped = ph[:, :2] / ph[:, 2:3]
    return float(np.sqrt(((mapped - b) ** 2).sum(axis=1).mean()))


def similarity_residual(a: NDArray[np.floating], b: NDArray[np.floating]) -> float:
    """RMS distance (pixels) between ``b`` and ``a`` mapped by the least-squares similarity a -> b.

    Zero for a face that only shifts, turns in the image plane or changes
    size (walking straight up to the camera); grows with tilt, turn and
    expression.
    """
    a = np.asarray(a, np.float64)[:, :2]
    b = np.asarray(b, np.float64)[:, :2]
    za = (a[:, 0] - a[:, 0].mean()) + 1j * (a[:, 1] - a[:, 1].mean())
    zb = (b[:, 0] - b[:, 0].mean()) + 1j * (b[:, 1] - b[:, 1].mean())
    k = (np.conj(za) @ zb) / ((np.conj(za) @ za).real + 1e-12)  # scale * rotation as one complex number
    return float(np.sqrt(np.mean(np.abs(k * za - zb) ** 2)))


def planar_motion(points_seq: list[NDArray[np.floating]]) -> tuple[float, float]:
    """(distortion, planarity) of a window of landmarks.

    ``distortion``: the largest similarity residual between the first frame
    and any later one, over the inter-ocular distance (how far the face moved
    beyond shift / in-plane turn / zoom).  ``planarity``: that over
    :func:`nonplanar_motion` (how much of it one homography explains; high =
    a tilted flat picture).  (0, 0) for fewer than two frames.
    """
    if len(points_seq) < 2:
        return 0.0, 0.0
    idx = list(MOTION_POINTS)
    ref = np.asarray(points_seq[0])[idx]
    iod = interocular(np.asarray(points_seq[0])) + 1e-6
    distortion = max(similarity_residual(ref, np.asarray(p)[idx]) / iod for p in points_seq[1:])
    return distortion, distortion / max(nonplanar_motion(points_seq), 1e-3)


def nonplanar_motion(points_seq: list[NDArray[np.floating]]) -> float:
    """Largest homography residual between the first frame and any later one, over the inter-ocular distance.

    A planar photo or screen stays near the landmark model's jitter (about
    0.01-0.02); a live face that turns or talks goes well above it.
    Returns 0.0 for fewer than two frames.
    """
    if len(points_seq) < 2:
        return 0.0
    idx = list(MOTION_POINTS)
    ref = np.asarray(points_seq[0])[idx]
    iod = interocular(np.asarray(points_seq[0])) + 1e-6
    return max(homography_residual(ref, np.asarray(p)[idx]) / iod for p in points_seq[1:])
