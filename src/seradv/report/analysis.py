"""Numbers of the report: per-cell accuracies with CIs, gender gaps and corpus gaps with tests.

Every accuracy shown comes from the results table (``attacks/cells/*.json``, the rows of
``results.csv``); the intervals and tests come from the per-sample results of the same cell
(``cells/<id>.samples.csv``), restricted to the same corpus, language and gender. Rows of
different series (backend, attacked samples, seed, early stop) are never pooled.
"""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pandas as pd

from seradv.evaluation import GROUPS
from seradv.report import stats
from seradv.report.data import RunData, attack_order

log = logging.getLogger(__name__)

__all__ = ["clean_stats", "clean_gender_gaps", "clean_corpus_gaps", "attack_stats", "gender_gaps", "corpus_gaps",
           "strength_key", "strongest", "ordered_settings", "group_samples"]

_PREFERRED = ("eps", "th", "theta", "max_iter", "binary_search_steps", "initial_const")


def group_samples(samples: pd.DataFrame, corpus: str, language: str, group: str) -> pd.DataFrame:
    """Rows of ``samples`` of one corpus, language and group (All / Male / Female)."""
    part = samples[(samples["corpus"].astype(str) == str(corpus)) & (samples["language"].astype(str) == str(language))]
    g = GROUPS[group]
    return part if g is None else part[part["gender"] == g]


# ----------------------------------------------------------------------------- clean


def clean_stats(run: RunData, *, n_boot: int = stats.N_BOOT, seed: int = 0) -> pd.DataFrame:
    """``metrics.csv`` with a bootstrap CI of each accuracy (from ``predictions.csv``)."""
    m = run.metrics.copy()
    lo, hi = [], []
    for r in m.itertuples():
        if run.predictions is None:
            ci = stats.proportion_ci(int(round(r.accuracy * r.n)), int(r.n), n_boot=n_boot, seed=seed)
        else:
            part = group_samples(run.predictions, r.corpus, r.language, r.group)
            ci = stats.bootstrap_ci(part["correct"].astype(bool).to_numpy(), n_boot=n_boot, seed=seed)
        lo.append(ci.lo)
        hi.append(ci.hi)
    return m.assign(acc_lo=lo, acc_hi=hi)


