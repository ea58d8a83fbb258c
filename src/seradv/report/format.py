"""How the report writes numbers, intervals, p-values and names into its tables and sentences.

Every cell of a report table goes through these functions, so one value reads the same in
every table, in Markdown and in HTML. A missing or non-finite value is a dash (:data:`DASH`);
a robust accuracy that old results lack is :data:`UNAVAILABLE`, never replaced by another
number. Escaping for Markdown and HTML is :mod:`seradv.report.render`'s job.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seradv.attacks import ATTACKS
from seradv.config import AttackConfig
from seradv import stats

__all__ = ["DASH", "UNAVAILABLE", "STUDY_ACC", "fmt_acc", "fmt_delta", "fmt_time", "fmt_p", "p_eq", "ci",
           "signed_ci", "robust_ci", "robust_fmt", "unit", "n_speakers", "gap_cell", "verdict", "join_list",
           "n_of", "units_of", "series_short", "attack_title", "attack_kind", "khz"]

DASH = "–"

UNAVAILABLE = "unavailable"
"""Shown for a robust accuracy that old results lack and no per-sample file can give."""

STUDY_ACC = "accuracy on adversarial examples, as the study"

_DEFAULT_ATTACK_SEED = AttackConfig().seed
"""The attack seed that short series labels leave out (the default of ``attack.seed``)."""


def fmt_acc(v: float) -> str:
    """Accuracies and gaps: three decimals."""
    return DASH if v is None or not np.isfinite(v) else f"{v:.3f}"


def fmt_delta(v: float) -> str:
    """Mean |delta|: four significant digits (the study's values span 1e-4 to 1)."""
    return DASH if v is None or not np.isfinite(v) else f"{v:.4g}"


def fmt_time(v: float) -> str:
    """Seconds: three significant digits, whole seconds from 1000 s."""
    if v is None or not np.isfinite(v):
        return DASH
    return f"{v:.0f}" if v >= 1000 else f"{v:.3g}"


def fmt_p(p: float) -> str:
    """A p-value: three decimals, ``<0.001`` below."""
    if p is None or not np.isfinite(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_eq(p: float) -> str:
    """``p<0.001`` or ``p=0.013`` for sentences."""
    s = fmt_p(p)
    return f"p{s}" if s.startswith("<") else f"p={s}"


def ci(v: float, lo: float, hi: float) -> str:
    """A proportion with its interval: ``0.500 [0.300, 0.700]``."""
    if not np.isfinite(v):
        return DASH
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{v:.3f} [no CI]"
    return stats.Estimate(v, lo, hi).fmt()


def signed_ci(v: float, lo: float, hi: float) -> str:
    """A difference with its interval: ``+0.100 [-0.050, +0.250]``."""
    if not np.isfinite(v):
        return DASH
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{v:+.3f} [no CI]"
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def robust_ci(r) -> str:
    """The robust accuracy of a row with its interval, or :data:`UNAVAILABLE`."""
    return ci(r.robust_accuracy, r.robust_lo, r.robust_hi) if np.isfinite(r.robust_accuracy) else UNAVAILABLE


def robust_fmt(v: float) -> str:
    """A robust accuracy alone, or :data:`UNAVAILABLE`."""
    return fmt_acc(v) if np.isfinite(v) else UNAVAILABLE


def unit(r) -> str:
    """``speakers (12)``, ``utterances (40)``, ``counts`` ..."""
    u = getattr(r, "ci_unit", "")
    if u in ("", "counts") or not isinstance(u, str):
        return "counts (independent samples)"
    return f"{u}s ({int(r.n_clusters)})"


def n_speakers(v) -> str:
    return str(int(v)) if v is not None and np.isfinite(v) else "?"


def gap_cell(v: float, lo: float, hi: float, refusal: str) -> str:
    """The gap with its CI, or the gap alone marked descriptive when the comparison is refused."""
    if not np.isfinite(v):
        return DASH
    if refusal:
        return f"{v:+.3f} (descriptive)"
    return signed_ci(v, lo, hi)


def verdict(p: float, refusal: str) -> str:
    """``yes`` / ``no`` at 5 %, or why there is no test."""
    if refusal:
        return "no test (too few speakers)"
    return DASH if not np.isfinite(p) else ("yes" if p < 0.05 else "no")


def join_list(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def n_of(rows: pd.DataFrame) -> str:
    """``n = 40 (xa: 20, xb: 20)``: the samples of group All per source of one series."""
    allr = rows[rows["group"] == "All"]
    per = allr.groupby("source", sort=True)["n"].max()
    if len(per) == 1:
        return f"n = {int(per.iloc[0])} samples"
    return f"n = {int(per.sum())} samples (" + ", ".join(f"{k}: {int(v)}" for k, v in per.items()) + ")"


def units_of(rows: pd.DataFrame) -> str:
    """The CI units of the All rows of one series, e.g. ``speakers (6)``."""
    allr = rows[rows["group"] == "All"]
    units = sorted({unit(r) for r in allr.itertuples()})
    return ", ".join(units) if units else "?"


def series_short(series: str) -> str:
    """A series label for figure labels: ``torch, full``, ``art, subset 10`` (default seed left out)."""
    s = series.replace(" backend", "").replace("full test set", "full").replace("seeded subset of ", "subset ")
    return s.replace(f", seed {_DEFAULT_ATTACK_SEED}", "")


def attack_title(name: str) -> str:
    """The attack's title from the registry (the worst case has its own)."""
    if name == "worst_case":
        return "Worst case over the Linf attacks (AutoAttack-style)"
    return ATTACKS[name].title if name in ATTACKS else name


def attack_kind(name: str) -> str:
    """``white-box, Linf``, ``black-box, L2; not in the study`` ..."""
    if name in ATTACKS:
        s = ATTACKS[name]
        on = "" if s.input == "features" else f", on the {s.input} (measured on the written 16-bit files)"
        return f"{s.kind}, {s.norm}{on}" + ("" if s.in_study else "; not in the study")
    return "per sample: robust only if every Linf attack at that eps failed"


def khz(sample_rate: int) -> str:
    """``16 kHz``, ``22.05 kHz``."""
    return f"{sample_rate / 1000:g} kHz"
