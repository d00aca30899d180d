"""1:N matching: one probe descriptor against every in-scope template at once.

Squared Euclidean distances come from one matrix-vector product,
``|g|^2 - 2 g.q + |q|^2`` with the template norms precomputed, so a probe
costs one pass over the gallery matrix (memory-bound; `kaoclock bench match`
measures how close to the memory bandwidth it runs).  A person's distance is
the minimum over their templates.  The answer names the best and second-best
person, their margin, and says "unknown" when the best is not close enough,
"ambiguous" when the runner-up is too close behind.

Cohort normalisation (open-set 1:N at low false-positive rates).  Raw
distances make some enrolled people "hubs": they sit in a dense region of
face space and attract strangers.  Each person's *density* is the mean
distance to their ``k`` nearest other enrolled people; the score of a probe
against person p is

    s_p = d_p - gamma * (density_p - mean density)

and the best person's score is further corrected by the probe's own cohort
(the mean adjusted score of its next ``k`` persons):

    score = s_best - beta * (cohort - mean density)

so a stranger who is "close to everybody" does not pass, while a probe that
stands out from the crowd does.  Both corrections are centred on the mean
density, so scores stay on dlib's distance scale.  The weights (gamma 1.0,
beta 0.3, k 5) were chosen on lfw-dev's tuning half (`kaoclock eval tune
--split 0/2`) and are reported on the other half
(firmware_py/gallery/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from firmware_py.gallery.store import GalleryMatrix

MatchVerdict = Literal["match", "unknown", "ambiguous", "empty"]


@dataclass(frozen=True)
class MatchResult:
    """The gallery's answer for one probe."""

    verdict: MatchVerdict
    person_id: str | None  # best candidate (also on "unknown" / "ambiguous")
    name: str | None
    distance: float | None  # to the best candidate (lower = closer)
    second_person_id: str | None
    second_distance: float | None
    threshold: float

    @property
    def margin(self) -> float | None:
        if self.distance is None or self.second_distance is None:
            return None
        return self.second_distance - self.distance

    @property
    def matched(self) -> bool:
        return self.verdict == "match"


COHORT_K = 5
GAMMA = 1.0
BETA = 0.3
# Person densities cost O(T^2) at load; above this many templates they are not computed (gamma, beta off).
DENSITY_MAX_TEMPLATES = 20_000


