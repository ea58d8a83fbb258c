"""Statistics the study did not give: bootstrap confidence intervals and significance tests.

Which test for which comparison:

* **clean versus attacked** (the same samples twice): the per-sample outcomes are *paired*,
  so the accuracy drop gets a paired bootstrap CI (samples resampled together) and the exact
  McNemar test (:func:`mcnemar_exact`, a binomial test on the discordant pairs);
* **male versus female**, **corpus versus corpus**: different samples, so *independent*
  groups: each group is resampled on its own for the CI (:func:`gap_ci`), and the difference
  of accuracies is tested with Fisher's exact test on the 2 x 2 table correct/wrong x group
  (:func:`fisher_exact_gap`); the difference of *drops* (clean minus attacked, a per-sample
  value in {-1, 0, 1}) with a two-sided permutation test (:func:`permutation_gap`).

Several settings of one attack are several tests: :func:`holm` adjusts their p-values
(Holm-Bonferroni), and the report's sentences use the adjusted values.

Every function is deterministic (seeded numpy ``Generator``) and takes 0/1 (bool) arrays of
per-sample correctness, ``[shape=(n,)]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from seradv.errors import ParameterError

__all__ = [
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


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (``nan`` when undefined, e.g. ``n = 0``)."""

    value: float
    lo: float
    hi: float

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


def proportion_ci(k: int, n: int, **kw) -> Estimate:
    """Bootstrap CI of a proportion ``k / n`` known only by its counts.

    The bootstrap distribution of the mean of 0/1 data depends only on ``k`` and ``n``, so this
    is the same interval (in distribution) as :func:`bootstrap_ci` on the per-sample values.
    """
    if n < 0 or not 0 <= k <= n:
        raise ParameterError(f"need 0 <= k <= n, got k={k}, n={n}")
    return bootstrap_ci(np.r_[np.ones(int(k)), np.zeros(int(n - k))], **kw)


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
