"""Numbers of the report: per-cell robust accuracy with CIs, gender gaps and corpus gaps with tests.

The headline of every attack row is the **robust accuracy** (:func:`seradv.grid.results.robust_flags`:
correct before the attack, attacked, and never fooled); the study's "accuracy on adversarial
examples" (``adv_accuracy``) stays as a labelled secondary number. Every accuracy shown comes
from the results table (``attacks/cells/*.json``); results of older runs without
``robust_accuracy`` get it from the per-sample files (``cells/<id>.samples.csv``), or are
marked unavailable when there is none. Intervals and tests come from the per-sample results
of the same cell, restricted to the same corpus, language and gender, at the right unit
(:mod:`seradv.stats`): CIs resample speakers (``speaker`` split, at least
``MIN_CLUSTERS`` of them) or utterances; gender and corpus comparisons resample and permute
speakers, and are refused with fewer than ``MIN_GROUP_SPEAKERS`` speakers per group. Rows of
different series (backend, attacked samples, seed, early stop) are never pooled.
"""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pandas as pd

from seradv.evaluation import GROUPS
from seradv import stats
from seradv.report.data import RunData, attack_order
from seradv.grid.results import robust_flags
from seradv.rundir import FOLDS_CSV, HISTORY, METRICS_CSV, MODEL_META, fold_run_dirs, load_run_config

log = logging.getLogger(__name__)

__all__ = ["clean_stats", "clean_gender_gaps", "clean_corpus_gaps", "attack_stats", "gender_gaps", "corpus_gaps",
           "strength_key", "strongest", "strongest_by_run", "strongest_rows", "ordered_settings", "series_rows", "group_samples", "ci_units",
           "choose_unit", "speaker_gap", "summary_series", "summary_grid", "gender_corpus_gaps", "perturbation_profiles",
           "training_details", "fold_details"]

_PREFERRED = ("eps", "th", "theta", "max_iter", "binary_search_steps", "initial_const")


def group_samples(samples: pd.DataFrame, corpus: str, language: str, group: str) -> pd.DataFrame:
    """Rows of ``samples`` of one corpus, language and group (All / Male / Female)."""
    part = samples[(samples["corpus"].astype(str) == str(corpus)) & (samples["language"].astype(str) == str(language))]
    g = GROUPS[group]
    return part if g is None else part[part["gender"] == g]


# ----------------------------------------------------------------------------- units


def ci_units(split: str) -> tuple[str, ...]:
    """The units an accuracy's CI may resample, first choice first.

    ``speaker`` and ``speaker_cv`` splits: the test speakers are new to the model, so the
    interval is over new speakers; ``paper`` split: the speakers (and copies of every
    utterance) are shared with training, so the interval is over new utterances of these speakers.
    """
    held_out = split in ("speaker", "speaker_cv")
    return ("speaker", "utterance", "segment") if held_out else ("utterance", "segment")


def choose_unit(part: pd.DataFrame, split: str) -> tuple[str, np.ndarray]:
    """``(unit, cluster ids)`` for the CIs of ``part``: speakers when there are at least
    ``stats.MIN_CLUSTERS`` (speaker split), else utterances (at least 2), else segments."""
    for unit in ci_units(split):
        if unit == "segment":
            break
        if unit in part:
            ids = part[unit].astype(str).to_numpy()
            need = stats.MIN_CLUSTERS if unit == "speaker" else 2
            if len(set(ids)) >= need:
                return unit, ids
    return "segment", np.arange(len(part)).astype(str)


def _speakers(part: pd.DataFrame) -> np.ndarray:
    if "speaker" in part:
        return part["speaker"].astype(str).to_numpy()
    return np.full(len(part), "?")  # no speaker column: one unknown speaker, no inference


