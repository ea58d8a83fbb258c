"""Statistics the study did not give: confidence intervals and tests at the right unit.

Ground floor (numpy and scipy only): the evaluation stage (pooled speaker-fold metrics) and the
report use it.

**The unit.** Segments of one utterance (and, in the ``paper`` split, its augmented copies)
are not independent, and a male-female comparison is a comparison of *speakers*. So every
interval and test of the report resamples or permutes **clusters**, never segments:

* an accuracy (clean, robust, on adversarial examples) and a drop: clusters are the
  **speakers** when they are held out (``speaker`` split) and there are at least
  :data:`MIN_CLUSTERS` of them, otherwise the **utterances** (the ``paper`` split shares its
  speakers between training and test; with fewer than :data:`MIN_CLUSTERS` speakers an
  interval over new speakers cannot be estimated, so the interval is over new utterances of
  *these* speakers, and says so); :func:`choose_unit` makes that choice;
* male versus female, corpus versus corpus: clusters are always the **speakers** of each
  group; with fewer than :data:`MIN_GROUP_SPEAKERS` speakers in a group no inferential claim
  is made (:func:`comparison_refusal`), only the descriptive gap is shown.

**The intervals.** :func:`cluster_ci` (a mean, e.g. an accuracy): the percentile bootstrap
over clusters (``n_boot`` resamples) is too narrow with few clusters and near 0 or 1 (a
segment bootstrap gave ``0.000 [0.000, 0.000]`` for 0/64 and covered 0.73 of the time at
p = 0.02, n = 64), so it is widened to the Wilson score interval at the design-effect sample
size (Kish: ``n_eff = n / deff``, ``deff`` from the cluster-robust variance, at least 1) with
a Student-t quantile on ``clusters - 1`` degrees of freedom, whichever is wider at each end.
When every cluster is homogeneous (all 0 or all 1, including ``k`` in ``{0, n}``) the data
hold no within-cluster information: the exact Clopper-Pearson interval over the clusters
(``k`` all-1 clusters of ``C``) is used. A proportion known only by its counts gets the
Clopper-Pearson interval (:func:`proportion_ci`). :func:`cluster_gap_ci` (a difference of
two independent groups): the cluster bootstrap of each group on its own, widened to Newcombe's
hybrid score interval built from the two groups' :func:`cluster_ci` intervals.

**The tests.** :func:`cluster_permutation_test`: cluster labels (speakers with all their
segments) shuffled between the two groups, exact enumeration when there are at most
``n_perm`` arrangements. :func:`cluster_sign_test`: clean versus attacked on the same samples
(paired), an exact sign test over the clusters. :func:`holm` adjusts the p-values of several
settings of one attack (Holm-Bonferroni); the report's sentences use the adjusted values.

The segment-level functions (:func:`bootstrap_ci`, :func:`gap_ci`, :func:`paired_diff_ci`,
:func:`mcnemar_exact`, :func:`fisher_exact_gap`, :func:`permutation_gap`) assume independent
samples; the report no longer uses them for its inferences.

Every function is deterministic (seeded numpy ``Generator``); arrays are per-sample,
``[shape=(n,)]``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb
from typing import Callable

import numpy as np
from scipy import stats as sps

from seradv.errors import ParameterError

__all__ = [
    "cluster_ci",
    "cluster_stat_ci",
    "cluster_gap_ci",
    "cluster_permutation_test",
    "cluster_sign_test",
    "comparison_refusal",
    "clopper_pearson",
    "wilson",
    "MIN_CLUSTERS",
    "MIN_GROUP_SPEAKERS",
    "bootstrap_ci",
    "proportion_ci",
    "paired_diff_ci",
    "gap_ci",
    "mcnemar_exact",
    "fisher_exact_gap",
    "permutation_gap",
    "holm",
    "Estimate",
    "N_BOOT",
    "LEVEL",
]

N_BOOT = 2000
"""Bootstrap resamples used by the report."""

LEVEL = 0.95
"""Confidence level of every interval in the report."""

MIN_CLUSTERS = 5
"""Fewest clusters (speakers) an interval over new speakers is estimated from; with fewer the
report's intervals are over utterances of the speakers at hand (:func:`choose_unit`)."""