class Matcher:
    """Vectorised 1:N search over a :class:`GalleryMatrix`.

    ``threshold``: largest score accepted; ``min_margin``: the gap the best
    person must keep to the second-best person; ``normalise``: cohort
    normalisation (see the module docstring); ``density``: per-person
    densities when already known (in sorted person-id order).
    """

    def __init__(
        self,
        gallery: GalleryMatrix,
        threshold: float,
        min_margin: float = 0.0,
        normalise: bool = True,
        density: np.ndarray | None = None,
        k: int = COHORT_K,
        gamma: float = GAMMA,
        beta: float = BETA,
    ) -> None:
        self.gallery = gallery
        self.threshold = float(threshold)
        self.min_margin = float(min_margin)
        # Rows grouped by person so a person's minimum is one reduceat.
        order = np.argsort(gallery.person_ids.astype(str), kind="stable") if len(gallery) else np.zeros(0, int)
        self._g = np.ascontiguousarray(gallery.matrix[order], np.float32)
        ids = gallery.person_ids[order]
        if len(ids):
            change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
            self._starts = np.concatenate([[0], change]).astype(np.intp)
            self._persons = ids[self._starts]
        else:
            self._starts = np.zeros(0, np.intp)
            self._persons = np.zeros(0, object)
        self._sq = np.einsum("ij,ij->i", self._g, self._g)
        self.k = max(1, min(k, self.persons - 1))
        self.normalised = bool(normalise) and self.persons >= 3 and (density is not None or len(self._g) <= DENSITY_MAX_TEMPLATES)
        self.gamma, self.beta = (gamma, beta) if self.normalised else (0.0, 0.0)
        if self.normalised:
            self.density = np.asarray(density, np.float32) if density is not None else self._densities()
            self._centre = float(self.density.mean())
            self._offset = (self.gamma * (self.density - self._centre)).astype(np.float32)
        else:
            self.density = np.zeros(self.persons, np.float32)
            self._centre = 0.0
            self._offset = np.zeros(self.persons, np.float32)

    @property
    def persons(self) -> int:
        return len(self._persons)

    def _per_person(self, d2: np.ndarray) -> np.ndarray:
        return np.minimum.reduceat(d2, self._starts, axis=-1) if len(self._starts) else d2

    def _densities(self) -> np.ndarray:
        """Mean distance of each person to their k nearest other persons (min over template pairs)."""
        person_of_row = np.repeat(np.arange(self.persons), np.diff(np.append(self._starts, len(self._g))))
        near = np.empty(len(self._g), np.float32)
        for s in range(0, len(self._g), 1024):
            q = self._g[s : s + 1024]
            d2 = self._sq[None, :] - 2.0 * (q @ self._g.T) + self._sq[s : s + 1024, None]
            dp = np.sqrt(np.maximum(self._per_person(d2), 0.0))
            dp[np.arange(len(q)), person_of_row[s : s + 1024]] = np.inf
            near[s : s + 1024] = np.sort(np.partition(dp, self.k - 1, axis=1)[:, : self.k], axis=1).mean(axis=1)
        return np.asarray([near[person_of_row == p].mean() for p in range(self.persons)], np.float32)

    def person_distances(self, probe: np.ndarray) -> np.ndarray:
        """Distance from ``probe`` (128,) to every person (min over their templates), in ``self._persons`` order."""
        q = np.asarray(probe, np.float32).reshape(-1)
        d2 = self._sq - 2.0 * (self._g @ q) + float(q @ q)
        return np.sqrt(np.maximum(self._per_person(d2), 0.0))

    def _score(self, d: np.ndarray) -> tuple[int, float, int | None, float | None, float]:
        """(best, its score, second, its adjusted distance, best raw distance) for per-person distances d."""
        s = d - self._offset
        n = len(s)
        if n == 1:
            return 0, float(s[0]), None, None, float(d[0])
        m = min(n, self.k + 2)
        top = np.argpartition(s, m - 1)[:m] if n > m else np.arange(n)
        top = top[np.argsort(s[top])]
        i, j = int(top[0]), int(top[1])
        score = float(s[i])
        if self.beta:
            cohort = float(s[top[1 : self.k + 1]].mean())
            score -= self.beta * (cohort - self._centre)
        return i, score, j, float(s[j]), float(d[i])

    def match(self, probe: np.ndarray) -> MatchResult:
        """The best and second-best person for one descriptor, and the verdict.

        ``distance`` in the result is the (normalised) score compared with the threshold.
        """
        if self.persons == 0:
            return MatchResult("empty", None, None, None, None, None, self.threshold)
        d = self.person_distances(probe)
        i, score, j, second_s, _raw = self._score(d)
        best_id = str(self._persons[i])
        second_id = str(self._persons[j]) if j is not None else None
        if score > self.threshold:
            verdict: MatchVerdict = "unknown"
        elif second_s is not None and second_s - float(d[i] - self._offset[i]) < self.min_margin:
            verdict = "ambiguous"
        else:
            verdict = "match"
        second_score = None if second_s is None else round(second_s, 6)
        return MatchResult(verdict, best_id, self.gallery.names.get(best_id), round(score, 6), second_id, second_score, self.threshold)

    def match_many(self, probes: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(best person id, score) for many probes (evaluations)."""
        ids, scores = [], np.empty(len(probes), np.float32)
        for n, q in enumerate(probes):
            i, score, _, _, _ = self._score(self.person_distances(q))
            ids.append(str(self._persons[i]))
            scores[n] = score
        return ids, scores


def pair_scores(cohort: Matcher, a: np.ndarray, b: np.ndarray, exclude: list[set[int]] | None = None) -> np.ndarray:
    """The reader's cohort-normalised score for verification pairs ``a[i]`` vs ``b[i]`` (both ``(n, 128)``).

    The :class:`Matcher` built on ``cohort`` (other people's descriptors)
    plays the rest of the gallery.  Scoring ``a`` against ``b`` as the
    matcher scores a probe against a person: ``b``'s *density* (mean distance
    to its ``k`` nearest cohort people) corrects the distance by ``gamma``,
    ``a``'s own cohort (mean of its ``k`` best adjusted cohort scores) by
    ``beta``, both centred on the cohort's mean density; the pair's score is
    the mean of both directions (a verification pair has no "enrolled" side).
    ``exclude[i]``: cohort person indices (in ``cohort``'s person order)
    left out for pair ``i``, e.g. the pair's own identities.
    """
    a = np.asarray(a, np.float32).reshape(-1, 128)
    b = np.asarray(b, np.float32).reshape(-1, 128)
    d = np.linalg.norm(a - b, axis=1).astype(np.float64)
    if not cohort.normalised:
        return d
    k, c = cohort.k, cohort._centre

    def terms(x: np.ndarray, skip: set[int]) -> tuple[float, float]:
        dist = cohort.person_distances(x).astype(np.float64)
        if skip:
            dist[list(skip)] = np.inf
        density = float(np.partition(dist, k - 1)[:k].mean())
        adjusted = dist - cohort._offset
        return density, float(np.partition(adjusted, k - 1)[:k].mean())

    out = np.empty(len(d))
    for i in range(len(d)):
        skip = exclude[i] if exclude is not None else set()
        dens_a, coh_a = terms(a[i], skip)
        dens_b, coh_b = terms(b[i], skip)
        a_to_b = d[i] - cohort.gamma * (dens_b - c) - cohort.beta * (coh_a - c)
        b_to_a = d[i] - cohort.gamma * (dens_a - c) - cohort.beta * (coh_b - c)
        out[i] = (a_to_b + b_to_a) / 2.0
    return out
