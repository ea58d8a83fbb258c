"""Section "All attacks at their strongest setting": bars, the table, confidence histograms."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seradv.report import analysis, plots
from seradv.report.data import RunData
from seradv.report.format import STUDY_ACC, ci, fmt_acc, robust_ci, series_short, unit
from seradv.report.render import Heading, Image, Para, Table, slug
from seradv.report.sections import Figure, Section

__all__ = ["overview_section"]


def overview_section(runs: list[RunData], strongest: pd.DataFrame) -> Section:
    """``strongest``: one row per attack series and source (from :func:`~.attacks.attack_sections`)."""
    blocks: list = [Heading(2, "All attacks at their strongest setting")]
    figures: list[Figure] = []
    if strongest.empty:
        blocks.append(Para("No attack results in this report (run `seradv attack RUN_DIR`)."))
        return Section(blocks)
    rel = "figures/strongest.png"
    # one label per attack series (its samples summed over the corpora), so the corpora's bars group under it
    key = strongest["attack"] + "|" + strongest["series"]
    total = strongest.groupby(key)["n"].sum()
    params = strongest.groupby(key)["params"].agg(lambda p: "; ".join(dict.fromkeys(map(str, p))))
    bars = strongest.assign(label=[f"{a} {params[k]}\n{series_short(s)}; n={int(total[k])}"
                                   for a, s, k in zip(strongest["attack"], strongest["series"], key)])
    figures.append(Figure(rel, plots.strongest_bars, (bars,),
                          {"title": "Robust accuracy at each attack's strongest setting"}))
    blocks.append(Image(rel, "Every attack (and series: backend, samples, early stop) at its strongest setting, "
                             "the one with the lowest robust accuracy (All, averaged over the corpora of one run: "
                             "the same setting as in that run's own report), one "
                             "bar per corpus with its 95 % CI (n under each label); black tick: clean accuracy of "
                             f"the same samples. Series are never pooled. n = {int(strongest['n'].sum())} samples "
                             f"in all, {len(strongest)} bar(s)."))
    not_attacked = bool((strongest["n_not_attacked"].fillna(0) > 0).any())
    rows = []
    for s in strongest.itertuples():
        line = [s.attack, s.series, s.source, s.params, str(int(s.n)), robust_ci(s)]
        if not_attacked:
            line.append(str(int(s.n_not_attacked)) if np.isfinite(s.n_not_attacked) else "?")
        line += [fmt_acc(s.clean_accuracy), unit(s), ci(s.adv_accuracy, s.adv_lo, s.adv_hi)]
        rows.append(line)
    blocks.append(Table(["attack", "series", "corpus (language)", "strongest setting", "n",
                         "robust accuracy [95% CI]"] + (["not attacked"] if not_attacked else [])
                        + ["clean (same samples)", "CI resamples", f"{STUDY_ACC} [95% CI]"], rows,
                        caption="Strongest setting of each attack (lowest robust accuracy)",
                        meta={"kind": "strongest"}))
    if not_attacked:
        blocks.append(Para("'not attacked': samples the attack did not run on (e.g. a decision-based attack "
                           "without an adversarial start); they are counted as not robust.", kind="note"))
    by_run = {r.name: r for r in runs}
    for source, part in strongest[strongest["attack"] != "worst_case"].groupby("source", sort=True):
        panels = []
        for r in part.itertuples():
            s = by_run[r.run].samples(r.cell_id)
            if s is None:
                continue
            p = analysis.group_samples(s, r.corpus, r.language, "All")
            panels.append((f"{r.attack} {r.params}\n{series_short(r.series)}; {len(p)} samples",
                           p["conf_clean"].to_numpy(), p["conf_adv"].to_numpy()))
        if panels:
            rel = f"figures/confidence-{slug(source)}.png"
            figures.append(Figure(rel, plots.confidence_histograms, (panels,),
                                  {"title": f"Top-class confidence before and after, {source}"}))
            blocks.append(Image(rel, f"{source}: the model's top-class confidence on clean and on attacked "
                                     f"samples, each attack at its strongest setting (n per panel in its "
                                     f"title)."))
    return Section(blocks, figures)
