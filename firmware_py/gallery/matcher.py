"""1:N matching: one probe descriptor against every in-scope template at once.

Squared Euclidean distances come from one matrix-vector product,
``|g|^2 - 2 g.q + |q|^2`` with the template norms precomputed, so a probe
costs one pass over the gallery matrix (memory-bound; `kaoclock bench match`
measures how close to the memory bandwidth it runs).  A person's distance is
the minimum over their templates.  The answer names the best and second-best
person, their margin, and says "unknown" when the best is not close enough,
"ambiguous" when the runner-up is too close behind.
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


class Matcher:
    """Vectorised 1:N search over a :class:`GalleryMatrix`.

    ``threshold``: largest distance accepted; ``min_margin``: the gap the best
    person must keep to the second-best person.
    """

    def __init__(self, gallery: GalleryMatrix, threshold: float, min_margin: float = 0.0) -> None:
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

    @property
    def persons(self) -> int:
        return len(self._persons)

    def person_distances(self, probe: np.ndarray) -> np.ndarray:
        """Distance from ``probe`` (128,) to every person (min over their templates), in ``self._persons`` order."""
        q = np.asarray(probe, np.float32).reshape(-1)
        d2 = self._sq - 2.0 * (self._g @ q) + float(q @ q)
        per_person = np.minimum.reduceat(d2, self._starts) if len(self._starts) else d2
        return np.sqrt(np.maximum(per_person, 0.0))

    def match(self, probe: np.ndarray) -> MatchResult:
        """The best and second-best person for one descriptor, and the verdict."""
        if self.persons == 0:
            return MatchResult("empty", None, None, None, None, None, self.threshold)
        d = self.person_distances(probe)
        if len(d) >= 2:
            top2 = np.argpartition(d, 1)[:2]
            i, j = (top2[0], top2[1]) if d[top2[0]] <= d[top2[1]] else (top2[1], top2[0])
            second_id, second_d = str(self._persons[j]), float(d[j])
        else:
            i, second_id, second_d = 0, None, None
        best_id, best_d = str(self._persons[i]), float(d[i])
        if best_d > self.threshold:
            verdict: MatchVerdict = "unknown"
        elif second_d is not None and second_d - best_d < self.min_margin:
            verdict = "ambiguous"
        else:
            verdict = "match"
        return MatchResult(verdict, best_id, self.gallery.names.get(best_id), best_d, second_id, second_d, self.threshold)
