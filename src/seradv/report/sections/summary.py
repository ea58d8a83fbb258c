"""Section "Summary" (first, right after the title), "Languages compared within each gender" and
"Where the perturbations concentrate".

The summary is one figure (robust accuracy, attack x (language, gender), each attack at its
strongest setting by the report's one rule, :func:`seradv.report.analysis.strongest_by_run`)
and a few sentences generated from the data: which attacks hurt most; whether languages and
genders differ (tests of speakers, refused with fewer than ``MIN_GROUP_SPEAKERS`` speakers per
group); where the leaky (paper split) and the speaker-independent runs disagree. It holds no
table: its numbers are in ``stats/summary.csv``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seradv import stats
from seradv.report import plots
from seradv.report.data import RunData, attack_order
from seradv.report.format import fmt_acc, fmt_delta, fmt_p, gap_cell, join_list, p_eq, series_short
from seradv.report.render import Bullets, Heading, Image, Para, Table, slug
from seradv.report.sections import Figure, Section

__all__ = ["summary_section", "summary_sentences", "heatmap_grid", "gender_languages_section",
           "perturbation_section", "band_table"]

_GENDERS = (("Male", "male"), ("Female", "female"))


def _row_label(attack: str, part: pd.DataFrame) -> str:
    params = list(dict.fromkeys(str(p) for p in part["params"]))
    series = list(dict.fromkeys(series_short(str(s)) for s in part["series"]))
    what = params[0] if len(params) == 1 else "strongest of each run"
    return f"{attack} {what} ({', '.join(series)})"


def heatmap_grid(runs: list[RunData], grid: pd.DataFrame) -> pd.DataFrame:
    """The cells of the summary figure: ``row`` (clean first, then each attack in report order),
    ``column`` (source and gender), ``value`` (accuracy), ``n``; from the clean metrics and
    :func:`seradv.report.analysis.summary_grid`."""
    cells = []
    sources = []
    for r in runs:
        for source in r.metrics["source"].drop_duplicates():
            sources.append(source)
            for group, g in _GENDERS:
                m = r.metrics[(r.metrics["source"] == source) & (r.metrics["group"] == group)]
                if len(m):
                    cells.append({"row": "clean (whole test set)", "column": f"{source} {g}",
                                  "value": float(m["accuracy"].iloc[0]), "n": int(m["n"].iloc[0])})
    if not grid.empty:
        for attack in attack_order(grid["attack"].unique()):
            part = grid[grid["attack"] == attack]
            label = _row_label(attack, part[part["group"] == "All"])
            for source in sources:
                for group, g in _GENDERS:
                    x = part[(part["source"] == source) & (part["group"] == group)]
                    if len(x):
                        cells.append({"row": label, "column": f"{source} {g}",
                                      "value": float(x["robust_accuracy"].iloc[0]), "n": int(x["n"].iloc[0])})
    return pd.DataFrame(cells, columns=["row", "column", "value", "n"])


def _hurt_sentence(chosen: pd.DataFrame) -> str:
    allr = chosen[np.isfinite(chosen["robust_accuracy"].to_numpy(float)) & (chosen["attack"] != "worst_case")]
    if allr.empty:
        return ""
    mean = allr.groupby("attack", sort=False).agg(robust=("robust_accuracy", "mean"),
                                                 clean=("clean_accuracy", "mean"), n=("n", "sum"))
    mean = mean.sort_values("robust", kind="stable")
    items = [f"{a} ({fmt_acc(r.robust)} from a clean {fmt_acc(r.clean)}, n = {int(r.n)})"
             for a, r in mean.iterrows()]
    k = min(3, len(items))
    text = (f"Which attacks hurt most: at their strongest settings, {join_list(items[:k])} leave the lowest robust "
            f"accuracy (All, mean over the corpora)")
    if len(items) > k:
        text += f"; the mildest is {items[-1]}"
    return text + "."


def _chosen_key(chosen: pd.DataFrame) -> dict[tuple[str, str], tuple[str, str]]:
    """``(attack, source) -> (series, params_json)`` of the summary's cells."""
    return {(r.attack, r.source): (r.series, r.params_json) for r in chosen.itertuples()}


