"""A site threshold from the gallery itself: no extra data needed at a site.

Impostor distances between the enrolled people's templates (every pair of
templates of two different people) sample how close two different people of
*this* population get under *this* embedder; East Asian faces, for example,
sit much closer together under dlib's descriptor than LFW's mostly Western
faces, so a threshold copied from LFW lets strangers in.

A stranger facing a gallery of G people is falsely identified when any of
the G is closer than the threshold t.  With p(t) the pairwise false-match
rate, FPIR(t) = 1 - (1 - p(t))^G, so the target FPIR F asks for
p = 1 - (1 - F)^(1/G).  p is usually far below what a few hundred pairs can
resolve, so the lower tail is modelled.  Impostor distances are skewed (a
long right tail of very different people, a short left tail of look-alikes),
so the model is a normal fitted to the *lower half* only: centre = median,
spread = root-mean-square distance below the median.  (A normal fitted to all
distances put taiwan-dev's threshold at 0.13 where the measured FPIR-0.3%
threshold is 0.31; the lower-half fit gives 0.31.)  Where enough pairs exist
the empirical quantile is used instead when it is stricter.
"""

from __future__ import annotations

import math
import time
from statistics import NormalDist

import numpy as np

from firmware_py.gallery.store import Calibration, GalleryError, GalleryMatrix

MIN_PERSONS = 3


def impostor_scores(gallery: GalleryMatrix) -> np.ndarray:
    """Cohort-normalised scores between different enrolled people, as the matcher would score them.

    Person i seen as a probe against person j: their nearest template distance,
    minus gamma * (density_j - centre) (j's hub correction) and minus
    beta * (density_i - centre) (i's own cohort, approximated by its density).
    """
    from firmware_py.gallery.matcher import Matcher

    m = Matcher(gallery, threshold=1.0)
    if not m.normalised:
        return impostor_distances(gallery)
    starts = np.append(m._starts, len(m._g))
    dp = np.empty((m.persons, m.persons), np.float64)
    for i in range(m.persons):
        rows = m._g[starts[i] : starts[i + 1]]
        d2 = m._sq[None, :] - 2.0 * rows @ m._g.T + np.einsum("ij,ij->i", rows, rows)[:, None]
        dp[i] = np.sqrt(np.maximum(np.minimum.reduceat(d2, m._starts, axis=1).min(axis=0), 0.0))
    adj = dp - m.gamma * (m.density[None, :] - m._centre) - m.beta * (m.density[:, None] - m._centre)
    off = ~np.eye(m.persons, dtype=bool)
    return adj[off]


def impostor_distances(gallery: GalleryMatrix) -> np.ndarray:
    """Distances between every pair of templates that belong to different people."""
    g = gallery.matrix.astype(np.float64)
    sq = np.einsum("ij,ij->i", g, g)
    d2 = sq[:, None] + sq[None, :] - 2.0 * g @ g.T
    ids = gallery.person_ids.astype(str)
    diff = ids[:, None] != ids[None, :]
    iu = np.triu_indices(len(g), k=1)
    mask = diff[iu]
    return np.sqrt(np.maximum(d2[iu][mask], 0.0))


def pairwise_rate_for(target_fpir: float, persons: int) -> float:
    """Per-pair false-match rate that gives ``target_fpir`` against ``persons`` people."""
    return 1.0 - (1.0 - target_fpir) ** (1.0 / max(persons, 1))


def threshold_for(impostors: np.ndarray, target_fpir: float, persons: int) -> tuple[float, str]:
    """(threshold, method) for the target FPIR against a gallery of ``persons`` people."""
    p = pairwise_rate_for(target_fpir, persons)
    mu = float(np.median(impostors))
    lower = impostors[impostors < mu]
    sigma = float(np.sqrt(np.mean((lower - mu) ** 2))) if len(lower) else 0.0
    t_normal = NormalDist(mu, max(sigma, 1e-6)).inv_cdf(p)
    # The empirical quantile is trusted only with >= 10 impostor pairs below it.
    if len(impostors) * p >= 10:
        t_emp = float(np.quantile(impostors, p))
        if t_emp < t_normal:
            return t_emp, f"empirical quantile {p:.2e} of {len(impostors)} impostor pairs"
    return t_normal, f"lower-half normal fit (median {mu:.3f}, lower sd {sigma:.3f}) at pairwise rate {p:.2e}"


def calibrate(gallery: GalleryMatrix, target_fpir: float, ceiling: float | None = None) -> Calibration:
    """Estimate the site threshold for ``target_fpir`` from the gallery's own impostor distances.

    ``ceiling`` caps the result (the configured default threshold: calibration
    only ever tightens it).
    """
    if not 0.0 < target_fpir < 0.5:
        raise GalleryError(f"target FPIR {target_fpir} is out of range; give a rate such as 0.003 (0.3%)")
    persons = gallery.persons
    if persons < MIN_PERSONS:
        raise GalleryError(
            f"calibration needs templates of at least {MIN_PERSONS} people of embedder {gallery.embedder_version} in scope; "
            f"the gallery has {persons}: enrol more people first"
        )
    imp = impostor_scores(gallery)
    t, method = threshold_for(imp, target_fpir, persons)
    if ceiling is not None and t > ceiling:
        t, method = ceiling, method + f"; capped at the configured threshold {ceiling}"
    if not math.isfinite(t) or t <= 0:
        raise GalleryError(f"calibration gave an unusable threshold {t}; check the templates (are they all the same photo?)")
    return Calibration(
        threshold=round(float(t), 4),
        target_fpir=target_fpir,
        embedder_version=gallery.embedder_version,
        persons=persons,
        impostor_pairs=len(imp),
        method=method,
        content_hash=gallery.content_hash,
        ts=time.time(),
    )