def speaker_gap(a, spk_a, b, spk_b, *, labels: tuple[str, str], n_boot: int = stats.N_BOOT, seed: int = 0,
                n_perm: int = 5000) -> dict:
    """``mean(a) - mean(b)`` of two groups of speakers, resampling and permuting speakers.

    Returns ``gap``, ``gap_lo``, ``gap_hi``, ``p_perm`` (``nan`` when refused), the speaker
    counts and ``refusal`` (``""``, or why there is no inference:
    :func:`seradv.stats.comparison_refusal`).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = len(set(np.asarray(spk_a))), len(set(np.asarray(spk_b)))
    out = {"spk_a": na, "spk_b": nb, "gap": float(a.mean() - b.mean()) if a.size and b.size else float("nan"),
           "gap_lo": float("nan"), "gap_hi": float("nan"), "p_perm": float("nan"), "refusal": ""}
    if not a.size or not b.size:
        out["refusal"] = "a group has no sample"
        return out
    why = stats.comparison_refusal(na, nb, labels)
    if why is not None:
        out["refusal"] = why
        return out
    # speaker ids of the two groups kept apart (two corpora may reuse an id)
    ga = np.char.add("a:", np.asarray(spk_a).astype(str))
    gb = np.char.add("b:", np.asarray(spk_b).astype(str))
    ci = stats.cluster_gap_ci(a, ga, b, gb, n_boot=n_boot, seed=seed, unit="speaker")
    out.update(gap_lo=ci.lo, gap_hi=ci.hi, p_perm=stats.cluster_permutation_test(a, ga, b, gb, n_perm=n_perm, seed=seed))
    return out


# ----------------------------------------------------------------------------- clean


def clean_stats(run: RunData, *, n_boot: int = stats.N_BOOT, seed: int = 0) -> pd.DataFrame:
    """``metrics.csv`` with a CI of each accuracy (from ``predictions.csv``, by speaker or utterance)."""
    m = run.metrics.copy()
    lo, hi, unit, nc = [], [], [], []
    for r in m.itertuples():
        if run.predictions is None:
            ci = stats.proportion_ci(int(round(r.accuracy * r.n)), int(r.n))
        else:
            part = group_samples(run.predictions, r.corpus, r.language, r.group)
            u, ids = choose_unit(part, run.info.split)
            ci = stats.cluster_ci(part["correct"].astype(bool).to_numpy(), ids, n_boot=n_boot, seed=seed, unit=u)
        lo.append(ci.lo)
        hi.append(ci.hi)
        unit.append(ci.unit or "counts")
        nc.append(ci.n_clusters)
    return m.assign(acc_lo=lo, acc_hi=hi, ci_unit=unit, n_clusters=nc)


def clean_gender_gaps(run: RunData, *, n_boot: int = stats.N_BOOT, seed: int = 0,
                      n_perm: int = 5000) -> pd.DataFrame:
    """Male minus female clean accuracy per source: speakers resampled and permuted."""
    rows = []
    if run.predictions is None:
        return pd.DataFrame(rows)
    p = run.predictions
    for (corpus, language, source), part in p.groupby(["corpus", "language", "source"], sort=True):
        pm, pf = part[part["gender"] == "m"], part[part["gender"] == "f"]
        if pm.empty or pf.empty:
            continue
        m, f = pm["correct"].astype(bool).to_numpy(), pf["correct"].astype(bool).to_numpy()
        g = speaker_gap(m, _speakers(pm), f, _speakers(pf), labels=("male", "female"), n_boot=n_boot, seed=seed,
                        n_perm=n_perm)
        rows.append({"source": source, "n_male": len(m), "n_female": len(f), "spk_male": g["spk_a"],
                     "spk_female": g["spk_b"], "acc_male": m.mean(), "acc_female": f.mean(), "gap": g["gap"],
                     "gap_lo": g["gap_lo"], "gap_hi": g["gap_hi"], "p_perm": g["p_perm"], "refusal": g["refusal"]})
    return pd.DataFrame(rows)


def clean_corpus_gaps(runs: list[RunData], *, n_boot: int = stats.N_BOOT, seed: int = 0,
                      n_perm: int = 5000) -> pd.DataFrame:
    """Pairwise clean-accuracy differences between the sources (corpora / languages) of all runs.

    Independent groups of speakers: speakers resampled and permuted, Holm over the pairs.
    """
    groups = []
    for run in runs:
        if run.predictions is None:
            continue
        for source, part in run.predictions.groupby("source", sort=True):
            groups.append((run.name, source, part["correct"].astype(bool).to_numpy(), _speakers(part)))
    rows = []
    for (ra, sa, a, ga), (rb, sb, b, gb) in itertools.combinations(groups, 2):
        g = speaker_gap(a, ga, b, gb, labels=(sa, sb), n_boot=n_boot, seed=seed, n_perm=n_perm)
        rows.append({"source_a": sa, "source_b": sb, "n_a": len(a), "n_b": len(b), "spk_a": g["spk_a"],
                     "spk_b": g["spk_b"], "acc_a": float(a.mean()), "acc_b": float(b.mean()), "gap": g["gap"],
                     "gap_lo": g["gap_lo"], "gap_hi": g["gap_hi"], "p_perm": g["p_perm"], "refusal": g["refusal"],
                     "same_model": ra == rb})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["p_holm"] = stats.holm(out["p_perm"].to_numpy())
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


def series_rows(table: pd.DataFrame):
    """``(attack, series, rows)`` of an attack table in report order (full test set first)."""
    for attack in attack_order(table["attack"].unique()):
        a = table[table["attack"] == attack]
        for series in sorted(a["series"].unique(), key=lambda s: ("full test set" not in s, s)):
            yield attack, series, a[a["series"] == series]


def strongest(rows: pd.DataFrame) -> str | None:
    """``params_json`` of the setting with the lowest **robust accuracy** (group All), averaged
    over the sources of ``rows``; ties go to the later setting. ``None`` when no setting has a
    robust accuracy (old results without per-sample files): the study's accuracy on adversarial
    examples is never used in its place.

    The report's one rule is :func:`strongest_by_run`: this function applied to the rows of one
    run and one attack series, so that a run's strongest setting is the same in its own report
    and in a cross-language report of several runs."""
    allr = rows[rows["group"] == "All"]
    mean = allr.groupby("params_json", sort=False)["robust_accuracy"].mean()
    order = [p for p in ordered_settings(allr) if np.isfinite(mean.get(p, np.nan))]
    if not order:
        return None
    return min(reversed(order), key=lambda p: mean[p])


def strongest_by_run(rows: pd.DataFrame) -> dict[str, str]:
    """``{run: params_json}``: the strongest setting (:func:`strongest`) of each run of one
    attack series, chosen from that run's rows only (the same in every report the run is in);
    runs without a robust accuracy are left out."""
    out = {}
    for run, part in rows.groupby("run", sort=True):
        pj = strongest(part)
        if pj is not None:
            out[str(run)] = pj
    return out


def strongest_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The group-All rows of one attack series at each run's strongest setting."""
    best = strongest_by_run(rows)
    allr = rows[rows["group"] == "All"]
    keep = [best.get(str(r)) == pj for r, pj in zip(allr["run"], allr["params_json"])]
    return allr[keep]


