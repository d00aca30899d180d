"""1:N matching and calibration on real descriptors of real photos."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_py.gallery import calibration
from firmware_py.gallery.calibration import calibrate, stranger_scores, threshold_for, tolerance_factor
from firmware_py.gallery.matcher import Matcher
from firmware_py.gallery.store import GalleryError, GalleryMatrix


@pytest.fixture(scope="module")
def real(models_dir, grace_hopper, astronaut):
    """dlib descriptors of grace_hopper (and its mirror image) and of the astronaut."""
    from firmware_py.bench.dlib_peer import DlibPeer

    peer = DlibPeer(models_dir)
    g = peer.faces(grace_hopper)[0].descriptor
    g_mirror = peer.faces(np.ascontiguousarray(grace_hopper[:, ::-1]))[0].descriptor
    a = max(peer.faces(astronaut), key=lambda f: f.box[2] - f.box[0]).descriptor
    return g, g_mirror, a


def _gallery(rows, ids, names=None):
    return GalleryMatrix(np.asarray(rows, np.float32), np.asarray(ids, dtype=object), names or {i: i.upper() for i in ids}, "v", 1, "h")


def test_known_person_matches_and_stranger_is_unknown(real):
    g, g_mirror, a = real
    rng = np.random.default_rng(0)
    distractors = [a + rng.normal(0, 0.03, 128).astype(np.float32) for _ in range(30)]  # a crowd of look-alikes, far from grace
    m = Matcher(_gallery([g, *distractors], ["grace", *[f"p{i:02d}" for i in range(30)]]), threshold=0.5, min_margin=0.04)
    hit = m.match(g_mirror)
    assert hit.verdict == "match" and hit.person_id == "grace" and hit.name == "GRACE"
    assert hit.distance < 0.3 and hit.margin > 0.3
    stranger = Matcher(_gallery([g], ["grace"]), threshold=0.5).match(a)
    assert stranger.verdict == "unknown" and stranger.distance > 0.5 and stranger.person_id == "grace"


def test_person_distance_is_min_over_templates_and_matches_brute_force(real):
    g, g_mirror, _a = real
    rng = np.random.default_rng(1)
    rows = [g + rng.normal(0, 0.05, 128) for _ in range(40)]
    ids = [f"p{i % 7}" for i in range(40)]
    m = Matcher(_gallery(rows, ids), threshold=0.6)
    got = dict(zip(m._persons.tolist(), m.person_distances(g_mirror).tolist(), strict=True))
    for pid in set(ids):
        brute = min(np.linalg.norm(np.asarray(r, np.float32) - g_mirror) for r, i in zip(rows, ids, strict=True) if i == pid)
        assert got[pid] == pytest.approx(brute, abs=1e-4)


def test_ambiguous_when_two_people_are_equally_close(real):
    g, g_mirror, _ = real
    m = Matcher(_gallery([g, g + 0.001], ["grace", "twin"]), threshold=0.6, min_margin=0.04)
    r = m.match(g_mirror)
    assert r.verdict == "ambiguous" and r.margin < 0.04


def test_empty_gallery_says_empty():
    r = Matcher(_gallery(np.zeros((0, 128)), []), threshold=0.6).match(np.zeros(128, np.float32))
    assert r.verdict == "empty" and r.person_id is None


def test_stranger_scores_are_the_matchers_scores_without_the_person():
    rng = np.random.default_rng(2)
    people = rng.normal(0, 0.035, (12, 128)).astype(np.float32)
    rows = np.concatenate([people, people[:4] + rng.normal(0, 0.01, (4, 128)).astype(np.float32)])  # 4 people with 2 templates
    ids = [f"p{i:02d}" for i in range(12)] + [f"p{i:02d}" for i in range(4)]
    gal = _gallery(rows, ids)
    got = stranger_scores(gal)
    # Brute force: each template matched by a Matcher built on everybody else, as the reader would score a stranger.
    order = np.argsort(np.asarray(ids), kind="stable")
    want = []
    for r in order:
        others = [j for j in range(len(ids)) if ids[j] != ids[r]]
        m = Matcher(_gallery(rows[others], [ids[j] for j in others]), threshold=1.0)
        want.append(m.match(rows[r]).distance)
    assert got == pytest.approx(want, abs=1e-5)


def test_masked_stranger_scores_approximate_the_exact_ones(monkeypatch):
    rng = np.random.default_rng(3)
    gal = _gallery(rng.normal(0, 0.035, (60, 128)), [f"p{i:02d}" for i in range(60)])
    exact = stranger_scores(gal)
    monkeypatch.setattr(calibration, "EXACT_MAX_PERSONS", 10)  # large-gallery path: the person masked out, densities kept
    masked = stranger_scores(gal)
    assert not np.allclose(exact, masked, atol=1e-6)  # a different computation...
    assert np.abs(exact - masked).max() < 0.03 * exact.mean()  # ...of nearly the same scores


def test_tolerance_factor_matches_published_tables():
    # One-sided normal tolerance factors (e.g. NIST/SEMATECH e-Handbook 7.2.6.3; exact values by the noncentral t).
    assert tolerance_factor(10, 0.10, 0.95) == pytest.approx(2.355, abs=0.05)
    assert tolerance_factor(20, 0.01, 0.95) == pytest.approx(3.295, abs=0.05)
    # Few samples: a wide margin beyond the quantile's z; many samples: the z itself.
    z = 2.748  # z of the 0.3% quantile
    assert tolerance_factor(7, 0.003, 0.95) > z + 1.5
    assert tolerance_factor(100_000, 0.003, 0.95) == pytest.approx(z, abs=0.02)
    assert tolerance_factor(7, 0.003, 0.95) > tolerance_factor(20, 0.003, 0.95) > tolerance_factor(50, 0.003, 0.95)


def test_calibration_keeps_fresh_strangers_near_the_target():
    # A homogeneous population: sites of 20 people, each met by 2,000 strangers of the same population.
    rng = np.random.default_rng(4)
    reached = []
    for _ in range(10):
        site = _gallery(rng.normal(0, 0.035, (20, 128)), [f"p{i:02d}" for i in range(20)])
        cal = calibrate(site, 0.01)
        assert cal.persons == 20 and cal.impostor_pairs == 20 and "tolerance bound" in cal.method
        _, scores = Matcher(site, threshold=cal.threshold).match_many(rng.normal(0, 0.035, (2000, 128)).astype(np.float32))
        reached.append(float((scores <= cal.threshold).mean()))
    assert np.median(reached) <= 0.01  # the typical site is at or below its target...
    assert 0 < max(reached) < 0.05  # ...none is far above it, and the margin does not shut everybody out
    assert calibrate(site, 0.01, ceiling=cal.threshold - 0.01).threshold == pytest.approx(cal.threshold - 0.01, abs=1e-4)
    t_loose, _ = threshold_for(stranger_scores(site), 0.2, 20)
    assert t_loose > cal.threshold


def test_calibration_needs_enough_people(real):
    g, _g_mirror, a = real
    with pytest.raises(GalleryError, match="at least 3 people"):
        calibrate(_gallery([g, a], ["grace", "astro"]), 0.01)


def test_cohort_normalisation_penalises_hubs_and_keeps_the_distance_scale():
    rng = np.random.default_rng(3)
    crowd = rng.normal(0, 0.03, (20, 128)).astype(np.float32)  # a dense crowd: each is a "hub" for strangers
    loner = np.full(128, 0.08, np.float32)  # someone far from everybody
    rows = np.concatenate([crowd, loner[None]])
    ids = [f"c{i:02d}" for i in range(20)] + ["loner"]
    m = Matcher(_gallery(rows, ids), threshold=0.5)
    raw = Matcher(_gallery(rows, ids), threshold=0.5, normalise=False)
    assert m.normalised and not raw.normalised
    # brute-force density of the loner: mean distance to its 5 nearest others
    brute = np.sort(np.linalg.norm(crowd - loner, axis=1))[:5].mean()
    assert m.density[m._persons.tolist().index("loner")] == pytest.approx(brute, rel=1e-4)
    # A probe as far (raw) from a crowd member as from the loner scores worse against the crowd member.
    probe_c = crowd[0] + rng.normal(0, 0.02, 128).astype(np.float32)
    probe_l = loner + (probe_c - crowd[0])
    assert raw.match(probe_c).distance == pytest.approx(raw.match(probe_l).distance, abs=1e-4)  # same raw distance
    assert m.match(probe_c).distance > m.match(probe_l).distance + 0.05  # the hub's match counts for less
    assert m.match(probe_l).person_id == "loner" and m.match(probe_c).person_id == "c00"


def test_pair_scores_apply_the_matchers_normalisation_to_verification_pairs(real):
    from firmware_py.gallery.matcher import pair_scores

    g, g_mirror, a = real
    rng = np.random.default_rng(1)
    a_twin = a + rng.normal(0, 0.02, 128).astype(np.float32)
    # A dense crowd of look-alikes around grace, a sparse one around the astronaut.
    near_g = [g + rng.normal(0, 0.04, 128).astype(np.float32) for _ in range(10)]
    near_a = [a + rng.normal(0, 0.08, 128).astype(np.float32) for _ in range(10)]
    ids = [f"g{i}" for i in range(10)] + [f"a{i}" for i in range(10)]
    cohort = Matcher(_gallery([*near_g, *near_a], ids), threshold=1.0)
    pa, pb = np.stack([g, a]), np.stack([g_mirror, a_twin])
    raw = np.linalg.norm(pa - pb, axis=1)
    s = pair_scores(cohort, pa, pb)
    assert np.allclose(s, pair_scores(cohort, pb, pa))  # symmetric: neither side is "the enrolled one"
    # The pair in the crowded region is corrected upwards more than the one in the sparse region (a hub).
    assert s[0] - raw[0] > s[1] - raw[1] + 0.1
    # Leaving grace's look-alikes out of her pair's cohort makes her region look sparse: a lower score.
    near_g_idx = {i for i, p in enumerate(cohort._persons) if str(p).startswith("g")}
    assert pair_scores(cohort, pa[:1], pb[:1], [near_g_idx])[0] < s[0]
    # Fewer than 3 cohort people: no normalisation, the raw distance.
    tiny = Matcher(_gallery(near_g[:2], ["x", "y"]), threshold=1.0)
    assert np.allclose(pair_scores(tiny, pa, pb), raw)


def test_threshold_widens_the_left_out_spread_for_real_strangers():
    # Seven simulated strangers: the normal tolerance bound, with the sd widened by SD_INFLATION (1.35, tuned on lfw-dev).
    scores = np.array([0.52, 0.48, 0.55, 0.50, 0.46, 0.53, 0.49])
    t, method = threshold_for(scores, 0.003, 7)
    k = tolerance_factor(7, 0.003)
    assert calibration.SD_INFLATION == 1.35 and 5.0 < k < 5.6
    assert t == pytest.approx(scores.mean() - k * 1.35 * scores.std(ddof=1))
    assert "x1.35" in method and "7 leave-one-out" in method
    # An explicit inflation and confidence replace the shipped ones (what `eval site-threshold` compares).
    k90 = tolerance_factor(7, 0.003, 0.9)
    t2, method2 = threshold_for(scores, 0.003, 7, 0.9, 1.0)
    assert k90 < k and t2 == pytest.approx(scores.mean() - k90 * scores.std(ddof=1)) and t2 > t and "x1 " in method2