def clean_gender_gaps(run: RunData, *, n_boot: int = stats.N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Male minus female clean accuracy per source, bootstrap CI, Fisher's exact test."""
    rows = []
    if run.predictions is None:
        return pd.DataFrame(rows)
    p = run.predictions
    for (corpus, language, source), part in p.groupby(["corpus", "language", "source"], sort=True):
        m = part.loc[part["gender"] == "m", "correct"].astype(bool).to_numpy()
        f = part.loc[part["gender"] == "f", "correct"].astype(bool).to_numpy()
        if not len(m) or not len(f):
            continue
        gap = stats.gap_ci(m, f, n_boot=n_boot, seed=seed)
        rows.append({"source": source, "n_male": len(m), "n_female": len(f), "acc_male": m.mean(),
                     "acc_female": f.mean(), "gap": gap.value, "gap_lo": gap.lo, "gap_hi": gap.hi,
                     "p_fisher": stats.fisher_exact_gap(m, f)})
    return pd.DataFrame(rows)


def clean_corpus_gaps(runs: list[RunData], *, n_boot: int = stats.N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Pairwise clean-accuracy differences between the sources (corpora / languages) of all runs.

    Independent samples: bootstrap CI per source, Fisher's exact test, Holm over the pairs.
    """
    groups = []
    for run in runs:
        if run.predictions is None:
            continue
        for source, part in run.predictions.groupby("source", sort=True):
            groups.append((run.name, source, part["correct"].astype(bool).to_numpy()))
    rows = []
    for (ra, sa, a), (rb, sb, b) in itertools.combinations(groups, 2):
        gap = stats.gap_ci(a, b, n_boot=n_boot, seed=seed)
        rows.append({"source_a": sa, "source_b": sb, "n_a": len(a), "n_b": len(b), "acc_a": float(a.mean()),
                     "acc_b": float(b.mean()), "gap": gap.value, "gap_lo": gap.lo, "gap_hi": gap.hi,
                     "p_fisher": stats.fisher_exact_gap(a, b), "same_model": ra == rb})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["p_holm"] = stats.holm(out["p_fisher"].to_numpy())
    return out


# ----------------------------------------------------------------------------- settings


def _params(pj: str) -> dict:
    return json.loads(pj) if isinstance(pj, str) and pj else {}


def strength_key(params_jsons) -> str | None:
    """The numeric parameter that varies over the settings of one attack series, if any."""
    dicts = [_params(p) for p in dict.fromkeys(params_jsons)]
    if len(dicts) < 2:
        return None
    keys = sorted(set().union(*dicts))
    varying = [k for k in keys
               if len({json.dumps(d.get(k), sort_keys=True) for d in dicts}) > 1
               and all(isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool) for d in dicts)]
    if not varying:
        return None
    for k in _PREFERRED:
        if k in varying:
            return k
    return varying[0]


def ordered_settings(rows: pd.DataFrame) -> list[str]:
    """``params_json`` values of ``rows`` ordered by strength (or by label)."""
    pjs = list(dict.fromkeys(rows["params_json"]))
    key = strength_key(pjs)
    labels = dict(zip(rows["params_json"], rows["params"]))
    if key is None:
        return sorted(pjs, key=lambda p: str(labels[p]))
    return sorted(pjs, key=lambda p: (_params(p)[key], str(labels[p])))


def strongest(rows: pd.DataFrame) -> str:
    """``params_json`` of the setting with the lowest accuracy under attack (group All),
    averaged over the sources of ``rows`` (one attack series); ties go to the later setting."""
    allr = rows[rows["group"] == "All"]
    mean = allr.groupby("params_json", sort=False)["adv_accuracy"].mean()
    order = ordered_settings(allr)
    return min(reversed(order), key=lambda p: mean[p])


# ----------------------------------------------------------------------------- attacks


def attack_stats(runs: list[RunData], *, n_boot: int = stats.N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per results row (run x cell x source x group) with CIs and McNemar's test.

    Adds ``clean_lo/hi``, ``adv_lo/hi`` (bootstrap CIs of the accuracies), ``drop`` with
    ``drop_lo/hi`` (paired bootstrap of clean minus attacked correctness) and ``p_mcnemar``;
    ``check`` is ``"ok"`` when the per-sample file reproduces the table's accuracy.
    """
    frames = []
    for run in runs:
        res = run.results
        if res.empty:
            continue
        add = {k: [] for k in ("clean_lo", "clean_hi", "adv_lo", "adv_hi", "drop", "drop_lo", "drop_hi",
                               "p_mcnemar", "check")}
        for r in res.itertuples():
            samples = (run.worst_case_samples(res.loc[r.Index]) if r.attack == "worst_case"
                       else run.samples(r.cell_id))
            part = None if samples is None else group_samples(samples, r.corpus, r.language, r.group)
            if part is None or len(part) != r.n:
                k_c, k_a = int(round(r.clean_accuracy * r.n)), int(round(r.adv_accuracy * r.n))
                c = stats.proportion_ci(k_c, int(r.n), n_boot=n_boot, seed=seed)
                a = stats.proportion_ci(k_a, int(r.n), n_boot=n_boot, seed=seed)
                vals = [c.lo, c.hi, a.lo, a.hi, r.clean_accuracy - r.adv_accuracy, np.nan, np.nan, np.nan,
                        "no per-sample file: CIs from counts, no paired statistics"]
            else:
                yc = (part["pred_clean"] == part["label"]).to_numpy()
                ya = (part["pred_adv"] == part["label"]).to_numpy()
                c = stats.bootstrap_ci(yc, n_boot=n_boot, seed=seed)
                a = stats.bootstrap_ci(ya, n_boot=n_boot, seed=seed)
                d = stats.paired_diff_ci(yc, ya, n_boot=n_boot, seed=seed)
                ok = abs(yc.mean() - r.clean_accuracy) < 1e-9 and abs(ya.mean() - r.adv_accuracy) < 1e-9
                vals = [c.lo, c.hi, a.lo, a.hi, d.value, d.lo, d.hi, stats.mcnemar_exact(yc, ya),
                        "ok" if ok else "per-sample file disagrees with the results table"]
                if not ok:
                    log.warning("%s %s: samples.csv disagrees with the results table", run.name, r.cell_id)
            for k, v in zip(add, vals):
                add[k].append(v)
        frames.append(res.assign(**add))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    order = {a: i for i, a in enumerate(attack_order(out["attack"]))}
    return out.assign(_o=out["attack"].map(order)).sort_values(["_o", "series", "run", "source"], kind="stable") \
        .drop(columns="_o").reset_index(drop=True)


def _correct(run: RunData, row: pd.Series, gender: str | None) -> tuple[np.ndarray, np.ndarray] | None:
    samples = run.worst_case_samples(row) if row["attack"] == "worst_case" else run.samples(row["cell_id"])
    if samples is None:
        return None
    group = {None: "All", "m": "Male", "f": "Female"}[gender]
    part = group_samples(samples, row["corpus"], row["language"], group)
    return ((part["pred_clean"] == part["label"]).to_numpy(), (part["pred_adv"] == part["label"]).to_numpy())


def _with_holm(rows: list[dict]) -> pd.DataFrame:
    """The gap rows as a table with ``p_holm``: Fisher's p-values Holm-adjusted within each
    (attack, series)."""
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = np.nan
    for _, idx in out.groupby(["attack", "series"]).groups.items():
        out.loc[idx, "p_holm"] = stats.holm(out.loc[idx, "p_fisher"].to_numpy())
    return out


def gender_gaps(runs: list[RunData], table: pd.DataFrame, *, n_boot: int = stats.N_BOOT,
                seed: int = 0, n_perm: int = 5000) -> pd.DataFrame:
    """Male minus female accuracy under attack per cell and source.

    Independent groups: bootstrap CI resampling each gender on its own, Fisher's exact test;
    the gap in the drop (clean minus attacked) with a permutation test. ``p_holm`` adjusts
    Fisher's p-values over every (setting, source) of one attack series.
    """
    by_run = {r.name: r for r in runs}
    rows = []
    if table.empty:
        return pd.DataFrame()
    allr = table[table["group"] == "All"]
    for r in allr.itertuples():
        run = by_run[r.run]
        row = table.loc[r.Index]
        m, f = _correct(run, row, "m"), _correct(run, row, "f")
        if m is None or f is None or not len(m[1]) or not len(f[1]):
            continue
        gap = stats.gap_ci(m[1], f[1], n_boot=n_boot, seed=seed)
        dm, df = m[0].astype(float) - m[1], f[0].astype(float) - f[1]
        dgap = stats.gap_ci(dm, df, n_boot=n_boot, seed=seed)
        rows.append({"run": r.run, "attack": r.attack, "series": r.series, "params": r.params,
                     "params_json": r.params_json, "cell_id": r.cell_id, "source": r.source,
                     "n_male": len(m[1]), "n_female": len(f[1]),
                     "acc_male": float(m[1].mean()), "acc_female": float(f[1].mean()),
                     "gap": gap.value, "gap_lo": gap.lo, "gap_hi": gap.hi,
                     "p_fisher": stats.fisher_exact_gap(m[1], f[1]),
                     "drop_gap": dgap.value, "drop_gap_lo": dgap.lo, "drop_gap_hi": dgap.hi,
                     "p_perm": stats.permutation_gap(dm, df, n_perm=n_perm, seed=seed)})
    return _with_holm(rows)


def corpus_gaps(runs: list[RunData], table: pd.DataFrame, *, n_boot: int = stats.N_BOOT,
                seed: int = 0) -> pd.DataFrame:
    """Pairwise differences between sources (corpora / languages) at the same setting.

    Only rows of the same attack, series and parameters are compared (group All). Sources are
    independent samples: bootstrap CI per source, Fisher's exact test, Holm over the pairs and
    settings of one attack series. ``same_model`` says whether one model served both.
    """
    by_run = {r.name: r for r in runs}
    rows = []
    if table.empty:
        return pd.DataFrame()
    allr = table[table["group"] == "All"]
    for (attack, series, pj), grp in allr.groupby(["attack", "series", "params_json"], sort=False):
        recs = list(grp.itertuples())
        for a, b in itertools.combinations(sorted(recs, key=lambda x: x.source), 2):
            ca = _correct(by_run[a.run], table.loc[a.Index], None)
            cb = _correct(by_run[b.run], table.loc[b.Index], None)
            if ca is None or cb is None or not len(ca[1]) or not len(cb[1]):
                continue
            gap = stats.gap_ci(ca[1], cb[1], n_boot=n_boot, seed=seed)
            rows.append({"attack": attack, "series": series, "params": a.params, "params_json": pj,
                         "source_a": a.source, "source_b": b.source, "n_a": len(ca[1]), "n_b": len(cb[1]),
                         "acc_a": float(ca[1].mean()), "acc_b": float(cb[1].mean()),
                         "gap": gap.value, "gap_lo": gap.lo, "gap_hi": gap.hi,
                         "p_fisher": stats.fisher_exact_gap(ca[1], cb[1]),
                         "same_model": a.run == b.run})
    return _with_holm(rows)