MIN_GROUP_SPEAKERS = 3
"""Fewest speakers per group (gender, corpus) for an inferential comparison of the groups."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (``nan`` when undefined, e.g. ``n = 0``)."""

    value: float
    lo: float
    hi: float
    method: str = ""
    """How the interval was made (e.g. ``Clopper-Pearson over 12 utterances``)."""
    unit: str = ""
    """What was resampled: ``speaker``, ``utterance`` or ``segment`` (``""``: counts only)."""
    n_clusters: int = 0

    def fmt(self, digits: int = 3) -> str:
        """``0.134 [0.109, 0.161]``, or ``n/a``."""
        if not np.isfinite(self.value):
            return "n/a"
        return f"{self.value:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def _as_array(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size and not np.all(np.isfinite(a)):
        raise ParameterError(f"{name} must hold finite values")
    return a


def _check(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ParameterError(f"n_boot={n_boot!r} must be a positive integer")
    if not 0 < level < 1:
        raise ParameterError(f"level={level!r} must be between 0 and 1 (exclusive)")


def _percentile(boot: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    return float(lo), float(hi)


def bootstrap_ci(
    values, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> Estimate:
    """Mean of ``values [shape=(n,)]`` with a percentile bootstrap CI.

    ``n_boot`` resamples of size ``n`` drawn with replacement; the interval holds the central
    ``level`` of the resampled means. A constant sample gives a zero-width interval.
    """
    _check(n_boot, level)
    x = _as_array(values, "values")
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    chunk = max(1, 2_000_000 // x.size)
    for i in range(0, n_boot, chunk):
        k = min(chunk, n_boot - i)
        boot[i : i + k] = x[rng.integers(0, x.size, size=(k, x.size))].mean(1)
    return Estimate(float(x.mean()), *_percentile(boot, level))


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion ``k / n`` (``nan`` for ``n = 0``)."""
    _check(1, level)
    if n < 0 or not 0 <= k <= n:
        raise ParameterError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def wilson(p: float, n: float, level: float = LEVEL, *, df: float | None = None) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` samples.

    ``n`` may be an effective (non-integer) sample size; ``df`` replaces the normal quantile by
    Student's t on ``df`` degrees of freedom (for a variance estimated from few clusters).
    """
    _check(1, level)
    if not n > 0 or not 0 <= p <= 1:
        return float("nan"), float("nan")
    q = 0.5 + level / 2
    z = float(sps.norm.ppf(q) if df is None else sps.t.ppf(q, df))
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def proportion_ci(k: int, n: int, level: float = LEVEL, **_ignored) -> Estimate:
    """A proportion ``k / n`` known only by its counts: the exact Clopper-Pearson interval.

    (A percentile bootstrap would give ``[0, 0]`` for ``0 / n``; Clopper-Pearson gives
    ``[0, 1 - (alpha / 2) ** (1 / n)]``.) No cluster information: the samples are taken as
    independent, so where per-sample results exist :func:`cluster_ci` is used instead.
    """
    lo, hi = clopper_pearson(k, n, level)
    return Estimate(k / n if n else float("nan"), lo, hi, method=f"Clopper-Pearson over {n} samples (counts only)",
                    unit="", n_clusters=int(n))


# ----------------------------------------------------------------------------- clusters


def _clusters(values, clusters, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, per-cluster sums and per-cluster sizes."""
    x = _as_array(values, name)
    g = np.asarray(clusters).ravel()
    if g.shape != x.shape:
        raise ParameterError(f"{name}: {x.size} values but {g.size} cluster labels")
    _, inv = np.unique(g.astype(str), return_inverse=True)
    c = int(inv.max()) + 1 if inv.size else 0
    return x, np.bincount(inv, weights=x, minlength=c), np.bincount(inv, minlength=c).astype(np.float64)


def _boot_means(s: np.ndarray, m: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Ratio means of ``n_boot`` resamples of the clusters (with replacement)."""
    c = s.size
    out = np.empty(n_boot)
    chunk = max(1, 2_000_000 // c)
    for i in range(0, n_boot, chunk):
        k = min(chunk, n_boot - i)
        idx = rng.integers(0, c, size=(k, c))
        out[i : i + k] = s[idx].sum(1) / m[idx].sum(1)
    return out


def _unit_name(unit: str, c: int) -> str:
    return f"{c} {unit or 'cluster'}{'s' if c != 1 else ''}"


def cluster_ci(values, clusters, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0,
               unit: str = "") -> Estimate:
    """Mean of ``values [shape=(n,)]`` (e.g. 0/1 correctness) with a CI over ``clusters [shape=(n,)]``.

    The point estimate is the mean over all samples. The interval (see the module text):

    * 0/1 values that are all 0 or all 1: Clopper-Pearson over the clusters (``0`` or ``C``
      of ``C``): nothing varies, each cluster counts once;
    * otherwise the percentile cluster bootstrap, widened at each end to the Wilson interval
      (0/1 values; other values: the t interval) at the design-effect sample size, with t on
      ``C - 1`` degrees of freedom;
    * one cluster with varying values: no interval (``nan``).
    """
    _check(n_boot, level)
    x, s, m = _clusters(values, clusters, "values")
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), "no samples", unit, 0)
    c, n = s.size, x.size
    mean = float(x.mean())
    binary = bool(np.all((x == 0) | (x == 1)))
    if binary and (mean == 0.0 or mean == 1.0):
        lo, hi = clopper_pearson(int(round(mean)) * c, c, level)
        return Estimate(mean, lo, hi, f"Clopper-Pearson over {_unit_name(unit, c)}", unit, c)
    if np.all(x == x[0]):
        return Estimate(mean, mean, mean, "constant values", unit, c)
    if c < 2:
        return Estimate(mean, float("nan"), float("nan"), f"one {unit or 'cluster'}: no interval", unit, c)
    boot = _boot_means(s, m, np.random.default_rng(seed), n_boot)
    b_lo, b_hi = _percentile(boot, level)
    var = c / (c - 1) * float(np.sum((s - mean * m) ** 2)) / n**2  # cluster-robust (ratio) variance
    if binary:
        deff = max(1.0, var / (mean * (1 - mean) / n))
        w_lo, w_hi = wilson(mean, n / deff, level, df=c - 1)
        how = "Wilson at the design-effect n"
    else:
        t = float(sps.t.ppf(0.5 + level / 2, c - 1))
        w_lo, w_hi = mean - t * np.sqrt(var), mean + t * np.sqrt(var)
        how = "t interval"
    return Estimate(mean, float(min(b_lo, w_lo)), float(max(b_hi, w_hi)),
                    f"bootstrap over {_unit_name(unit, c)}, widened to the {how}", unit, c)


def cluster_stat_ci(stat: Callable[[np.ndarray], float], clusters, *, n_boot: int = N_BOOT,
                    level: float = LEVEL, seed: int = 0, unit: str = "") -> Estimate:
    """A statistic that is not a per-sample mean (e.g. UAR) with a percentile CI over clusters.

    ``stat(idx)`` computes the statistic on the samples ``idx [shape=(k,)]`` (indices into the
    arrays the caller holds; repeated where a cluster is drawn twice); ``clusters [shape=(n,)]``
    labels every sample. The point estimate is ``stat`` of all samples; the interval holds the
    central ``level`` of ``stat`` over ``n_boot`` resamples of whole clusters with replacement
    (resamples where ``stat`` is undefined, ``nan``, are left out). Unlike :func:`cluster_ci`
    it is not widened to an analytic interval: with few clusters (under ~10) it is too narrow,
    and fewer than :data:`MIN_CLUSTERS` clusters give no interval.
    """
    _check(n_boot, level)
    g = np.asarray(clusters).ravel().astype(str)
    if g.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), "no samples", unit, 0)
    labels, inv = np.unique(g, return_inverse=True)
    c = labels.size
    value = float(stat(np.arange(g.size)))
    if c < MIN_CLUSTERS:
        return Estimate(value, float("nan"), float("nan"),
                        f"{_unit_name(unit, c)}: too few for an interval", unit, c)
    members = [np.flatnonzero(inv == k) for k in range(c)]
    rng = np.random.default_rng(seed)
    boot = np.array([stat(np.concatenate([members[k] for k in rng.integers(0, c, size=c)]))
                     for _ in range(n_boot)], dtype=np.float64)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return Estimate(value, float("nan"), float("nan"), "undefined in every resample", unit, c)
    lo, hi = _percentile(boot, level)
    return Estimate(value, lo, hi, f"percentile bootstrap over {_unit_name(unit, c)}", unit, c)


def cluster_gap_ci(a, clusters_a, b, clusters_b, *, n_boot: int = N_BOOT, level: float = LEVEL,
                   seed: int = 0, unit: str = "speaker") -> Estimate:
    """``mean(a) - mean(b)`` of two *independent* groups, each resampled by its own clusters.

    The percentile bootstrap of the difference (each group's clusters resampled on their
    own), widened at each end to Newcombe's hybrid score (MOVER) interval made from the two
    groups' :func:`cluster_ci` intervals; ``nan`` when either has none.
    """
    _check(n_boot, level)
    ea = cluster_ci(a, clusters_a, n_boot=n_boot, level=level, seed=seed, unit=unit)
    eb = cluster_ci(b, clusters_b, n_boot=n_boot, level=level, seed=seed + 1, unit=unit)
    d = ea.value - eb.value
    if not all(np.isfinite([ea.value, ea.lo, ea.hi, eb.value, eb.lo, eb.hi])):
        return Estimate(float(d), float("nan"), float("nan"), "no interval for a group", unit, 0)
    lo = d - np.hypot(ea.value - ea.lo, eb.hi - eb.value)
    hi = d + np.hypot(ea.hi - ea.value, eb.value - eb.lo)
    _, sa, ma = _clusters(a, clusters_a, "a")
    _, sb, mb = _clusters(b, clusters_b, "b")
    if sa.size >= 2 and sb.size >= 2:
        rng = np.random.default_rng(seed)
        boot = _boot_means(sa, ma, rng, n_boot) - _boot_means(sb, mb, rng, n_boot)
        b_lo, b_hi = _percentile(boot, level)
        lo, hi = min(lo, b_lo), max(hi, b_hi)
    return Estimate(float(d), float(lo), float(hi),
                    f"bootstrap over {_unit_name(unit, sa.size)} / {_unit_name(unit, sb.size)}, widened to "
                    f"Newcombe's score interval", unit, int(sa.size + sb.size))


def cluster_permutation_test(a, clusters_a, b, clusters_b, *, n_perm: int = 5000, seed: int = 0) -> float:
    """Two-sided permutation p-value for ``mean(a) - mean(b)``, permuting whole clusters.

    The clusters (e.g. speakers, each with all its samples) are reassigned to the two groups,
    keeping the number of clusters per group; the statistic is the difference of the
    sample-weighted means. With at most ``n_perm`` arrangements every one is enumerated
    (``p = #{|gap| >= |observed|} / #arrangements``, the observed one included); otherwise
    ``n_perm`` random ones (``p = (1 + hits) / (1 + n_perm)``). 1.0 when all values are equal.
    """
    if isinstance(n_perm, bool) or not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ParameterError(f"n_perm={n_perm!r} must be a positive integer")
    xa, sa, ma = _clusters(a, clusters_a, "a")
    xb, sb, mb = _clusters(b, clusters_b, "b")
    if xa.size == 0 or xb.size == 0:
        return float("nan")
    pooled = np.r_[xa, xb]
    if np.all(pooled == pooled[0]):
        return 1.0
    s, m = np.r_[sa, sb], np.r_[ma, mb]
    ca, c = sa.size, sa.size + sb.size
    total_s, total_m = s.sum(), m.sum()
    observed = abs(sa.sum() / ma.sum() - sb.sum() / mb.sum())
    tol = 1e-9 * max(1.0, observed)

    def gaps(idx: np.ndarray) -> np.ndarray:
        s_a, m_a = s[idx].sum(1), m[idx].sum(1)
        return np.abs(s_a / m_a - (total_s - s_a) / (total_m - m_a))

    if comb(c, ca) <= n_perm:
        idx = np.array(list(itertools.combinations(range(c), ca)), dtype=np.int64)
        return float(np.mean(gaps(idx) >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, 2_000_000 // c)
    for i in range(0, n_perm, chunk):
        k = min(chunk, n_perm - i)
        idx = np.argsort(rng.random((k, c)), axis=1)[:, :ca]
        hits += int(np.sum(gaps(idx) >= observed - tol))
    return (1 + hits) / (1 + n_perm)


def cluster_sign_test(before, after, clusters) -> float:
    """Two-sided exact sign test over clusters for paired outcomes (e.g. clean vs attacked).

    Per cluster the mean of ``before - after``; the clusters where it is positive against
    those where it is negative, ``Binomial(., 1/2)`` (McNemar's logic with clusters for
    pairs). 1.0 when no cluster differs.
    """
    x, y = _as_array(before, "before"), _as_array(after, "after")
    if x.shape != y.shape:
        raise ParameterError(f"paired samples must have the same length, got {x.size} and {y.size}")
    _, s, m = _clusters(x - y, clusters, "before")
    d = s / np.where(m > 0, m, 1)
    pos, neg = int(np.sum(d > 1e-12)), int(np.sum(d < -1e-12))
    if pos + neg == 0:
        return 1.0
    return float(sps.binomtest(pos, pos + neg, 0.5, alternative="two-sided").pvalue)


def comparison_refusal(n_a: int, n_b: int, labels: tuple[str, str] = ("male", "female"),
                       minimum: int = MIN_GROUP_SPEAKERS) -> str | None:
    """Why two groups of speakers cannot be compared inferentially, or ``None`` when they can.

    A gap between groups of speakers is a property of the speakers; with fewer than
    ``minimum`` speakers in a group it cannot be told apart from the speakers' own
    differences (with 2 + 2 speakers a permutation test cannot go below p = 1/3).
    """
    if min(n_a, n_b) >= minimum:
        return None
    return (f"{n_a} {labels[0]} / {n_b} {labels[1]} speaker(s): at least {minimum} per group are needed "
            f"for a test or a CI of the gap; the gap is descriptive only")


def paired_diff_ci(a, b, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Estimate:
    """``mean(a) - mean(b)`` for paired samples (same length), resampling the pairs together."""
    a, b = _as_array(a, "a"), _as_array(b, "b")
    if a.shape != b.shape:
        raise ParameterError(f"paired samples must have the same length, got {a.size} and {b.size}")
    return bootstrap_ci(a - b, n_boot=n_boot, level=level, seed=seed)


def gap_ci(a, b, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Estimate:
    """``mean(a) - mean(b)`` for two *independent* samples, each resampled on its own."""
    _check(n_boot, level)
    a, b = _as_array(a, "a"), _as_array(b, "b")
    if a.size == 0 or b.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(1)
    mb = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(1)
    return Estimate(float(a.mean() - b.mean()), *_percentile(ma - mb, level))


def mcnemar_exact(before, after) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes (e.g. clean vs attacked).

    Only the discordant pairs count: ``b`` = right before and wrong after, ``c`` = the
    reverse; under the null hypothesis ``b ~ Binomial(b + c, 1/2)``. Returns 1.0 with no
    discordant pair.
    """
    x, y = _as_array(before, "before").astype(bool), _as_array(after, "after").astype(bool)
    if x.shape != y.shape:
        raise ParameterError(f"paired samples must have the same length, got {x.size} and {y.size}")
    b = int(np.sum(x & ~y))
    c = int(np.sum(~x & y))
    if b + c == 0:
        return 1.0
    return float(sps.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def fisher_exact_gap(a, b) -> float:
    """Two-sided p-value of Fisher's exact test that two independent groups have equal accuracy."""
    a, b = _as_array(a, "a").astype(bool), _as_array(b, "b").astype(bool)
    if a.size == 0 or b.size == 0:
        return float("nan")
    table = [[int(a.sum()), int(a.size - a.sum())], [int(b.sum()), int(b.size - b.sum())]]
    return float(sps.fisher_exact(table, alternative="two-sided").pvalue)


def permutation_gap(a, b, *, n_perm: int = 5000, seed: int = 0) -> float:
    """Two-sided permutation p-value for ``mean(a) - mean(b)`` of two independent samples.

    Group labels are shuffled ``n_perm`` times; ``p = (1 + #|perm gap| >= |observed|) /
    (1 + n_perm)`` (never 0). Returns 1.0 when the pooled sample is constant.
    """
    a, b = _as_array(a, "a"), _as_array(b, "b")
    if a.size == 0 or b.size == 0:
        return float("nan")
    pooled = np.r_[a, b]
    if np.all(pooled == pooled[0]):
        return 1.0
    observed = abs(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, 2_000_000 // pooled.size)
    for i in range(0, n_perm, chunk):
        k = min(chunk, n_perm - i)
        perm = np.argsort(rng.random((k, pooled.size)), axis=1)
        s = pooled[perm]
        gaps = np.abs(s[:, : a.size].mean(1) - s[:, a.size :].mean(1))
        hits += int(np.sum(gaps >= observed - 1e-12))
    return (1 + hits) / (1 + n_perm)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given; ``nan`` entries are kept)."""
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
