"""The report's statistics at the right unit, on known cases: coverage of the cluster interval
in a seeded simulation, 0/n intervals, identical groups, exact permutation and sign tests, and
the refusal of gender claims with too few speakers.

Assertions compare with tolerances or with outcomes that a last-bit change of a float cannot
flip (counts of covered intervals against a wide band, exact small-integer p-values)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seradv.errors import ParameterError
from seradv import stats
from seradv.report import analysis


def _clustered(rng: np.random.Generator, n_clusters: int, p: float, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """0/1 outcomes of ``n_clusters`` clusters (4 to 12 samples each): each cluster's rate is
    Beta with mean ``p`` and intra-cluster correlation ``rho``."""
    a, b = p * (1 - rho) / rho, (1 - p) * (1 - rho) / rho
    sizes = rng.integers(4, 13, n_clusters)
    rates = rng.beta(a, b, n_clusters)
    values = np.concatenate([rng.random(m) < q for m, q in zip(sizes, rates)])
    return values.astype(float), np.repeat(np.arange(n_clusters), sizes)


def _coverage(p: float, rho: float, *, reps: int, n_clusters: int = 20, seed: int = 7) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(reps):
        x, g = _clustered(rng, n_clusters, p, rho)
        ci = stats.cluster_ci(x, g, n_boot=400, seed=i, unit="speaker")
        hits += ci.lo <= p <= ci.hi
    return hits / reps


def test_cluster_interval_covers_at_its_level():
    # 20 clusters, intra-cluster correlation 0.2: the nominal 95 % holds (Monte Carlo SE ~ 0.01)
    cov = _coverage(0.3, 0.2, reps=400)
    assert 0.90 <= cov <= 0.99, cov
    # near 0 the interval stays valid (conservative rather than the segment bootstrap's 0.73)
    assert _coverage(0.02, 0.1, reps=200, seed=11) >= 0.90


def test_segment_bootstrap_undercovers_clustered_data():
    """Why the unit matters: the old segment bootstrap on the same clustered data is too narrow."""
    rng = np.random.default_rng(3)
    hits = 0
    for i in range(200):
        x, _ = _clustered(rng, 20, 0.3, 0.3)
        ci = stats.bootstrap_ci(x, n_boot=300, seed=i)
        hits += ci.lo <= 0.3 <= ci.hi
    assert hits / 200 < 0.88


def test_zero_of_n_intervals_are_exact():
    cp_hi = 1 - 0.025 ** (1 / 64)  # Clopper-Pearson upper bound of 0/64
    assert cp_hi == pytest.approx(0.0560, abs=1e-4)
    e = stats.proportion_ci(0, 64)
    assert e.value == 0 and e.lo == 0 and e.hi == pytest.approx(cp_hi, rel=1e-9)
    assert stats.clopper_pearson(0, 64) == pytest.approx((0.0, cp_hi), rel=1e-9)
    # per-sample zeros: each segment its own cluster -> the same interval
    seg = stats.cluster_ci(np.zeros(64), np.arange(64), unit="segment")
    assert seg.hi == pytest.approx(cp_hi, rel=1e-9) and seg.hi > 0
    # 64 zeros in 8 utterances: each utterance counts once (nothing varies within or between)
    utt = stats.cluster_ci(np.zeros(64), np.repeat(np.arange(8), 8), unit="utterance")
    assert utt.hi == pytest.approx(1 - 0.025 ** (1 / 8), rel=1e-9) and "Clopper-Pearson" in utt.method
    # n/n mirrors 0/n
    full = stats.cluster_ci(np.ones(64), np.arange(64))
    assert full.value == 1 and full.hi == 1 and full.lo == pytest.approx(1 - cp_hi, rel=1e-9)
    # Wilson agrees with scipy's
    from scipy.stats import binomtest

    w = binomtest(3, 10).proportion_ci(method="wilson")
    assert stats.wilson(0.3, 10) == pytest.approx((w.low, w.high), rel=1e-9)
    lo, hi = stats.wilson(0.0, 64)
    assert lo == 0 and hi > 0.05


def test_interval_is_never_narrower_than_wilson_and_contains_the_estimate():
    rng = np.random.default_rng(5)
    x, g = _clustered(rng, 12, 0.1, 0.05)
    ci = stats.cluster_ci(x, g, seed=1)
    lo, hi = stats.wilson(x.mean(), x.size)
    assert ci.lo <= x.mean() <= ci.hi
    assert ci.lo <= lo + 1e-12 and ci.hi >= hi - 1e-12
    assert stats.cluster_ci(x, g, seed=1) == ci  # seeded
    with pytest.raises(ParameterError, match="cluster labels"):
        stats.cluster_ci([1, 0, 1], [0, 1])


def test_zero_gap_between_identical_groups():
    rng = np.random.default_rng(2)
    x, g = _clustered(rng, 6, 0.4, 0.2)
    gap = stats.cluster_gap_ci(x, g, x, g, n_boot=500)
    assert gap.value == 0 and gap.lo < 0 < gap.hi
    # every arrangement of the 12 clusters has |gap| >= 0: p is exactly 1
    assert stats.cluster_permutation_test(x, g, x, g) == 1.0
    # random arrangements (more than n_perm exist): p stays near 1
    assert stats.cluster_permutation_test(x, g, x, g, n_perm=200) > 0.5
    # two identical all-zero groups: the interval still has width
    z = stats.cluster_gap_ci(np.zeros(40), np.repeat(np.arange(5), 8), np.zeros(40), np.repeat(np.arange(5), 8))
    assert z.value == 0 and z.lo < 0 < z.hi


def test_exact_permutation_and_sign_tests():
    ones, zeros = np.ones(12), np.zeros(12)
    spk = np.repeat(np.arange(3), 4)
    # 3 + 3 speakers: C(6, 3) = 20 arrangements, 2 as extreme as the observed one -> p = 0.1,
    # the smallest p two groups of 3 speakers can give: no claim at 5 % is possible
    assert stats.cluster_permutation_test(ones, spk, zeros, spk) == pytest.approx(0.1)
    # a clear gap between 8 + 8 speakers
    big = np.repeat(np.arange(8), 5)
    assert stats.cluster_permutation_test(np.ones(40), big, np.zeros(40), big) < 0.001
    # clean vs attacked, 6 clusters each with a drop: p = 2 * 0.5 ** 6
    clean, attacked = np.ones(24), np.tile([1.0, 0.0, 0.0, 1.0], 6)
    assert stats.cluster_sign_test(clean, attacked, np.repeat(np.arange(6), 4)) == pytest.approx(2 * 0.5**6)
    assert stats.cluster_sign_test(clean, clean, np.repeat(np.arange(6), 4)) == 1.0


def test_gender_claims_need_three_speakers_per_gender():
    assert stats.comparison_refusal(3, 3) is None
    why = stats.comparison_refusal(1, 1)
    assert why is not None and "1 male / 1 female" in why and "at least 3" in why
    assert stats.comparison_refusal(5, 2) is not None
    # one speaker per gender (the speaker split of a 10-speaker corpus): descriptive gap only
    m, f = np.r_[np.ones(30), np.zeros(10)], np.r_[np.ones(10), np.zeros(30)]
    g = analysis.speaker_gap(m, np.full(40, "03"), f, np.full(40, "08"), labels=("male", "female"))
    assert g["gap"] == pytest.approx(0.5) and g["refusal"]
    assert np.isnan(g["p_perm"]) and np.isnan(g["gap_lo"]) and np.isnan(g["gap_hi"])
    # with 4 speakers per gender the same gap is tested
    g4 = analysis.speaker_gap(m, np.repeat(list("abcd"), 10), f, np.repeat(list("efgh"), 10), labels=("male", "female"))
    assert not g4["refusal"] and 0 < g4["p_perm"] <= 1 and g4["gap_lo"] < 0.5 < g4["gap_hi"]


def test_unit_follows_the_split():
    part = pd.DataFrame({"speaker": np.repeat(list("ab"), 10), "utterance": np.repeat(list("abcdefghij"), 2)})
    assert analysis.choose_unit(part, "speaker")[0] == "utterance"  # 2 speakers: too few
    many = pd.DataFrame({"speaker": np.repeat(list("abcdef"), 2), "utterance": list("abcdefghijkl")})
    assert analysis.choose_unit(many, "speaker")[0] == "speaker"
    assert analysis.choose_unit(many, "paper")[0] == "utterance"  # speakers shared with training
    unit, ids = analysis.choose_unit(pd.DataFrame({"x": [1, 2, 3]}), "paper")
    assert unit == "segment" and len(set(ids)) == 3


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_recall_mean_is_sklearns_balanced_accuracy():
    from sklearn.metrics import balanced_accuracy_score

    from seradv.evaluation import recall_mean

    rng = np.random.default_rng(4)
    for n in (5, 40, 300):
        yt, yp = rng.integers(0, 5, n), rng.integers(0, 5, n)
        assert recall_mean(yt, yp) == pytest.approx(balanced_accuracy_score(yt, yp), abs=1e-12)
    assert np.isnan(recall_mean(np.array([], int), np.array([], int)))


def test_cluster_stat_ci_resamples_clusters():
    rng = np.random.default_rng(0)
    spk = np.repeat(np.arange(10), 30).astype(str)
    yt = rng.integers(0, 4, spk.size)
    yp = np.where(rng.random(spk.size) < 0.6, yt, rng.integers(0, 4, spk.size))
    from seradv.evaluation import recall_mean

    est = stats.cluster_stat_ci(lambda i: recall_mean(yt[i], yp[i]), spk, n_boot=400, seed=1, unit="speaker")
    assert est.lo <= est.value <= est.hi and 0 < est.hi - est.lo < 0.3
    assert est.n_clusters == 10 and "speakers" in est.method
    again = stats.cluster_stat_ci(lambda i: recall_mean(yt[i], yp[i]), spk, n_boot=400, seed=1)
    assert (again.lo, again.hi) == (est.lo, est.hi)
    # speakers that all behave alike give a narrow interval; speakers that differ a wide one
    alike = stats.cluster_stat_ci(lambda i: float(np.mean(yt[i] == yp[i])), spk, n_boot=400)
    yp2 = np.where(np.isin(spk, list("01234")), yt, (yt + 1) % 4)  # half the speakers always wrong
    apart = stats.cluster_stat_ci(lambda i: float(np.mean(yt[i] == yp2[i])), spk, n_boot=400)
    assert apart.hi - apart.lo > 2 * (alike.hi - alike.lo)
    few = stats.cluster_stat_ci(lambda i: 0.5, spk[:90], n_boot=50)  # 3 speakers
    assert np.isnan(few.lo) and "too few" in few.method
