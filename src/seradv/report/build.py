"""Build the robustness report of one or several run directories.

:func:`build_report` writes, into the report folder (``RUN_DIR/report/`` by default)::

    report.html     self-contained page (inline CSS, images embedded, no script, no network)
    report.md       the same tables, figures linked from figures/
    figures/*.png   matplotlib figures
    audio/*.wav     Griffin-Lim renderings of a few original and adversarial examples
    stats/*.csv     every number of the report's tables, unrounded

Order of the report: the data split (leaky or not) and the models first, then clean
performance, an overview of all attacks, one section per attack laid out like the study's
tables (SPEC.md) with CIs, gender and corpus gaps and their tests, examples to look at and
listen to, the trust checks, and how the statistics were made.

The headline everywhere is the **robust accuracy** (:func:`seradv.robustness.robust_flags`)
with its n and its 95 % interval; the study's "accuracy on adversarial examples" is a
labelled secondary column. Gender and corpus comparisons are comparisons of speakers
(:mod:`seradv.report.stats`).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from seradv.errors import RunDirError
from seradv.report import analysis, plots, stats
from seradv.report.audio import clip_outliers
from seradv.report.data import GROUP_ORDER, RunData, attack_order, load_runs
from seradv.report.render import AudioSet, Bullets, Heading, Image, Para, Table, slug, to_html, to_markdown

log = logging.getLogger(__name__)

__all__ = ["build_report", "fmt_acc", "fmt_delta", "fmt_time", "fmt_p"]

DASH = "–"


# ----------------------------------------------------------------------------- formats


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
    if p is None or not np.isfinite(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _p_eq(p: float) -> str:
    """``p<0.001`` or ``p=0.013`` for sentences."""
    s = fmt_p(p)
    return f"p{s}" if s.startswith("<") else f"p={s}"


def _ci(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return DASH
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{v:.3f} [no CI]"
    return stats.Estimate(v, lo, hi).fmt()


UNAVAILABLE = "unavailable"
"""Shown for a robust accuracy that old results lack and no per-sample file can give."""


def _robust_ci(r) -> str:
    return _ci(r.robust_accuracy, r.robust_lo, r.robust_hi) if np.isfinite(r.robust_accuracy) else UNAVAILABLE


def _unit(r) -> str:
    """``speakers (12)``, ``utterances (40)``, ``counts`` ..."""
    unit = getattr(r, "ci_unit", "")
    if unit in ("", "counts") or not isinstance(unit, str):
        return "counts (independent samples)"
    return f"{unit}s ({int(r.n_clusters)})"


def _n_spk(v) -> str:
    return str(int(v)) if v is not None and np.isfinite(v) else "?"


def _signed_ci(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return DASH
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{v:+.3f} [no CI]"
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _attack_title(name: str) -> str:
    from seradv.attacks import ATTACKS

    if name == "worst_case":
        return "Worst case over the Linf attacks (AutoAttack-style)"
    return ATTACKS[name].title if name in ATTACKS else name


def _attack_kind(name: str) -> str:
    from seradv.attacks import ATTACKS

    if name in ATTACKS:
        s = ATTACKS[name]
        return f"{s.kind}, {s.norm}" + ("" if s.in_study else "; not in the study")
    return "per sample: robust only if every Linf attack at that eps failed"


# ----------------------------------------------------------------------------- sections


def _runs_section(runs: list[RunData]) -> list:
    blocks: list = [Heading(2, "Data, split and models")]
    for r in runs:
        info = r.info
        split = info["split"]
        text = (f"{r.name}: split '{split}' — {info['leak_note']}. Standardization fitted on "
                f"{info.get('standardization_fitted_on', '?')}; clip values {info['clip_values']}.")
        blocks.append(Para(text, kind="warning" if info.get("leaky") else "note"))
    rows = []
    for r in runs:
        m = r.model_meta or {}
        test_n = r.metrics[r.metrics["group"] == "All"]["n"].sum()
        rows.append([r.name, ", ".join(sorted(r.metrics["source"].unique())), r.info["split"],
                     "yes" if r.info.get("leaky") else "no", str(int(test_n)), str(m.get("model", "?")),
                     f"{m.get('parameters', 0):,}" if m else "?", ", ".join(r.classes)])
    blocks.append(Table(["run", "corpus (language)", "split", "leaky", "test segments", "model", "parameters",
                         "classes"], rows, caption="Runs in this report", meta={"kind": "runs"}))
    if len(runs) > 1:
        blocks.append(Para("Each run has its own model, trained on its own corpus: wherever corpora of "
                           "different runs are compared, the models differ too, so a gap mixes the "
                           "language (and speakers, recording conditions) with the model.", kind="note"))
    for r in runs:
        for n in r.notes:
            blocks.append(Para(f"{r.name}: {n}", kind="note"))
    return blocks


def _clean_section(runs: list[RunData], out: Path, n_boot: int, seed: int) -> tuple[list, list[pd.DataFrame]]:
    blocks: list = [Heading(2, "Clean performance")]
    frames = []
    for r in runs:
        cs = analysis.clean_stats(r, n_boot=n_boot, seed=seed).assign(run=r.name)
        frames.append(cs)
        split = f"{r.info['split']} split" + (" (LEAKY: optimistic)" if r.info.get("leaky") else
                                               " (speaker-independent)")
        blocks.append(Heading(3, f"{r.name}: {split}", anchor=f"clean-{slug(r.name)}"))
        rows = [[c.source, c.group, str(int(c.n)), _ci(c.accuracy, c.acc_lo, c.acc_hi), fmt_acc(c.uar),
                 fmt_acc(c.macro_f1), fmt_acc(c.mean_confidence), _unit(c)] for c in cs.itertuples()]
        blocks.append(Table(["corpus (language)", "group", "n", "accuracy [95% CI]", "UAR", "macro-F1",
                             "mean confidence", "CI resamples"], rows,
                            caption=f"Clean test performance, {r.name} ({split})",
                            meta={"kind": "clean", "run": r.name}))
        gaps = analysis.clean_gender_gaps(r, n_boot=n_boot, seed=seed)
        if not gaps.empty:
            rows = [[g.source, f"{g.spk_male}/{g.spk_female}", f"{g.n_male}/{g.n_female}", fmt_acc(g.acc_male),
                     fmt_acc(g.acc_female), _gap_cell(g.gap, g.gap_lo, g.gap_hi, g.refusal), fmt_p(g.p_perm),
                     _verdict(g.p_perm, g.refusal)] for g in gaps.itertuples()]
            blocks.append(Table(["corpus (language)", "speakers male/female", "n male/female", "male", "female",
                                 "male − female [95% CI]", "p (speaker permutation)", "significant at 5 %"], rows,
                                caption=f"Clean accuracy, male versus female (a comparison of speakers), {r.name}",
                                meta={"kind": "clean_gender", "run": r.name}))
            blocks += _refusal_notes(gaps, "Clean accuracy")
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
                plots.clean_confusions(cms, r.classes, out / rel, title=f"Clean confusion, {source} ({r.name})")
                n_all = int(cms["All"].sum()) if "All" in cms else 0
                blocks.append(Image(rel, f"Clean confusion matrices of {source} ({r.name}) for All, Male and "
                                         f"Female; colour: share of the true class, numbers: counts; n = {n_all} "
                                         f"samples."))
    cg = analysis.clean_corpus_gaps(runs, n_boot=n_boot, seed=seed)
    if not cg.empty:
        cg = cg.assign(params="clean")
        blocks.append(Heading(3, "Corpora / languages compared (clean)", anchor="clean-corpora"))
        blocks.append(_corpus_table("clean", "clean test set", cg))
        blocks += _refusal_notes(cg, "Clean accuracy, corpora")
        blocks.append(Bullets([_corpus_sentence("Clean accuracy", cg)]))
    return blocks, frames


def _series_rows(table: pd.DataFrame):
    """(attack, series, rows) in report order."""
    for attack in attack_order(table["attack"].unique()):
        a = table[table["attack"] == attack]
        for series in sorted(a["series"].unique(), key=lambda s: ("full test set" not in s, s)):
            yield attack, series, a[a["series"] == series]


STUDY_ACC = "accuracy on adversarial examples, as the study"


def _robust_fmt(v: float) -> str:
    return fmt_acc(v) if np.isfinite(v) else UNAVAILABLE


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
            line += [triple(p, "robust_accuracy", _robust_fmt), triple(p, "adv_accuracy", fmt_acc),
                     triple(p, "mean_abs_delta", fmt_delta) if "mean_abs_delta" in p and p["mean_abs_delta"].notna().any() else DASH]
        for r in runs:
            t = part.loc[part["run"] == r, "seconds"] if "seconds" in part else pd.Series(dtype=float)
            line.append(fmt_time(float(t.iloc[0])) if len(t) and pd.notna(t.iloc[0]) else DASH)
        out.append(line)
    return Table(cols, out, caption=f"{_attack_title(attack)}: robust accuracy, the study's accuracy on "
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
            line = [str(r.params), r.source, r.group, str(int(r.n)), _n_spk(r.n_speakers),
                    _ci(r.clean_accuracy, r.clean_lo, r.clean_hi), _robust_ci(r)]
            if not_attacked:
                line.append(str(int(r.n_not_attacked)) if np.isfinite(r.n_not_attacked) else "?")
            line += [_signed_ci(r.drop, r.drop_lo, r.drop_hi), fmt_p(r.p_sign), _unit(r),
                     _ci(r.adv_accuracy, r.adv_lo, r.adv_hi)]
            out.append(line)
    cols = ["parameters", "corpus (language)", "group", "n", "speakers", "clean accuracy [95% CI]",
            "robust accuracy [95% CI]"] + (["not attacked"] if not_attacked else []) + [
            "drop clean − robust [95% CI] (paired)", "p (sign test, paired)", "CI resamples",
            f"{STUDY_ACC} [95% CI]"]
    return Table(cols, out, caption=f"{_attack_title(attack)}: robust accuracy with 95 % CIs — {series}",
                 meta={"kind": "attack_ci", "attack": attack, "series": series})


def _by_setting(frame: pd.DataFrame, settings: list[str], source_col: str) -> pd.DataFrame:
    rank = {p: i for i, p in enumerate(settings)}
    return frame.assign(_r=frame["params_json"].map(rank)).sort_values(["_r", source_col], kind="stable")


def _gap_cell(v: float, lo: float, hi: float, refusal: str) -> str:
    """The gap with its CI, or the gap alone marked descriptive when the comparison is refused."""
    if not np.isfinite(v):
        return DASH
    if refusal:
        return f"{v:+.3f} (descriptive)"
    return _signed_ci(v, lo, hi)


def _verdict(p: float, refusal: str) -> str:
    if refusal:
        return "no test (too few speakers)"
    return DASH if not np.isfinite(p) else ("yes" if p < 0.05 else "no")


def _refusal_notes(frame: pd.DataFrame, what: str) -> list:
    """One note per distinct refusal reason of a gap table."""
    reasons = sorted({str(x) for x in frame["refusal"] if isinstance(x, str) and x}) if "refusal" in frame else []
    return [Para(f"{what}: no inferential comparison for {why}. A gap between groups of speakers is a property "
                 f"of the speakers; with so few it cannot be told apart from the differences between individual "
                 f"speakers.", kind="note") for why in reasons]


def _gender_table(attack: str, series: str, g: pd.DataFrame) -> Table:
    out = [[str(r.params), r.source, f"{r.spk_male}/{r.spk_female}", f"{r.n_male}/{r.n_female}",
            fmt_acc(r.robust_male), fmt_acc(r.robust_female), _gap_cell(r.gap, r.gap_lo, r.gap_hi, r.refusal),
            fmt_p(r.p_perm), fmt_p(r.p_holm), f"{fmt_acc(r.success_male)} / {fmt_acc(r.success_female)}",
            _gap_cell(r.sr_gap, r.sr_gap_lo, r.sr_gap_hi, r.refusal), fmt_p(r.p_perm_sr),
            f"{fmt_acc(r.adv_male)} / {fmt_acc(r.adv_female)}"] for r in g.itertuples()]
    return Table(["parameters", "corpus (language)", "speakers male/female", "n male/female", "robust male",
                  "robust female", "male − female [95% CI]", "p (speaker permutation)", "p (Holm)",
                  "success rate male / female", "success rate male − female [95% CI]", "p (speaker permutation) ",
                  f"{STUDY_ACC} male / female"], out,
                 caption=f"{_attack_title(attack)}: male versus female robust accuracy, and success rate among "
                         f"clean-correct attacked samples (comparisons of speakers) — {series}",
                 meta={"kind": "gender_gap", "attack": attack, "series": series})


def _corpus_table(attack: str, series: str, c: pd.DataFrame) -> Table:
    clean = attack == "clean"
    out = []
    for r in c.itertuples():
        line = [str(r.params), f"{r.source_a} − {r.source_b}", f"{r.spk_a}/{r.spk_b}", f"{r.n_a}/{r.n_b}",
                fmt_acc(r.acc_a if clean else r.robust_a), fmt_acc(r.acc_b if clean else r.robust_b),
                _gap_cell(r.gap, r.gap_lo, r.gap_hi, r.refusal), fmt_p(r.p_perm), fmt_p(r.p_holm),
                "same model" if r.same_model else "different models"]
        if not clean:
            line += [_gap_cell(r.sr_gap, r.sr_gap_lo, r.sr_gap_hi, r.refusal), fmt_p(r.p_perm_sr),
                     f"{fmt_acc(r.adv_a)} / {fmt_acc(r.adv_b)}"]
        out.append(line)
    what = "Clean accuracy" if clean else f"{_attack_title(attack)}: robust accuracy"
    cols = ["parameters", "corpora (A − B)", "speakers A/B", "n A/B", "A", "B", "A − B [95% CI]",
            "p (speaker permutation)", "p (Holm)", "models"]
    if not clean:
        cols += ["success rate A − B [95% CI]", "p (speaker permutation) ", f"{STUDY_ACC} A / B"]
    return Table(cols, out, caption=f"{what}: corpora / languages compared (All; speakers of each corpus "
                                    f"resampled and permuted) — {series}",
                 meta={"kind": "corpus_gap" if not clean else "clean_corpus_gap", "attack": attack,
                       "series": series})


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _gender_sentence(name: str, g: pd.DataFrame) -> str:
    if g.empty:
        return f"{name}: no male-female comparison (a group is missing)."
    tested = g[g["refusal"].fillna("") == ""]
    refused = len(g) - len(tested)
    skipped = (f" {refused} of {len(g)} comparison(s) have fewer than {stats.MIN_GROUP_SPEAKERS} speakers per "
               f"gender: no test, the gap is descriptive only." if refused else "")
    if tested.empty:
        return (f"{name}: no inferential male-female claim: fewer than {stats.MIN_GROUP_SPEAKERS} speakers per "
                f"gender in every comparison (a gender gap is a gap between speakers); the robust-accuracy gaps "
                f"shown are descriptive.")
    how = (f"permutation test of the robust accuracy permuting speakers between the genders, two-sided, "
           f"Holm-adjusted over the {len(tested)} tested comparison(s) of this series")
    sig = tested[tested["p_holm"] < 0.05]
    if sig.empty:
        return (f"{name}: the male-female difference in robust accuracy is not significant at 5 % in any of the "
                f"{len(tested)} tested comparison(s) ({how}).{skipped}")
    where = [f"{r.source} {r.params} ({r.gap:+.3f}, {_p_eq(r.p_holm)})" for r in sig.itertuples()]
    if len(sig) == len(tested):
        return (f"{name}: the male-female difference in robust accuracy is significant at 5 % in all "
                f"{len(tested)} tested comparison(s): {_list(where)} ({how}).{skipped}")
    return (f"{name}: the male-female difference in robust accuracy is significant at 5 % for {_list(where)}; "
            f"not in the other {len(tested) - len(sig)} of {len(tested)} ({how}).{skipped}")


def _corpus_sentence(name: str, c: pd.DataFrame) -> str:
    if c.empty:
        return f"{name}: only one corpus / language in this series, no language comparison."
    models = ("each corpus has its own model, so a difference mixes language and model"
              if not c["same_model"].any() else
              "the same model served these languages, so the model is held fixed"
              if c["same_model"].all() else
              "some pairs share a model, others (other runs) do not: for those the models differ too")
    what = "clean accuracy" if (c["params"] == "clean").all() else "robust accuracy"
    tested = c[c["refusal"].fillna("") == ""]
    refused = len(c) - len(tested)
    skipped = (f" {refused} of {len(c)} comparison(s) have fewer than {stats.MIN_GROUP_SPEAKERS} speakers per "
               f"corpus: no test, the gap is descriptive only." if refused else "")
    if tested.empty:
        return (f"{name}: no inferential claim about corpora / languages: fewer than {stats.MIN_GROUP_SPEAKERS} "
                f"speakers per corpus in every comparison; the {what} gaps shown are descriptive; {models}.")
    how = (f"permutation test of the {what} permuting speakers between the corpora, two-sided, Holm-adjusted "
           f"over the {len(tested)} tested comparison(s)")
    sig = tested[tested["p_holm"] < 0.05]
    if sig.empty:
        return (f"{name}: no difference in {what} between corpora / languages is significant at 5 % ({how}); "
                f"{models}.{skipped}")
    where = [f"{r.source_a} vs {r.source_b}" + ("" if r.params == "clean" else f" at {r.params}")
             + f" ({r.gap:+.3f}, {_p_eq(r.p_holm)})" for r in sig.itertuples()]
    if len(sig) == len(tested):
        return (f"{name}: the difference in {what} between corpora / languages is significant at 5 % in all "
                f"{len(tested)} tested comparison(s): {_list(where)} ({how}); {models}.{skipped}")
    return (f"{name}: the difference in {what} between corpora / languages is significant at 5 % for "
            f"{_list(where)}; not in the other {len(tested) - len(sig)} of {len(tested)} ({how}); {models}.{skipped}")


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


def _n_of(rows: pd.DataFrame) -> str:
    """``n = 40 (xa: 20, xb: 20)``: the samples of group All per source of one series."""
    allr = rows[rows["group"] == "All"]
    per = allr.groupby("source", sort=True)["n"].max()
    if len(per) == 1:
        return f"n = {int(per.iloc[0])} samples"
    return f"n = {int(per.sum())} samples (" + ", ".join(f"{k}: {int(v)}" for k, v in per.items()) + ")"


def _units_of(rows: pd.DataFrame) -> str:
    allr = rows[rows["group"] == "All"]
    units = sorted({_unit(r) for r in allr.itertuples()})
    return ", ".join(units) if units else "?"


def _series_short(series: str) -> str:
    s = series.replace(" backend", "").replace("full test set", "full").replace("seeded subset of ", "n=")
    return s.replace(", seed 0", "")


def _attack_sections(runs, table, gaps_g, gaps_c, out: Path) -> tuple[list, pd.DataFrame]:
    blocks: list = []
    strongest = []
    for attack in attack_order(table["attack"].unique()):
        blocks.append(Heading(2, f"Attack: {_attack_title(attack)}", anchor=f"attack-{slug(attack)}"))
        blocks.append(Para(f"{attack} ({_attack_kind(attack)}).", kind=""))
        for a, series, rows in _series_rows(table[table["attack"] == attack]):
            name = f"{attack} ({series})"
            blocks.append(Heading(3, f"{attack} — {series}", anchor=f"{slug(attack)}-{slug(series)}"))
            blocks.append(_study_table(attack, series, rows))
            blocks.append(_ci_table(attack, series, rows))
            key = analysis.strength_key(rows["params_json"])
            if key is not None and np.isfinite(rows["robust_accuracy"].to_numpy(float)).any():
                rel = f"figures/strength-{slug(attack)}-{slug(series)}.png"
                plots.accuracy_vs_strength(rows, key, out / rel,
                                           title=f"{attack}: robust accuracy vs {key} ({series})")
                blocks.append(Image(rel, f"{attack}: robust accuracy versus {key}, one line per gender (dashed: "
                                         f"All; dotted: clean accuracy of the same samples), 95 % CIs over "
                                         f"{_units_of(rows)}; {series}; {_n_of(rows)}."))
            g = gaps_g[(gaps_g["attack"] == attack) & (gaps_g["series"] == series)] if not gaps_g.empty else gaps_g
            c = gaps_c[(gaps_c["attack"] == attack) & (gaps_c["series"] == series)] if not gaps_c.empty else gaps_c
            settings = analysis.ordered_settings(rows)
            if not g.empty:
                g = _by_setting(g, settings, "source")
                blocks.append(_gender_table(attack, series, g))
            if not c.empty:
                c = _by_setting(c, settings, "source_a")
                blocks.append(_corpus_table(attack, series, c))
            if not g.empty:
                blocks += _refusal_notes(g, f"{name}, male versus female")
            if not c.empty:
                blocks += _refusal_notes(c, f"{name}, corpora")
            sentences = [s for s in (_not_attacked_sentence(name, rows), _effect_sentence(name, rows),
                                     _gender_sentence(name, g), _corpus_sentence(name, c)) if s]
            blocks.append(Bullets(sentences))
            pj = analysis.strongest(rows)
            if pj is None:
                blocks.append(Para(f"{name}: the robust accuracy is unavailable (results without robust_accuracy "
                                   f"and without per-sample files), so no strongest setting is chosen; the study's "
                                   f"accuracy on adversarial examples is not used in its place.", kind="warning"))
                continue
            best = rows[(rows["params_json"] == pj) & (rows["group"] == "All")]
            for r in best.itertuples():
                strongest.append({"attack": attack, "series": series, "run": r.run, "source": r.source,
                                  "params": r.params, "cell_id": r.cell_id, "corpus": r.corpus,
                                  "language": r.language, "n": int(r.n), "robust_accuracy": r.robust_accuracy,
                                  "robust_lo": r.robust_lo, "robust_hi": r.robust_hi, "ci_unit": r.ci_unit,
                                  "n_clusters": r.n_clusters, "n_not_attacked": r.n_not_attacked,
                                  "adv_accuracy": r.adv_accuracy, "adv_lo": r.adv_lo, "adv_hi": r.adv_hi,
                                  "clean_accuracy": r.clean_accuracy,
                                  "label": f"{attack} {r.params}\n{_series_short(series)}"})
            if attack != "worst_case":
                blocks += _confusion_block(runs, attack, series, best, out)
    return blocks, pd.DataFrame(strongest)


def _confusion_block(runs: list[RunData], attack: str, series: str, best: pd.DataFrame, out: Path) -> list:
    """Clean versus attacked confusion at the strongest setting: one figure per class set."""
    from sklearn.metrics import confusion_matrix

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
    blocks: list = []
    params = best["params"].iloc[0] if len(best) else ""
    for i, (classes, pairs) in enumerate(groups.items()):
        rel = f"figures/confusion-{slug(attack)}-{slug(series)}" + (f"-{i}" if i else "") + ".png"
        plots.confusion_pairs(pairs, list(classes), out / rel, title=f"{attack} {params} ({series})")
        blocks.append(Image(rel, f"Per-class confusion on the attacked samples, clean versus {attack} at its "
                                 f"strongest setting ({params}, by robust accuracy), one row per corpus "
                                 f"(predictions at the end of the attack); {series}; {_n_of(best)}."))
    return blocks


def _overview_section(runs, strongest: pd.DataFrame, out: Path) -> list:
    blocks: list = [Heading(2, "All attacks at their strongest setting")]
    if strongest.empty:
        blocks.append(Para("No attack results in this report (run `seradv attack RUN_DIR`)."))
        return blocks
    rel = "figures/strongest.png"
    bars = strongest.assign(label=[f"{lab}\nn={n}" for lab, n in zip(strongest["label"], strongest["n"])])
    plots.strongest_bars(bars, out / rel, title="Robust accuracy at each attack's strongest setting")
    blocks.append(Image(rel, "Every attack (and series: backend, samples, early stop) at its strongest setting, "
                             "the one with the lowest robust accuracy (All, averaged over the corpora shown), one "
                             "bar per corpus with its 95 % CI (n under each label); black tick: clean accuracy of "
                             f"the same samples. Series are never pooled. n = {int(strongest['n'].sum())} samples "
                             f"in all, {len(strongest)} bar(s)."))
    not_attacked = bool((strongest["n_not_attacked"].fillna(0) > 0).any())
    rows = []
    for s in strongest.itertuples():
        line = [s.attack, s.series, s.source, s.params, str(int(s.n)), _robust_ci(s)]
        if not_attacked:
            line.append(str(int(s.n_not_attacked)) if np.isfinite(s.n_not_attacked) else "?")
        line += [fmt_acc(s.clean_accuracy), _unit(s), _ci(s.adv_accuracy, s.adv_lo, s.adv_hi)]
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
            panels.append((f"{r.attack} {r.params}\n{_series_short(r.series)}, n={len(p)}",
                           p["conf_clean"].to_numpy(), p["conf_adv"].to_numpy()))
        if panels:
            rel = f"figures/confidence-{slug(source)}.png"
            plots.confidence_histograms(panels, out / rel, title=f"Top-class confidence before and after, {source}")
            blocks.append(Image(rel, f"{source}: the model's top-class confidence on clean and on attacked "
                                     f"samples, each attack at its strongest setting (n per panel in its "
                                     f"title)."))
    return blocks


# ----------------------------------------------------------------------------- examples


def _pick_examples(run: RunData, table: pd.DataFrame, n_examples: int) -> list[dict]:
    """Up to ``n_examples`` attacks (strongest setting, one white-box and one black-box first)."""
    from seradv.attacks import ATTACKS

    rows = table[(table["run"] == run.name) & (table["attack"] != "worst_case")]
    cands = []
    for attack, series, part in _series_rows(rows):
        pj = analysis.strongest(part)
        if pj is None:
            continue
        cid = part.loc[part["params_json"] == pj, "cell_id"].iloc[0]
        if run.adv_path(cid).exists() and run.samples(cid) is not None:
            cands.append({"attack": attack, "series": series, "cell_id": cid,
                          "params": part.loc[part["params_json"] == pj, "params"].iloc[0],
                          "n": int(part.loc[part["params_json"] == pj, "n"].max()),
                          "kind": ATTACKS[attack].kind if attack in ATTACKS else ""})
    best: dict[str, dict] = {}
    for c in cands:  # one series per attack: the one with the most samples
        if c["attack"] not in best or c["n"] > best[c["attack"]]["n"]:
            best[c["attack"]] = c
    ordered = list(best.values())
    first = [next((c for c in ordered if c["kind"] == k), None) for k in ("white-box", "black-box")]
    picked = [c for c in first if c is not None]
    picked += [c for c in ordered if c not in picked]
    return picked[:n_examples]


def _examples_section(runs: list[RunData], table: pd.DataFrame, out: Path, n_examples: int,
                      audio: bool, seed: int) -> list:
    blocks: list = [Heading(2, "Examples: spectrograms and audio")]
    if n_examples <= 0 or table.empty:
        blocks.append(Para("No examples (none asked for, or no attack results)."))
        return blocks
    blocks.append(Para(
        "Each example is one test segment, attacked by a few attacks at their strongest setting. The "
        "spectrograms are the standardized log-Mel features the model sees (time x Mel band); original "
        "and adversarial share one colour scale, the difference is shown on a scale of the same width "
        "and magnified. The audio is a Griffin-Lim rendering (un-standardize, undo dB, invert the Mel "
        "filter bank, estimate the phase): it sounds rough even for the original, so compare the "
        "renderings with each other, not with the recording. The 'outliers clipped' version limits "
        "|δ| to its 99th percentile. Perturbations are stored as float16, so x + δ is reproduced to "
        "about three significant digits."))
    for run in runs:
        blocks += _run_examples(run, table, out, n_examples, audio, seed)
    return blocks


def _run_examples(run: RunData, table: pd.DataFrame, out: Path, n_examples: int, audio: bool, seed: int) -> list:
    from seradv.cache import load_npy
    from seradv.prepare import load_subset
    from seradv.features import Standardizer
    from seradv.rundir import load_run_config

    picks = _pick_examples(run, table, n_examples)
    if not picks:
        return [Para(f"{run.name}: no saved perturbations (attacks/adv/*.npy): no examples.", kind="note")]
    try:
        test = load_subset(run.run_dir, "test")
    except RunDirError as exc:
        return [Para(f"{run.name}: the test features cannot be loaded ({exc}); no examples. For a run made "
                     f"elsewhere set SERADV_CACHE_DIR to its feature cache.", kind="note")]
    cfg = load_run_config(run.run_dir)
    scaler = Standardizer.load(run.run_dir / "standardizer.safetensors")
    lo, hi = run.clip
    samples = {p["cell_id"]: run.samples(p["cell_id"]) for p in picks}
    # one segment for all picked attacks: clean correct, fooled by as many of them as possible
    common = set.intersection(*[set(s["segment_id"]) for s in samples.values()])
    score: dict[int, int] = {}
    for sid in sorted(common):
        rows = [s[s["segment_id"] == sid].iloc[0] for s in samples.values()]
        if all(r["pred_clean"] == r["label"] for r in rows):
            score[sid] = sum(int(r["pred_adv"] != r["label"]) for r in rows)
    if not score:
        return [Para(f"{run.name}: no segment attacked by all of {', '.join(p['attack'] for p in picks)} was "
                     f"classified correctly when clean; no examples.", kind="note")]
    sid = max(sorted(score), key=lambda k: score[k])
    pos = int(np.flatnonzero(test.meta["segment_id"].to_numpy() == sid)[0])
    x = np.clip(test.x[pos], lo, hi).astype(np.float32)
    meta = test.meta.iloc[pos]
    classes = run.classes
    blocks: list = [Heading(3, f"{run.name}: segment {sid} ({meta['utterance']}, {meta['corpus']} "
                               f"({meta['language']}), speaker {meta['speaker']}, true emotion {meta['emotion']})",
                            anchor=f"examples-{slug(run.name)}")]
    versions: dict[str, np.ndarray] = {"original": x}
    labels: dict[str, str] = {"original": "original"}
    for p in picks:
        s = samples[p["cell_id"]]
        i = int(np.flatnonzero(s["segment_id"].to_numpy() == sid)[0])
        delta = np.asarray(load_npy(run.adv_path(p["cell_id"]), mmap=True)[i], np.float32)
        x_adv = np.clip(x + delta, lo, hi)
        dc, limit = clip_outliers(delta)
        x_clip = np.clip(x + dc, lo, hi)
        key = slug(p["attack"])
        versions[f"{key}-adversarial"] = x_adv
        versions[f"{key}-clipped"] = x_clip
        labels[f"{key}-adversarial"] = f"{p['attack']} {p['params']}"
        labels[f"{key}-clipped"] = f"{p['attack']} {p['params']}, outliers clipped (|δ| ≤ {limit:.3g})"
        rel = f"figures/example-{slug(run.name)}-{sid}-{key}.png"
        plots.spectrograms(x, x_adv, out / rel, seconds_per_frame=cfg.features.hop_length / cfg.audio.sample_rate,
                            title=f"segment {sid}: {p['attack']} {p['params']} ({p['series']}); predicted "
                                  f"{classes[int(s.iloc[i]['pred_clean'])]} → {classes[int(s.iloc[i]['pred_adv'])]}")
        blocks.append(Image(rel, f"Segment {sid} ({meta['emotion']}): original, {p['attack']} ({p['params']}, "
                                 f"{p['series']}) and their difference; mean |δ| {np.abs(delta).mean():.4g}, "
                                 f"max |δ| {np.abs(delta).max():.3g}."))
    preds = _predict(run, versions)
    if preds is not None:
        rows = [[labels[k], classes[int(preds[j])]] for j, k in enumerate(versions)]
        blocks.append(Table(["version", "predicted (re-run of the model)"], rows,
                            caption=f"What the model predicts for each version of segment {sid} "
                                    f"(true: {meta['emotion']})",
                            meta={"kind": "example_predictions", "run": run.name, "segment": int(sid)}))
    if audio:
        from seradv.report.audio import render, write_wavs

        ref_db = float(scaler.inverse(x).max())
        signals = {k: render(v, scaler, sr=cfg.audio.sample_rate, features=cfg.features, ref_db=ref_db, seed=seed)
                   for k, v in versions.items()}
        stem = f"{slug(run.name)}-seg{sid}"
        paths = write_wavs({f"{stem}-{k}": y for k, y in signals.items()}, out / "audio", sr=cfg.audio.sample_rate)
        items = [(labels[k], f"audio/{paths[f'{stem}-{k}'].name}") for k in versions]
        blocks.append(AudioSet(f"Listen: segment {sid}", items,
                               caption="Griffin-Lim renderings at 16 kHz, one common gain for all versions."))
    return blocks


def _predict(run: RunData, versions: dict[str, np.ndarray]) -> np.ndarray | None:
    from seradv.evaluation import predict_logits
    from seradv.rundir import load_model

    try:
        model = load_model(run.run_dir)
    except Exception as exc:  # noqa: BLE001 - a model this process cannot build: skip the check
        log.info("%s: model not loaded for the example check (%s)", run.name, exc)
        return None
    x = np.stack(list(versions.values())).astype(np.float32)
    return predict_logits(model, x).argmax(1)


# ----------------------------------------------------------------------------- trust, methods


def _trust_section(runs: list[RunData]) -> list:
    blocks: list = [Heading(2, "Trust checks")]
    any_ = False
    for r in runs:
        if r.trust is None or r.trust.empty:
            continue
        any_ = True
        rows = [[t.check, t.attack, t.status, t.detail] for t in r.trust.itertuples()]
        blocks.append(Table(["check", "attack", "status", "detail"], rows, caption=f"Trust checks, {r.name}",
                            meta={"kind": "trust", "run": r.name}))
    if not any_:
        blocks.append(Para("No trust checks recorded (attacks/trust.csv is written by `seradv attack`)."))
    return blocks


def _methods_section(n_boot: int) -> list:
    return [
        Heading(2, "How the statistics were made"),
        Bullets([
            "Robust accuracy (the headline): a sample is robust when it was classified correctly before the "
            "attack, the attack ran on it, and it was classified correctly at every iterate the attack watched "
            "and at the end (seradv.robustness.robust_flags, the AutoAttack convention). Samples the attack did "
            "not run on are counted as not robust. The study's 'accuracy on adversarial examples' counts a "
            "sample that was wrong before and moved onto the true class as correct; it is shown as a labelled "
            "secondary column only. Results of older runs without robust_accuracy get it from their per-sample "
            "files; where there is none it is 'unavailable', never replaced by the study's accuracy.",
            "The unit: segments of one utterance (and, in the paper split, its augmented copies) are not "
            "independent. Intervals of an accuracy resample speakers on a speaker split with at least "
            f"{stats.MIN_CLUSTERS} test speakers (an interval over new speakers); with fewer speakers, and on "
            "the paper split (speakers shared with training), they resample utterances (an interval over new "
            "utterances of these speakers). The 'CI resamples' column names the unit and the number of clusters.",
            f"Intervals: a percentile bootstrap over the clusters ({n_boot} resamples, seed 0), widened at each end "
            "to the Wilson score interval at the design-effect sample size (n / deff, deff from the cluster-robust "
            "variance, at least 1; Student t on clusters - 1 degrees of freedom) where that is wider: the bootstrap "
            "alone is too narrow with few clusters or near 0 and 1. When every sample is 0 (or 1) the exact "
            "Clopper-Pearson interval over the clusters is used (0 of C), so 0/n never gets [0, 0]. A proportion "
            "known only by its counts (no per-sample file) gets Clopper-Pearson over its samples.",
            "Clean versus attacked: the same samples twice, so paired: the drop (clean minus robust accuracy, "
            "the share of samples the attack broke) gets the same cluster interval, and an exact sign test over "
            "the same clusters gives its p-value.",
            "Male versus female, and corpus versus corpus, are comparisons of speakers: the gap's CI resamples "
            "the speakers of each group on their own (bootstrap widened to Newcombe's score interval) and its "
            "p-value comes from a two-sided permutation test that moves whole speakers between the groups "
            f"(exact enumeration up to 5000 arrangements). With fewer than {stats.MIN_GROUP_SPEAKERS} speakers "
            "in a group there is no CI and no test: the gap is shown as descriptive only (with 3 + 3 speakers "
            "the smallest possible p is 0.1). Compared are the robust accuracy and the success rate among "
            "clean-correct attacked samples, not the study's accuracy on adversarial examples.",
            "Several settings and corpora of one attack series are several tests: p (Holm) is adjusted "
            "with Holm-Bonferroni within each series; the sentences use the adjusted values.",
            "Rows of different series (backend art / torch, full test set / seeded subset, attack seed, "
            "early stop) are never averaged; each is reported on its own. The worst-case rows count a "
            "sample as robust only if no Linf attack at that eps fooled it.",
            "Where corpora of different runs are compared, the models differ too (one model per run): a gap "
            "is then a property of corpus and model together, not of the language alone.",
            "The time per cell is the attack's wall time on the machine and device of that run, for all of "
            "its samples (all languages of a run together).",
        ]),
    ]


# ----------------------------------------------------------------------------- entry point


def _default_out(run_dirs: list[Path]) -> Path:
    if len(run_dirs) == 1:
        return run_dirs[0] / "report"
    return run_dirs[0].parent / ("report-" + "+".join(d.name for d in run_dirs))


def _prepare_out(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for sub, pattern in (("figures", "*.png"), ("audio", "*.wav"), ("stats", "*.csv")):
        d = out / sub
        if d.is_dir():
            for f in d.glob(pattern):  # only what an earlier build wrote
                f.unlink()
        d.mkdir(exist_ok=True)


def build_report(
    run_dirs,
    out: str | Path | None = None,
    *,
    n_examples: int = 3,
    audio: bool = True,
    n_boot: int = stats.N_BOOT,
    seed: int = 0,
    embed_images: bool = True,
) -> Path:
    """Write the report of one or several run directories; returns the path of ``report.html``.

    Parameters
    ----------
    run_dirs : path or list of paths
        Run directories (prepared, trained and evaluated; attack results optional). Several
        runs (e.g. EmoDB, EMOVO, RAVDESS) make one cross-language report.
    out : path, optional
        Report folder; default ``RUN_DIR/report`` for one run, ``<parent>/report-<a>+<b>`` for several.
    n_examples : int
        Attacks shown as spectrograms and audio per run (0: none).
    audio : bool
        Render the examples as wav files (Griffin-Lim; about a second each).
    n_boot : int
        Bootstrap resamples for every CI.
    seed : int
        Seed of the bootstrap, the permutation tests and the Griffin-Lim phase.
    embed_images : bool
        Embed the figures in report.html (base64) rather than linking figures/.
    """
    t0 = time.perf_counter()
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise RunDirError("no run directory given")
    runs = load_runs(run_dirs)
    out = Path(out) if out is not None else _default_out(run_dirs)
    _prepare_out(out)

    table = analysis.attack_stats(runs, n_boot=n_boot, seed=seed)
    gaps_g = analysis.gender_gaps(runs, table, n_boot=n_boot, seed=seed) if not table.empty else pd.DataFrame()
    gaps_c = analysis.corpus_gaps(runs, table, n_boot=n_boot, seed=seed) if not table.empty else pd.DataFrame()

    names = ", ".join(r.name for r in runs)
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("seradv")
    except PackageNotFoundError:
        ver = "?"
    blocks: list = [Heading(1, f"Robustness report: {names}", anchor="top"),
                    Para(f"Made by seradv {ver} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from "
                         f"{', '.join(str(d) for d in run_dirs)}. The headline is the robust accuracy (correct before the "
                         f"attack and never fooled by it), given with its n and its 95 % confidence interval in "
                         f"brackets (over speakers or utterances, see the last section); the study's accuracy on "
                         f"adversarial examples is a labelled secondary column. Every table is also in "
                         f"stats/*.csv unrounded.")]
    blocks += _runs_section(runs)
    clean_blocks, clean_frames = _clean_section(runs, out, n_boot, seed)
    blocks += clean_blocks
    if table.empty:
        attack_blocks, strongest = [], pd.DataFrame()
    else:
        attack_blocks, strongest = _attack_sections(runs, table, gaps_g, gaps_c, out)
    blocks += _overview_section(runs, strongest, out)
    blocks += attack_blocks
    blocks += _examples_section(runs, table, out, n_examples, audio, seed)
    blocks += _trust_section(runs)
    blocks += _methods_section(n_boot)

    pd.concat(clean_frames, ignore_index=True).to_csv(out / "stats" / "clean.csv", index=False)
    for name, frame in (("attacks", table), ("gender_gaps", gaps_g), ("corpus_gaps", gaps_c),
                        ("strongest", strongest)):
        if not frame.empty:
            frame.drop(columns=[c for c in ("members",) if c in frame]).to_csv(out / "stats" / f"{name}.csv",
                                                                                index=False)
    title = f"seradv robustness report: {names}"
    (out / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(to_html(blocks, title=title, root=out, embed_images=embed_images),
                                     encoding="utf-8")
    log.info("report of %s written to %s in %.1f s", names, out, time.perf_counter() - t0)
    return out / "report.html"