# ----------------------------------------------------------------------------- attacks

_ATTACK_COLS = ("robust_lo", "robust_hi", "robust_from", "clean_lo", "clean_hi", "adv_lo", "adv_hi", "drop",
                "drop_lo", "drop_hi", "p_sign", "ci_unit", "n_clusters", "n_speakers", "ci_method", "check")


def _row_samples(run: RunData, row) -> pd.DataFrame | None:
    attack = row["attack"] if isinstance(row, pd.Series) else row.attack
    if attack == "worst_case":
        return run.worst_case_samples(row if isinstance(row, pd.Series) else run.results.loc[row.Index])
    return run.samples(row["cell_id"] if isinstance(row, pd.Series) else row.cell_id)


def _fin(v) -> bool:
    try:
        return bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


def attack_stats(runs: list[RunData], *, n_boot: int = stats.N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per results row (run x cell x source x group) with CIs and a paired test.

    Fills ``robust_accuracy``, ``n_clean_correct``, ``n_not_attacked`` and ``success_rate``
    from the per-sample file where the results table lacks them (``robust_from``: ``results``,
    ``per-sample file`` or ``unavailable``). Adds ``robust_lo/hi``, ``clean_lo/hi``,
    ``adv_lo/hi`` (CIs over ``ci_unit`` clusters, :func:`choose_unit`), ``drop`` = clean minus
    robust accuracy (the share of samples correct before and broken by the attack) with
    ``drop_lo/hi``, and ``p_sign`` (exact sign test over the same clusters, paired); ``check``
    is ``"ok"`` when the per-sample file reproduces the table's accuracies.
    """
    frames = []
    for run in runs:
        res = run.results
        if res.empty:
            continue
        res = res.copy()
        split = run.info.split
        add = {k: [] for k in _ATTACK_COLS}
        for idx in res.index:
            r = res.loc[idx]
            samples = _row_samples(run, run.results.loc[idx])
            part = None if samples is None else group_samples(samples, r["corpus"], r["language"], r["group"])
            n = int(r["n"])
            have_robust = _fin(r.get("robust_accuracy"))
            if part is None or len(part) != n:
                c = stats.proportion_ci(int(round(r["clean_accuracy"] * n)), n)
                a = stats.proportion_ci(int(round(r["adv_accuracy"] * n)), n)
                if have_robust:
                    rb = stats.proportion_ci(int(round(r["robust_accuracy"] * n)), n)
                    drop = float(r["clean_accuracy"] - r["robust_accuracy"])
                else:
                    rb = stats.Estimate(float("nan"), float("nan"), float("nan"))
                    drop = float("nan")
                vals = {"robust_lo": rb.lo, "robust_hi": rb.hi,
                        "robust_from": "results" if have_robust else "unavailable",
                        "clean_lo": c.lo, "clean_hi": c.hi, "adv_lo": a.lo, "adv_hi": a.hi, "drop": drop,
                        "drop_lo": np.nan, "drop_hi": np.nan, "p_sign": np.nan, "ci_unit": "counts",
                        "n_clusters": n, "n_speakers": np.nan, "ci_method": c.method,
                        "check": ("no per-sample file: intervals from counts (Clopper-Pearson, samples taken as "
                                  "independent), no paired statistics"
                                  + ("" if have_robust else "; robust accuracy unavailable"))}
            else:
                label = part["label"].to_numpy()
                yc = part["pred_clean"].to_numpy() == label
                ya = part["pred_adv"].to_numpy() == label
                yr = robust_flags(part)
                attacked = part["attacked"].astype(bool).to_numpy() if "attacked" in part else np.ones(len(part), bool)
                unit, ids = choose_unit(part, split)
                kw = {"n_boot": n_boot, "seed": seed, "unit": unit}
                c, a, rb = stats.cluster_ci(yc, ids, **kw), stats.cluster_ci(ya, ids, **kw), stats.cluster_ci(yr, ids, **kw)
                d = stats.cluster_ci(yc & ~yr, ids, **kw)
                ok = abs(yc.mean() - r["clean_accuracy"]) < 1e-9 and abs(ya.mean() - r["adv_accuracy"]) < 1e-9
                if have_robust:
                    ok = ok and abs(yr.mean() - r["robust_accuracy"]) < 1e-9
                else:
                    res.loc[idx, "robust_accuracy"] = float(yr.mean())
                for col, v in (("n_clean_correct", int(yc.sum())), ("n_not_attacked", int((~attacked).sum())),
                               ("success_rate", float(np.mean(~yr[yc & attacked])) if (yc & attacked).any()
                                else float("nan"))):
                    if not _fin(r.get(col)):
                        res.loc[idx, col] = v
                vals = {"robust_lo": rb.lo, "robust_hi": rb.hi,
                        "robust_from": "results" if have_robust else "per-sample file",
                        "clean_lo": c.lo, "clean_hi": c.hi, "adv_lo": a.lo, "adv_hi": a.hi, "drop": d.value,
                        "drop_lo": d.lo, "drop_hi": d.hi, "p_sign": stats.cluster_sign_test(yc, yr, ids),
                        "ci_unit": unit, "n_clusters": rb.n_clusters, "n_speakers": len(set(_speakers(part))),
                        "ci_method": rb.method,
                        "check": "ok" if ok else "per-sample file disagrees with the results table"}
                if not ok:
                    log.warning("%s %s: samples.csv disagrees with the results table", run.name, r["cell_id"])
            for k in add:
                add[k].append(vals[k])
        frames.append(res.assign(**add))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    order = {a: i for i, a in enumerate(attack_order(out["attack"]))}
    return out.assign(_o=out["attack"].map(order)).sort_values(["_o", "series", "run", "source"], kind="stable") \
        .drop(columns="_o").reset_index(drop=True)


def _outcomes(run: RunData, row: pd.Series, gender: str | None) -> pd.DataFrame | None:
    """Per sample of one results row's cell and source (and gender): ``speaker``, ``clean``
    (correct before), ``adv`` (correct at the end), ``robust``, ``attacked``."""
    samples = _row_samples(run, row)
    if samples is None:
        return None
    group = {None: "All", "m": "Male", "f": "Female"}[gender]
    part = group_samples(samples, row["corpus"], row["language"], group)
    label = part["label"].to_numpy()
    return pd.DataFrame({
        "speaker": _speakers(part),
        "clean": part["pred_clean"].to_numpy() == label,
        "adv": part["pred_adv"].to_numpy() == label,
        "robust": robust_flags(part),
        "attacked": part["attacked"].astype(bool).to_numpy() if "attacked" in part else np.ones(len(part), bool),
    })


def _with_holm(rows: list[dict]) -> pd.DataFrame:
    """The gap rows as a table with ``p_holm``: the speaker-permutation p-values of the robust
    accuracy Holm-adjusted within each (attack, series); refused comparisons stay ``nan``."""
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = np.nan
    for _, idx in out.groupby(["attack", "series"]).groups.items():
        out.loc[idx, "p_holm"] = stats.holm(out.loc[idx, "p_perm"].to_numpy())
    return out


def _gap_pair(x: pd.DataFrame, y: pd.DataFrame, labels: tuple[str, str], n_boot: int, seed: int,
              n_perm: int) -> dict:
    """Robust-accuracy gap and success-rate gap (among clean-correct, attacked samples) of two
    groups of speakers, with the study-style accuracies beside them (descriptive)."""
    g = speaker_gap(x["robust"], x["speaker"], y["robust"], y["speaker"], labels=labels, n_boot=n_boot,
                    seed=seed, n_perm=n_perm)
    xs, ys = x[x["clean"] & x["attacked"]], y[y["clean"] & y["attacked"]]
    if len(xs) and len(ys):
        s = speaker_gap(~xs["robust"], xs["speaker"], ~ys["robust"], ys["speaker"], labels=labels, n_boot=n_boot,
                        seed=seed, n_perm=n_perm)
    else:
        s = {"gap": np.nan, "gap_lo": np.nan, "gap_hi": np.nan, "p_perm": np.nan}
    return {"spk_a": g["spk_a"], "spk_b": g["spk_b"],
            "robust_a": float(x["robust"].mean()), "robust_b": float(y["robust"].mean()),
            "gap": g["gap"], "gap_lo": g["gap_lo"], "gap_hi": g["gap_hi"], "p_perm": g["p_perm"],
            "refusal": g["refusal"],
            "success_a": float((~xs["robust"]).mean()) if len(xs) else np.nan,
            "success_b": float((~ys["robust"]).mean()) if len(ys) else np.nan,
            "sr_gap": s["gap"], "sr_gap_lo": s["gap_lo"], "sr_gap_hi": s["gap_hi"], "p_perm_sr": s["p_perm"],
            "adv_a": float(x["adv"].mean()), "adv_b": float(y["adv"].mean())}


def gender_gaps(runs: list[RunData], table: pd.DataFrame, *, n_boot: int = stats.N_BOOT,
                seed: int = 0, n_perm: int = 5000) -> pd.DataFrame:
    """Male minus female **robust accuracy** per cell and source, and the gap in the success
    rate among clean-correct attacked samples.

    A comparison of speakers: speakers resampled (CI) and permuted (p) between the genders,
    none with fewer than ``MIN_GROUP_SPEAKERS`` speakers per gender (``refusal`` says why).
    ``p_holm`` adjusts the robust-accuracy p-values over every (setting, source) of one
    attack series. ``adv_male``/``adv_female``: the study's accuracy (descriptive).
    """
    by_run = {r.name: r for r in runs}
    rows = []
    if table.empty:
        return pd.DataFrame()
    allr = table[table["group"] == "All"]
    for r in allr.itertuples():
        run = by_run[r.run]
        row = table.loc[r.Index]
        m, f = _outcomes(run, row, "m"), _outcomes(run, row, "f")
        if m is None or f is None or m.empty or f.empty:
            continue
        g = _gap_pair(m, f, ("male", "female"), n_boot, seed, n_perm)
        rows.append({"run": r.run, "attack": r.attack, "series": r.series, "params": r.params,
                     "params_json": r.params_json, "cell_id": r.cell_id, "source": r.source,
                     "n_male": len(m), "n_female": len(f),
                     **{k.replace("_a", "_male").replace("_b", "_female") if k.endswith(("_a", "_b")) else k: v
                        for k, v in g.items()}})
    return _with_holm(rows)


def corpus_gaps(runs: list[RunData], table: pd.DataFrame, *, n_boot: int = stats.N_BOOT,
                seed: int = 0, n_perm: int = 5000) -> pd.DataFrame:
    """Pairwise differences of **robust accuracy** between sources (corpora / languages) at the
    same setting (group All), and of the success rate among clean-correct attacked samples.

    The clusters are the speakers of each corpus (resampled, permuted), none with fewer than
    ``MIN_GROUP_SPEAKERS`` per corpus; Holm over the pairs and settings of one attack series.
    ``same_model`` says whether one model served both.
    """
    by_run = {r.name: r for r in runs}
    rows = []
    if table.empty:
        return pd.DataFrame()
    allr = table[table["group"] == "All"]
    for (attack, series, pj), grp in allr.groupby(["attack", "series", "params_json"], sort=False):
        recs = list(grp.itertuples())
        for a, b in itertools.combinations(sorted(recs, key=lambda x: x.source), 2):
            ca = _outcomes(by_run[a.run], table.loc[a.Index], None)
            cb = _outcomes(by_run[b.run], table.loc[b.Index], None)
            if ca is None or cb is None or ca.empty or cb.empty:
                continue
            g = _gap_pair(ca, cb, (a.source, b.source), n_boot, seed, n_perm)
            rows.append({"attack": attack, "series": series, "params": a.params, "params_json": pj,
                         "source_a": a.source, "source_b": b.source, "n_a": len(ca), "n_b": len(cb), **g,
                         "same_model": a.run == b.run})
    return _with_holm(rows)


# ----------------------------------------------------------------------------- summary


def summary_series(strongest_table: pd.DataFrame) -> pd.DataFrame:
    """One series per attack for the summary: the one that covers the most sources (corpora of
    all runs), then the one with the most attacked samples (group All, summed over the sources),
    ties to the first in report order. ``strongest_table``: the rows of ``stats/strongest.csv``
    (one per attack series, run and source)."""
    if strongest_table.empty:
        return strongest_table
    keep = []
    for attack, part in strongest_table.groupby("attack", sort=False):
        score = part.groupby("series", sort=False).agg(sources=("source", "nunique"), n=("n", "sum"))
        best = max(score.index, key=lambda s: (score.loc[s, "sources"], score.loc[s, "n"]))
        keep.append(part[part["series"] == best])
    out = pd.concat(keep, ignore_index=True)
    order = {a: i for i, a in enumerate(attack_order(out["attack"]))}
    return out.assign(_o=out["attack"].map(order)).sort_values(["_o", "run", "source"], kind="stable") \
        .drop(columns="_o").reset_index(drop=True)


def summary_grid(table: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Robust accuracy of every chosen (attack, run, source) cell (:func:`summary_series`) per
    group All / Male / Female: columns ``attack``, ``series``, ``run``, ``source``, ``group``,
    ``params``, ``n``, ``robust_accuracy``, ``robust_lo``, ``robust_hi``, ``clean_accuracy``,
    ``n_clean_correct``, ``success_rate``, ``n_speakers``."""
    cols = ["attack", "series", "run", "source", "group", "params", "cell_id", "n", "robust_accuracy", "robust_lo",
            "robust_hi", "clean_accuracy", "n_clean_correct", "success_rate", "n_speakers"]
    if chosen.empty or table.empty:
        return pd.DataFrame(columns=cols)
    key = chosen[["attack", "series", "run", "source", "cell_id"]]
    out = table.merge(key, on=["attack", "series", "run", "source", "cell_id"], how="inner")
    return out[[c for c in cols if c in out]].reset_index(drop=True)


def gender_corpus_gaps(runs: list[RunData], table: pd.DataFrame, chosen: pd.DataFrame, *,
                       n_boot: int = stats.N_BOOT, seed: int = 0, n_perm: int = 5000) -> pd.DataFrame:
    """Languages compared **within one gender** (male vs male, female vs female) at each run's
    strongest setting of every chosen attack series (:func:`summary_series`): the robust
    accuracy, and the success rate among clean-correct attacked samples (clean accuracies
    differ between the corpora). Speakers resampled and permuted (:func:`speaker_gap`), refused
    with fewer than ``MIN_GROUP_SPEAKERS`` speakers per group; Holm within each (attack, series)."""
    by_run = {r.name: r for r in runs}
    rows = []
    if chosen.empty or table.empty:
        return pd.DataFrame()
    for (attack, series), part in chosen.groupby(["attack", "series"], sort=False):
        recs = sorted(part.itertuples(), key=lambda x: x.source)
        for gender, gname in (("m", "Male"), ("f", "Female")):
            for a, b in itertools.combinations(recs, 2):
                ra = table[(table["run"] == a.run) & (table["cell_id"] == a.cell_id) & (table["source"] == a.source)
                           & (table["group"] == "All")]
                rb = table[(table["run"] == b.run) & (table["cell_id"] == b.cell_id) & (table["source"] == b.source)
                           & (table["group"] == "All")]
                if ra.empty or rb.empty:
                    continue
                x = _outcomes(by_run[a.run], ra.iloc[0], gender)
                y = _outcomes(by_run[b.run], rb.iloc[0], gender)
                if x is None or y is None or x.empty or y.empty:
                    continue
                g = _gap_pair(x, y, (f"{a.source} {gname.lower()}", f"{b.source} {gname.lower()}"), n_boot, seed,
                              n_perm)
                rows.append({"attack": attack, "series": series, "gender": gname, "source_a": a.source,
                             "source_b": b.source, "params_a": a.params, "params_b": b.params, "n_a": len(x),
                             "n_b": len(y), "clean_a": float(x["clean"].mean()), "clean_b": float(y["clean"].mean()),
                             **g, "same_model": a.run == b.run})
    return _with_holm(rows)


def perturbation_profiles(runs: list[RunData], chosen: pd.DataFrame) -> pd.DataFrame:
    """Mean ``|delta|`` per Mel band and per time frame of every chosen attack cell
    (:func:`summary_series`), per language and gender, from the saved perturbations
    (``attacks/adv/<cell>.npy``, ``[n, T, F]``, row ``i`` = row ``i`` of the cell's samples
    file). Only attacked samples count. Columns: ``attack``, ``series``, ``run``, ``source``,
    ``gender``, ``axis`` (``band`` or ``time``), ``index`` (band or frame), ``seconds``
    (frame start; ``nan`` for bands), ``mean_abs_delta``, ``n`` (samples). Cells without a
    saved perturbation (the worst case, a CV run) are left out."""
    by_run = {r.name: r for r in runs}
    frames = []
    for r in chosen.itertuples() if not chosen.empty else ():
        if r.attack == "worst_case":
            continue
        run = by_run[r.run]
        path = run.adv_path(r.cell_id)
        samples = run.samples(r.cell_id)
        if samples is None or not path.exists():
            continue
        delta = np.load(path, mmap_mode="r")
        if len(delta) != len(samples):
            log.warning("%s %s: %d perturbations for %d samples: left out", run.name, r.cell_id, len(delta),
                        len(samples))
            continue
        hop = _seconds_per_frame(run)
        part = group_samples(samples, r.corpus, r.language, "All")
        for gender in ("m", "f"):
            sel = part[part["gender"] == gender]
            if "attacked" in sel:
                sel = sel[sel["attacked"].astype(bool)]
            if sel.empty:
                continue
            d = np.abs(np.asarray(delta[sel.index.to_numpy()], np.float64))
            band, frame = d.mean(axis=(0, 1)), d.mean(axis=(0, 2))
            base = {"attack": r.attack, "series": r.series, "run": r.run, "source": r.source, "params": r.params,
                    "gender": gender, "n": len(sel)}
            frames.append(pd.DataFrame({**base, "axis": "band", "index": np.arange(len(band)), "seconds": np.nan,
                                        "mean_abs_delta": band}))
            frames.append(pd.DataFrame({**base, "axis": "time", "index": np.arange(len(frame)),
                                        "seconds": np.arange(len(frame)) * hop, "mean_abs_delta": frame}))
    if not frames:
        return pd.DataFrame(columns=["attack", "series", "run", "source", "params", "gender", "n", "axis", "index",
                                     "seconds", "mean_abs_delta"])
    return pd.concat(frames, ignore_index=True)


def _seconds_per_frame(run: RunData) -> float:
    try:
        cfg = load_run_config(run.run_dir)
        return cfg.features.hop_length / cfg.audio.sample_rate
    except Exception:  # noqa: BLE001 - an unreadable config: frames, not seconds
        return float("nan")


def defence_label(d: dict | None) -> str:
    """``model.json``'s ``defence`` record in words: ``"none"`` (also for models trained before
    defences existed), or e.g. ``"adversarial training: fgsm, eps 1.25, ratio 0.6"``."""
    if not d or d.get("kind", "none") == "none":
        return "none"
    if d.get("kind") == "adversarial_training":
        extra = f", {d.get('steps')} steps" if d.get("attack") == "pgd" else ""
        return f"adversarial training: {d.get('attack')}, eps {d.get('eps'):g}, ratio {d.get('ratio'):g}{extra}"
    return str(d.get("kind"))


def training_details(runs: list[RunData]) -> pd.DataFrame:
    """How each model was trained and which samples were attacked, one row per run.

    From ``model.json`` (epochs run, best epoch, early stop, train / validation sizes, time,
    hyperparameters), ``history.csv`` (the best validation loss), ``config.yaml`` (the epoch
    budget and patience) and the attack cells (attacked samples: full test set or seeded
    subsets with their limit and seed; samples not attacked)."""
    rows = []
    for r in runs:
        m = r.model_meta or {}
        hp = m.get("hyperparameters") or {}
        hist_dir = fold_run_dirs(r.run_dir)[0] if r.pooled is not None else r.run_dir
        hist = pd.read_csv(hist_dir / HISTORY) if (hist_dir / HISTORY).exists() else None
        try:
            cfg = load_run_config(r.run_dir)
            budget, patience = cfg.train.epochs, cfg.train.patience
        except Exception:  # noqa: BLE001 - the config of an older run: unknown
            budget, patience = None, None
        res = r.results[r.results["group"] == "All"] if not r.results.empty else r.results
        res = res[res["attack"] != "worst_case"] if not res.empty else res
        subsets = sorted(set(res["subset"])) if not res.empty else []
        n_att = (res.groupby("cell_id")["n"].sum() if not res.empty else pd.Series(dtype=float))
        not_att = (res.groupby("cell_id")["n_not_attacked"].sum() if not res.empty else pd.Series(dtype=float))
        best_val = (float(hist["val_loss"].min()) if hist is not None and "val_loss" in hist and len(hist)
                    else float("nan"))
        rows.append({
            "run": r.name, "model": m.get("model"), "parameters": m.get("parameters"),
            "epochs_budget": budget, "epochs_run": m.get("epochs_run"), "best_epoch": m.get("best_epoch"),
            "stopped_early": m.get("stopped_early"), "patience": patience, "best_val_loss": best_val,
            "n_train": m.get("n_train"), "n_val": m.get("n_val"), "train_seconds": m.get("train_seconds"),
            "batch_size": hp.get("batch_size"), "lr": hp.get("lr"), "dropout": hp.get("dropout"),
            "folds": m.get("folds"), "split": r.info.split, "leaky": bool(r.info.leaky),
            "defence": defence_label(m.get("defence")),
            "attacked_subsets": "; ".join(subsets), "attack_cells": int(len(n_att)),
            "attacked_per_cell": f"{int(n_att.min())}–{int(n_att.max())}" if len(n_att) else "",
            "not_attacked": int(np.nansum(not_att.to_numpy(float))) if len(not_att) else 0,
        })
    return pd.DataFrame(rows)


def fold_details(run: RunData) -> pd.DataFrame:
    """One row per fold of a speaker-fold CV run (empty for other runs): its test speakers
    (``folds.csv``), training facts (``model.json``, ``history.csv``) and clean test accuracy /
    UAR (the fold's ``metrics.csv``, all its test segments)."""
    if run.pooled is None or not (run.run_dir / FOLDS_CSV).is_file():
        return pd.DataFrame()
    plan = pd.read_csv(run.run_dir / FOLDS_CSV, dtype={"speaker": str})
    rows = []
    for k, d in enumerate(fold_run_dirs(run.run_dir), start=1):
        spk = plan[plan["fold"] == k].sort_values(["gender", "speaker"])
        m = json.loads((d / MODEL_META).read_text()) if (d / MODEL_META).is_file() else {}
        hist = pd.read_csv(d / HISTORY) if (d / HISTORY).is_file() else None
        met = pd.read_csv(d / METRICS_CSV) if (d / METRICS_CSV).is_file() else None
        clean = met[met["group"] == "All"] if met is not None else None
        one = clean is not None and len(clean) == 1
        rows.append({
            "fold": k,
            "test_speakers": " ".join(f"{s} ({g})" for s, g in zip(spk["speaker"], spk["gender"])),
            "n_train": m.get("n_train"), "n_val": m.get("n_val"),
            "n_test": int(clean["n"].sum()) if clean is not None and len(clean) else None,
            "epochs_run": m.get("epochs_run"), "best_epoch": m.get("best_epoch"),
            "stopped_early": m.get("stopped_early"),
            "best_val_loss": (float(hist["val_loss"].min()) if hist is not None and "val_loss" in hist and len(hist)
                              else float("nan")),
            "train_seconds": m.get("train_seconds"),
            "accuracy": float(clean["accuracy"].iloc[0]) if one else float("nan"),
            "uar": float(clean["uar"].iloc[0]) if one else float("nan"),
        })
    return pd.DataFrame(rows)
