"""Sections "Attack: ...": one per attack, one subsection per series, laid out like the study's
tables (SPEC.md): robust accuracy with CIs, gender and corpus gaps with their tests, a figure
over the attack's strength, and the confusion at its strongest setting."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from seradv.report import analysis, plots
from seradv.report.data import GROUP_ORDER, RunData, attack_order
from seradv.report.format import (DASH, STUDY_ACC, attack_kind, attack_title, ci, fmt_acc, fmt_delta, fmt_p,
                                  fmt_time, n_of, n_speakers, robust_ci, robust_fmt, series_short, signed_ci, unit,
                                  units_of)
from seradv.report.render import Bullets, Heading, Image, Para, Table, slug
from seradv.report.sections import Figure, Section
from seradv.report.sections.gaps import corpus_sentence, corpus_table, gender_sentence, gender_table, refusal_notes

__all__ = ["attack_sections"]


def _study_table(attack: str, series: str, rows: pd.DataFrame) -> Table:
    """Rows: parameters; per source: robust accuracy All / Male / Female, the study's accuracy
    on adversarial examples All / Male / Female (secondary) and mean |delta| All / Male /
    Female; per run: time of the cell (s). First rows: n and the clean accuracy of the samples."""
    sources = list(dict.fromkeys(rows.sort_values(["run", "source"])["source"]))
    runs = list(dict.fromkeys(rows.sort_values("run")["run"]))
    cols = ["parameters"]
    for s in sources:
        cols += [f"{s} robust accuracy All / Male / Female", f"{s} {STUDY_ACC} All / Male / Female",
                 f"{s} mean |δ| All / Male / Female"]
    cols += [f"time (s) {r}" if len(runs) > 1 else "time (s)" for r in runs]

    def triple(part: pd.DataFrame, col: str, fmt) -> str:
        vals = []
        for g in GROUP_ORDER:
            v = part.loc[part["group"] == g, col]
            vals.append(fmt(float(v.iloc[0])) if len(v) else DASH)
        return " / ".join(vals)

    out = []
    first = rows[rows["params_json"] == analysis.ordered_settings(rows)[0]]
    n_line, clean = ["n (samples)"], ["clean (same samples)"]
    for s in sources:
        n_line += [triple(first[first["source"] == s], "n", lambda v: str(int(v))), DASH, DASH]
        clean += [triple(first[first["source"] == s], "clean_accuracy", fmt_acc), DASH, DASH]
    out.append(n_line + [DASH] * len(runs))
    out.append(clean + [DASH] * len(runs))
    for pj in analysis.ordered_settings(rows):
        part = rows[rows["params_json"] == pj]
        line = [str(part["params"].iloc[0])]
        for s in sources:
            p = part[part["source"] == s]
            line += [triple(p, "robust_accuracy", robust_fmt), triple(p, "adv_accuracy", fmt_acc),
                     triple(p, "mean_abs_delta", fmt_delta) if "mean_abs_delta" in p and p["mean_abs_delta"].notna().any() else DASH]
        for r in runs:
            t = part.loc[part["run"] == r, "seconds"] if "seconds" in part else pd.Series(dtype=float)
            line.append(fmt_time(float(t.iloc[0])) if len(t) and pd.notna(t.iloc[0]) else DASH)
        out.append(line)
    return Table(cols, out, caption=f"{attack_title(attack)}: robust accuracy, the study's accuracy on "
                                    f"adversarial examples (secondary) and mean |δ| (All / Male / Female), "
                                    f"time per cell — {series}",
                 meta={"kind": "attack", "attack": attack, "series": series, "sources": sources, "runs": runs})


def _ci_table(attack: str, series: str, rows: pd.DataFrame) -> Table:
    not_attacked = "n_not_attacked" in rows and bool((rows["n_not_attacked"].fillna(0) > 0).any())
    out = []
    for pj in analysis.ordered_settings(rows):
        part = rows[rows["params_json"] == pj].sort_values(["run", "source"], kind="stable")
        for r in part.itertuples():
            if r.group not in GROUP_ORDER:
                continue
            line = [str(r.params), r.source, r.group, str(int(r.n)), n_speakers(r.n_speakers),
                    ci(r.clean_accuracy, r.clean_lo, r.clean_hi), robust_ci(r)]
            if not_attacked:
                line.append(str(int(r.n_not_attacked)) if np.isfinite(r.n_not_attacked) else "?")
            line += [signed_ci(r.drop, r.drop_lo, r.drop_hi), fmt_p(r.p_sign), unit(r),
                     ci(r.adv_accuracy, r.adv_lo, r.adv_hi)]
            out.append(line)
    cols = ["parameters", "corpus (language)", "group", "n", "speakers", "clean accuracy [95% CI]",
            "robust accuracy [95% CI]"] + (["not attacked"] if not_attacked else []) + [
            "drop clean − robust [95% CI] (paired)", "p (sign test, paired)", "CI resamples",
            f"{STUDY_ACC} [95% CI]"]
    return Table(cols, out, caption=f"{attack_title(attack)}: robust accuracy with 95 % CIs — {series}",
                 meta={"kind": "attack_ci", "attack": attack, "series": series})


def _by_setting(frame: pd.DataFrame, settings: list[str], source_col: str) -> pd.DataFrame:
    rank = {p: i for i, p in enumerate(settings)}
    return frame.assign(_r=frame["params_json"].map(rank)).sort_values(["_r", source_col], kind="stable")


def _effect_sentence(name: str, rows: pd.DataFrame) -> str:
    allr = rows[(rows["group"] == "All") & rows["p_sign"].notna()]
    if allr.empty:
        return ""
    sig = allr[(allr["p_sign"] < 0.05) & (allr["drop"] > 0)]
    units = sorted({str(u) for u in allr["ci_unit"]})
    return (f"{name}: the robust accuracy is significantly below the clean accuracy of the same samples (exact "
            f"sign test over the {' / '.join(u + 's' for u in units)}, paired, 5 %) in {len(sig)} of {len(allr)} "
            f"setting x corpus cell(s).")


def _not_attacked_sentence(name: str, rows: pd.DataFrame) -> str:
    allr = rows[rows["group"] == "All"]
    if "n_not_attacked" not in allr or not (allr["n_not_attacked"].fillna(0) > 0).any():
        return ""
    worst = allr.loc[allr["n_not_attacked"].fillna(0).idxmax()]
    return (f"{name}: the attack did not run on some samples (up to {int(worst['n_not_attacked'])} of "
            f"{int(worst['n'])}, {worst['source']} {worst['params']}; e.g. no adversarial start was found for a "
            f"decision-based attack): such samples are counted as not robust, so the robust accuracy is a "
            f"lower bound for them.")


def attack_sections(runs: list[RunData], table: pd.DataFrame, gaps_g: pd.DataFrame,
                    gaps_c: pd.DataFrame) -> tuple[Section, pd.DataFrame]:
    """The attack sections and the strongest setting of every series (``stats/strongest.csv``)."""
    blocks: list = []
    figures: list[Figure] = []
    strongest = []
    for attack in attack_order(table["attack"].unique()):
        blocks.append(Heading(2, f"Attack: {attack_title(attack)}", anchor=f"attack-{slug(attack)}"))
        blocks.append(Para(f"{attack} ({attack_kind(attack)}).", kind=""))
        for a, series, rows in analysis.series_rows(table[table["attack"] == attack]):
            name = f"{attack} ({series})"
            blocks.append(Heading(3, f"{attack} — {series}", anchor=f"{slug(attack)}-{slug(series)}"))
            blocks.append(_study_table(attack, series, rows))
            blocks.append(_ci_table(attack, series, rows))
            key = analysis.strength_key(rows["params_json"])
            if key is not None and np.isfinite(rows["robust_accuracy"].to_numpy(float)).any():
                rel = f"figures/strength-{slug(attack)}-{slug(series)}.png"
                figures.append(Figure(rel, plots.accuracy_vs_strength, (rows, key),
                                      {"title": f"{attack}: robust accuracy vs {key} ({series})"}))
                blocks.append(Image(rel, f"{attack}: robust accuracy versus {key}, one line per gender (dashed: "
                                         f"All; dotted: clean accuracy of the same samples), 95 % CIs over "
                                         f"{units_of(rows)}; {series}; {n_of(rows)}."))
            g = gaps_g[(gaps_g["attack"] == attack) & (gaps_g["series"] == series)] if not gaps_g.empty else gaps_g
            c = gaps_c[(gaps_c["attack"] == attack) & (gaps_c["series"] == series)] if not gaps_c.empty else gaps_c
            settings = analysis.ordered_settings(rows)
            if not g.empty:
                g = _by_setting(g, settings, "source")
                blocks.append(gender_table(attack, series, g))
            if not c.empty:
                c = _by_setting(c, settings, "source_a")
                blocks.append(corpus_table(attack, series, c))
            if not g.empty:
                blocks += refusal_notes(g, f"{name}, male versus female")
            if not c.empty:
                blocks += refusal_notes(c, f"{name}, corpora")
            sentences = [s for s in (_not_attacked_sentence(name, rows), _effect_sentence(name, rows),
                                     gender_sentence(name, g), corpus_sentence(name, c)) if s]
            blocks.append(Bullets(sentences))
            best = analysis.strongest_rows(rows)
            if best.empty:
                blocks.append(Para(f"{name}: the robust accuracy is unavailable (results without robust_accuracy "
                                   f"and without per-sample files), so no strongest setting is chosen; the study's "
                                   f"accuracy on adversarial examples is not used in its place.", kind="warning"))
                continue
            for r in best.itertuples():
                strongest.append({"attack": attack, "series": series, "run": r.run, "source": r.source,
                                  "params": r.params, "params_json": r.params_json, "cell_id": r.cell_id,
                                  "corpus": r.corpus,
                                  "language": r.language, "n": int(r.n), "robust_accuracy": r.robust_accuracy,
                                  "robust_lo": r.robust_lo, "robust_hi": r.robust_hi, "ci_unit": r.ci_unit,
                                  "n_clusters": r.n_clusters, "n_not_attacked": r.n_not_attacked,
                                  "adv_accuracy": r.adv_accuracy, "adv_lo": r.adv_lo, "adv_hi": r.adv_hi,
                                  "clean_accuracy": r.clean_accuracy,
                                  "label": f"{attack} {r.params}\n{series_short(series)}"})
            if attack != "worst_case":
                part = _confusion_part(runs, attack, series, best)
                blocks += part.blocks
                figures += part.figures
    return Section(blocks, figures), pd.DataFrame(strongest)


def _confusion_part(runs: list[RunData], attack: str, series: str, best: pd.DataFrame) -> Section:
    """Clean versus attacked confusion at the strongest setting: one figure per class set."""
    by_run = {x.name: x for x in runs}
    groups: dict[tuple[str, ...], list] = {}
    for r in best.itertuples():
        s = by_run[r.run].samples(r.cell_id)
        if s is None:
            continue
        classes = tuple(by_run[r.run].classes)
        part = analysis.group_samples(s, r.corpus, r.language, "All")
        labels = range(len(classes))
        groups.setdefault(classes, []).append(
            (r.source, confusion_matrix(part["label"], part["pred_clean"], labels=labels),
             confusion_matrix(part["label"], part["pred_adv"], labels=labels)))
    section = Section([])
    params = "; ".join(dict.fromkeys(str(p) for p in best["params"]))
    for i, (classes, pairs) in enumerate(groups.items()):
        rel = f"figures/confusion-{slug(attack)}-{slug(series)}" + (f"-{i}" if i else "") + ".png"
        section.figures.append(Figure(rel, plots.confusion_pairs, (pairs, list(classes)),
                                      {"title": f"{attack} {params} ({series})"}))
        section.blocks.append(Image(rel, f"Per-class confusion on the attacked samples, clean versus {attack} at "
                                         f"its strongest setting ({params}; lowest robust accuracy of each run), one row per corpus "
                                         f"(predictions at the end of the attack); {series}; {n_of(best)}."))
    return section