def _at_chosen_corpus(gaps_c: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    if gaps_c.empty:
        return gaps_c
    key = _chosen_key(chosen)
    keep = [key.get((r.attack, r.source_a)) == (r.series, r.params_json) == key.get((r.attack, r.source_b))
            for r in gaps_c.itertuples()]
    return gaps_c[keep]


def _claims(frame: pd.DataFrame, what: str, per: str, describe) -> str:
    """The sentence on a set of comparisons: significant ones (Holm, 5 %), the others, refusals."""
    if frame.empty:
        return ""
    tested = frame[frame["refusal"].fillna("") == ""]
    refused = len(frame) - len(tested)
    if tested.empty:
        big = frame.loc[frame["gap"].abs().idxmax()] if frame["gap"].notna().any() else None
        tail = (f"; the largest descriptive gap is {describe(big)} ({big['gap']:+.3f})" if big is not None else "")
        return (f"{what}: no inferential claim: fewer than {stats.MIN_GROUP_SPEAKERS} speakers per {per} in every "
                f"one of the {len(frame)} comparison(s) (a difference between groups of speakers cannot be told "
                f"apart from differences between individual speakers){tail}.")
    sig = tested[tested["p_holm"] < 0.05]
    rest = (f"; {refused} more comparison(s) refused (fewer than {stats.MIN_GROUP_SPEAKERS} speakers per {per})"
            if refused else "")
    if sig.empty:
        return (f"{what}: no significant difference in any of the {len(tested)} tested comparison(s) (speaker "
                f"permutation test, two-sided, Holm within each attack series, 5 %){rest}.")
    where = [f"{describe(r)} ({r['gap']:+.3f}, {p_eq(r['p_holm'])})" for _, r in sig.iterrows()]
    return (f"{what}: significant (speaker permutation test, Holm, 5 %) in {len(sig)} of {len(tested)} tested "
            f"comparison(s): {join_list(where)}{rest}.")


def _leaky_sentence(runs: list[RunData], chosen: pd.DataFrame) -> str:
    leaky = {r.name for r in runs if r.info.leaky}
    if not leaky or len(leaky) == len(runs) or chosen.empty:
        return ""
    ch = chosen.assign(key=chosen["corpus"].astype(str) + " (" + chosen["language"].astype(str) + ")",
                       leaky=chosen["run"].isin(leaky))
    clean = []
    for r in runs:
        m = r.metrics[r.metrics["group"] == "All"]
        for row in m.itertuples():
            clean.append({"key": f"{row.corpus} ({row.language})", "leaky": r.name in leaky, "acc": row.accuracy})
    cl = pd.DataFrame(clean).groupby(["key", "leaky"])["acc"].mean().unstack()
    both = [k for k in cl.index if cl.loc[k].notna().all()] if {True, False} <= set(cl.columns) else []
    if not both:
        return ("Leaky versus speaker-independent: the report holds runs of both kinds, but on different corpora, "
                "so they are not compared.")
    parts = [f"{k} {fmt_acc(cl.loc[k, True])} versus {fmt_acc(cl.loc[k, False])}" for k in both]
    disagree, rank = [], []
    for attack, part in ch[ch["key"].isin(both)].groupby("attack", sort=False):
        for key, p in part.groupby("key"):
            a, b = p[p["leaky"]], p[~p["leaky"]]
            if a.empty or b.empty:
                continue
            a, b = a.iloc[0], b.iloc[0]
            if a["robust_lo"] > b["robust_hi"] or b["robust_lo"] > a["robust_hi"]:
                disagree.append(f"{attack} on {key} ({fmt_acc(a['robust_accuracy'])} leaky versus "
                                f"{fmt_acc(b['robust_accuracy'])})")
    for flag in (True, False):
        m = ch[ch["key"].isin(both) & (ch["leaky"] == flag)].groupby("attack")["robust_accuracy"].mean()
        rank.append(list(m.sort_values(kind="stable").index))
    text = (f"Leaky (paper split) versus speaker-independent: clean accuracy {join_list(parts)}; ")
    if disagree:
        text += (f"the robust accuracies disagree beyond their 95 % intervals for {join_list(disagree)}")
    else:
        text += "no robust accuracy differs beyond the two 95 % intervals"
    if rank[0] and rank[0] != rank[1]:
        text += (f"; the attacks rank differently (leaky: {', '.join(rank[0])}; speaker-independent: "
                 f"{', '.join(rank[1])})")
    elif rank[0]:
        text += "; the attacks rank the same way"
    return text + ". The speaker-independent figures are the ones that generalise to new speakers."


def summary_sentences(runs: list[RunData], chosen: pd.DataFrame, gaps_g: pd.DataFrame, gaps_c: pd.DataFrame,
                      gaps_cg: pd.DataFrame) -> list[str]:
    """The summary's sentences, from the chosen cells (:func:`seradv.report.analysis.summary_series`),
    the male-female gaps, the corpus gaps and the within-gender corpus gaps
    (:func:`seradv.report.analysis.gender_corpus_gaps`)."""
    if chosen.empty:
        return ["No attack results in this report (run `seradv attack RUN_DIR`)."]
    out = [_hurt_sentence(chosen)]
    g = gaps_g
    if not g.empty:
        key = set(zip(chosen["run"], chosen["cell_id"], chosen["source"]))
        g = g[[k in key for k in zip(g["run"], g["cell_id"], g["source"])]]
    out.append(_claims(g, "Male versus female (robust accuracy at the strongest settings)", "gender",
                       lambda r: f"{r['attack']} on {r['source']}") if not g.empty else
               "Male versus female: no comparison (a gender is missing from the attacked samples).")
    c = _at_chosen_corpus(gaps_c, chosen)
    corpora = sorted({str(r.info.corpus) for r in runs})
    if len(corpora) == 1 and len(runs) > 1:
        out.append(f"Languages / corpora: one corpus ({corpora[0]}) in this report; its runs differ in split or "
                   f"model, not in language, so no language comparison (leaky versus speaker-independent: below).")
    elif chosen["source"].nunique() > 1:
        out.append(_claims(c, "Languages / corpora (robust accuracy, All)", "corpus",
                           lambda r: f"{r['attack']}: {r['source_a']} − {r['source_b']}") if not c.empty else
                   "Languages / corpora: the runs chose different strongest settings, so the All comparison is in "
                   "the within-gender section only.")
        if not gaps_cg.empty:
            out.append(_claims(gaps_cg, "Languages within one gender (male vs male, female vs female, robust "
                                        "accuracy)", "group",
                               lambda r: f"{r['attack']} {r['gender'].lower()}: {r['source_a']} − {r['source_b']}"))
        if not (c.empty or c["same_model"].all()):
            out.append("Different corpora were served by different models (one per run): a language gap mixes "
                       "language, speakers and model.")
    out.append(_leaky_sentence(runs, chosen))
    return [s for s in out if s]


def summary_section(runs: list[RunData], grid: pd.DataFrame, sentences: list[str]) -> Section:
    """The summary: the figure of :func:`heatmap_grid` and the sentences of :func:`summary_sentences`."""
    blocks: list = [Heading(2, "Summary", anchor="summary")]
    figures: list[Figure] = []
    cells = heatmap_grid(runs, grid)
    if not cells.empty:
        rel = "figures/summary.png"
        figures.append(Figure(rel, plots.summary_heatmap, (cells,),
                              {"title": "Robust accuracy by attack, language and gender"}))
        blocks.append(Image(rel, "Robust accuracy (correct before the attack and never fooled) of each attack at "
                                 "its strongest setting (lowest robust accuracy of each run, the same rule as the "
                                 "run's own report), per corpus (language) and gender, with the n of each cell; "
                                 "top row: clean accuracy of the whole test set. Intervals: the attack sections; "
                                 "every number: stats/summary.csv."))
    blocks.append(Bullets(sentences))
    return Section(blocks, figures)


def gender_languages_section(gaps_cg: pd.DataFrame) -> Section:
    """Languages compared within one gender on robust accuracy and on the success rate among
    clean-correct attacked samples (the clean accuracies of the corpora differ)."""
    blocks: list = [Heading(2, "Languages compared within each gender", anchor="languages-by-gender")]
    if gaps_cg.empty:
        blocks.append(Para("One corpus / language only, or no attack results: no comparison."))
        return Section(blocks)
    blocks.append(Para("Male speakers of one corpus against male speakers of another, and female against female, "
                       "each attack at its strongest setting. The success rate counts, among the samples classified "
                       "correctly before the attack and attacked, those the attack fooled: it does not depend on the "
                       "clean accuracy, which differs between corpora. Speakers are resampled (95 % CI) and permuted "
                       f"(p, Holm within each attack); no test with fewer than {stats.MIN_GROUP_SPEAKERS} speakers "
                       "per group.", kind="note"))
    for gender in ("Male", "Female"):
        part = gaps_cg[gaps_cg["gender"] == gender]
        if part.empty:
            continue
        rows = [[r.attack, f"{r.source_a} − {r.source_b}", f"{r.spk_a}/{r.spk_b}", f"{r.n_a}/{r.n_b}",
                 f"{fmt_acc(r.robust_a)} / {fmt_acc(r.robust_b)}", gap_cell(r.gap, r.gap_lo, r.gap_hi, r.refusal),
                 fmt_p(r.p_holm), f"{fmt_acc(r.success_a)} / {fmt_acc(r.success_b)}",
                 gap_cell(r.sr_gap, r.sr_gap_lo, r.sr_gap_hi, r.refusal), fmt_p(r.p_perm_sr)]
                for r in part.itertuples()]
        blocks.append(Table(["attack", "A − B", "speakers", "n", "robust A / B", "robust A − B [95% CI]",
                             "p (Holm)", "success A / B", "success A − B [95% CI]", "p"], rows,
                            caption=f"{gender} speakers: languages compared at each attack's strongest setting",
                            meta={"kind": "gender_corpus_gap", "gender": gender}))
    reasons = sorted({str(x) for x in gaps_cg["refusal"] if isinstance(x, str) and x})
    for why in reasons:
        blocks.append(Para(f"No inferential comparison for {why}: the gap shown is descriptive.", kind="note"))
    return Section(blocks)


_BANDS = 4


def band_table(profiles: pd.DataFrame) -> Table:
    """Mean |δ| per quarter of the Mel bands (low to high) and per third of the segment's time,
    per attack, source and gender (the full profiles: ``stats/perturbation_profiles.csv``)."""
    rows = []
    for (attack, source, gender), part in profiles.groupby(["attack", "source", "gender"], sort=False):
        b = part[part["axis"] == "band"].sort_values("index")["mean_abs_delta"].to_numpy()
        t = part[part["axis"] == "time"].sort_values("index")["mean_abs_delta"].to_numpy()
        peak = int(part[part["axis"] == "band"].sort_values("index")["index"].to_numpy()[int(np.argmax(b))])
        rows.append([attack, source, "male" if gender == "m" else "female", str(int(part["n"].iloc[0]))]
                    + [fmt_delta(float(q.mean())) for q in np.array_split(b, _BANDS)] + [str(peak)]
                    + [fmt_delta(float(q.mean())) for q in np.array_split(t, 3)])
    cols = (["attack", "corpus (language)", "gender", "n"] + [f"bands Q{i + 1}" for i in range(_BANDS)]
            + ["peak band"] + ["time 1st third", "2nd third", "3rd third"])
    return Table(cols, rows, caption="Mean |δ| per quarter of the Mel bands (Q1 lowest) and per third of the "
                                     "segment, each attack at its strongest setting",
                 meta={"kind": "perturbation_bands", "bands": _BANDS})


def perturbation_section(profiles: pd.DataFrame) -> Section:
    """One figure per attack: mean |δ| per Mel band and over time, per language and gender."""
    blocks: list = [Heading(2, "Where the perturbations concentrate", anchor="perturbations")]
    figures: list[Figure] = []
    if profiles.empty:
        blocks.append(Para("No saved perturbations (attacks/adv/*.npy) of the summary's attack cells: nothing to "
                           "show."))
        return Section(blocks)
    blocks.append(Para("Mean absolute perturbation |δ| of the standardized log-Mel features of the attacked samples "
                       "(each attack at its strongest setting, the summary's cells), per Mel band (averaged over "
                       "the frames of the 3 s segment) and per frame (averaged over the bands), for each corpus "
                       "and gender. Male and female voices differ in F0 and formants: a gender difference in "
                       "where an attack puts its budget shows here. Every value: stats/perturbation_profiles.csv.",
                       kind="note"))
    blocks.append(band_table(profiles))
    for attack in attack_order(profiles["attack"].unique()):
        part = profiles[profiles["attack"] == attack]
        params = "; ".join(dict.fromkeys(str(p) for p in part["params"]))
        rel = f"figures/perturbation-{slug(attack)}.png"
        figures.append(Figure(rel, plots.perturbation_profiles, (part,),
                              {"title": f"{attack} {params}: where |δ| goes"}))
        blocks.append(Image(rel, f"{attack} ({params}): mean |δ| per Mel band (left) and over the segment "
                                 f"(right); colour: corpus, solid: male, dashed: female; n in the legend "
                                 f"(attacked samples)."))
    return Section(blocks, figures)
