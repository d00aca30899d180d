"""`eval lfw --score cohort`: the cohort of each fold comes only from the other folds' people."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firmware_py.eval.lfw import Pair, cohort_scores
from firmware_py.eval.stills import StillDescriptors


def test_each_folds_cohort_leaves_out_the_scored_folds_people() -> None:
    rng = np.random.default_rng(0)
    people = [f"p{i:02d}" for i in range(40)]
    img = {p: [Path(p) / f"{p}_{n:04d}.jpg" for n in (1, 2)] for p in people}
    centre = {p: rng.normal(0, 0.1, 128) for p in people}
    # Fold f holds a same pair of person 2f and a different pair of persons 2f+1 / 2f+20 (f = 0..9).
    pairs = []
    for f in range(10):
        s, d1, d2 = people[2 * f], people[2 * f + 1], people[2 * f + 20]
        pairs += [Pair(img[s][0], img[s][1], True, f), Pair(img[d1][0], img[d2][0], False, f)]
    paths = sorted({x for p in pairs for x in (p.a, p.b)})
    vectors = np.array([centre[x.parent.name] + rng.normal(0, 0.02, 128) for x in paths], np.float32)
    desc = StillDescriptors(paths, vectors, np.ones(len(paths), bool), 0.0)
    scores, sizes = cohort_scores(pairs, desc, "v")
    assert scores.shape == (10, 20)
    assert sizes == [27] * 10  # 30 people appear in pairs; the scored fold's 3 never join its cohort
    raw = np.array([np.linalg.norm(desc.of(p.a) - desc.of(p.b)) for p in pairs])
    same = np.array([p.same for p in pairs])
    for f in range(10):
        # Normalised scores still tell this fold's same pair from its different pair.
        mine = np.array([p.fold == f for p in pairs])
        assert scores[f][mine & same].max() < scores[f][mine & ~same].min()
        assert not np.allclose(scores[f], raw)
