"""Section "Clean performance": accuracy with CIs per run, corpus and gender, the male-female gap,
confusion matrices, and the corpora compared."""

from __future__ import annotations

import pandas as pd

from seradv.report import analysis, plots
from seradv.report.data import GROUP_ORDER, RunData
from seradv.report.format import ci, fmt_acc, fmt_p, gap_cell, unit, verdict
from seradv.report.render import Bullets, Heading, Image, Table, slug
from seradv.report.sections import Figure, Section
from seradv.report.sections.gaps import corpus_sentence, corpus_table, refusal_notes

__all__ = ["clean_section"]


def clean_section(runs: list[RunData], n_boot: int, seed: int) -> tuple[Section, list[pd.DataFrame]]:
    """The section and, per run, its clean statistics (``stats/clean.csv``)."""
    blocks: list = [Heading(2, "Clean performance")]
    figures: list[Figure] = []
    frames = []
    for r in runs:
        cs = analysis.clean_stats(r, n_boot=n_boot, seed=seed).assign(run=r.name)
        frames.append(cs)
        split = f"{r.info.split} split" + (" (LEAKY: optimistic)" if r.info.leaky else
                                               " (speaker-independent)")
        blocks.append(Heading(3, f"{r.name}: {split}", anchor=f"clean-{slug(r.name)}"))
        rows = [[c.source, c.group, str(int(c.n)), ci(c.accuracy, c.acc_lo, c.acc_hi), fmt_acc(c.uar),
                 fmt_acc(c.macro_f1), fmt_acc(c.mean_confidence), unit(c)] for c in cs.itertuples()]
        blocks.append(Table(["corpus (language)", "group", "n", "accuracy [95% CI]", "UAR", "macro-F1",
                             "mean confidence", "CI resamples"], rows,
                            caption=f"Clean test performance, {r.name} ({split})",
                            meta={"kind": "clean", "run": r.name}))
        gaps = analysis.clean_gender_gaps(r, n_boot=n_boot, seed=seed)
        if not gaps.empty:
            rows = [[g.source, f"{g.spk_male}/{g.spk_female}", f"{g.n_male}/{g.n_female}", fmt_acc(g.acc_male),
                     fmt_acc(g.acc_female), gap_cell(g.gap, g.gap_lo, g.gap_hi, g.refusal), fmt_p(g.p_perm),
                     verdict(g.p_perm, g.refusal)] for g in gaps.itertuples()]
            blocks.append(Table(["corpus (language)", "speakers male/female", "n male/female", "male", "female",
                                 "male − female [95% CI]", "p (speaker permutation)", "significant at 5 %"], rows,
                                caption=f"Clean accuracy, male versus female (a comparison of speakers), {r.name}",
                                meta={"kind": "clean_gender", "run": r.name}))
            blocks += refusal_notes(gaps, "Clean accuracy")
        if r.confusion is not None:
            for source, part in r.confusion.groupby("source", sort=True):
                cms = {}
                for group in GROUP_ORDER:
                    g = part[part["group"] == group]
                    if g.empty:
                        continue
                    cm = g.pivot_table(index="true", columns="predicted", values="count", aggfunc="sum")
                    cm = cm.reindex(index=r.classes, columns=r.classes).fillna(0).astype(int)
                    cms[group] = cm.to_numpy()
                if "All" in cms:
                    rows = [[cls] + [str(v) for v in cms["All"][i]] for i, cls in enumerate(r.classes)]
                    blocks.append(Table(["true \\ predicted"] + r.classes, rows,
                                        caption=f"Clean confusion matrix (counts), {source}, All",
                                        meta={"kind": "confusion", "run": r.name, "source": source}))
                rel = f"figures/clean-confusion-{slug(r.name)}-{slug(source)}.png"
                figures.append(Figure(rel, plots.clean_confusions, (cms, r.classes),
                                      {"title": f"Clean confusion, {source} ({r.name})"}))
                n_all = int(cms["All"].sum()) if "All" in cms else 0
                blocks.append(Image(rel, f"Clean confusion matrices of {source} ({r.name}) for All, Male and "
                                         f"Female; colour: share of the true class, numbers: counts; n = {n_all} "
                                         f"samples."))
    cg = analysis.clean_corpus_gaps(runs, n_boot=n_boot, seed=seed)
    if not cg.empty:
        cg = cg.assign(params="clean")
        blocks.append(Heading(3, "Corpora / languages compared (clean)", anchor="clean-corpora"))
        blocks.append(corpus_table("clean", "clean test set", cg))
        blocks += refusal_notes(cg, "Clean accuracy, corpora")
        blocks.append(Bullets([corpus_sentence("Clean accuracy", cg)]))
    return Section(blocks, figures), frames
