"""Male-female and corpus comparisons (comparisons of speakers): the tables and sentences that
the clean section and the attack sections share."""

from __future__ import annotations

import pandas as pd

from seradv import stats
from seradv.report.format import STUDY_ACC, attack_title, fmt_acc, fmt_p, gap_cell, join_list, p_eq
from seradv.report.render import Para, Table

__all__ = ["gender_table", "corpus_table", "refusal_notes", "gender_sentence", "corpus_sentence"]


def refusal_notes(frame: pd.DataFrame, what: str) -> list:
    """One note per distinct refusal reason of a gap table."""
    reasons = sorted({str(x) for x in frame["refusal"] if isinstance(x, str) and x}) if "refusal" in frame else []
    return [Para(f"{what}: no inferential comparison for {why}. A gap between groups of speakers is a property "
                 f"of the speakers; with so few it cannot be told apart from the differences between individual "
                 f"speakers.", kind="note") for why in reasons]


def gender_table(attack: str, series: str, g: pd.DataFrame) -> Table:
    out = [[str(r.params), r.source, f"{r.spk_male}/{r.spk_female}", f"{r.n_male}/{r.n_female}",
            fmt_acc(r.robust_male), fmt_acc(r.robust_female), gap_cell(r.gap, r.gap_lo, r.gap_hi, r.refusal),
            fmt_p(r.p_perm), fmt_p(r.p_holm), f"{fmt_acc(r.success_male)} / {fmt_acc(r.success_female)}",
            gap_cell(r.sr_gap, r.sr_gap_lo, r.sr_gap_hi, r.refusal), fmt_p(r.p_perm_sr),
            f"{fmt_acc(r.adv_male)} / {fmt_acc(r.adv_female)}"] for r in g.itertuples()]
    return Table(["parameters", "corpus (language)", "speakers male/female", "n male/female", "robust male",
                  "robust female", "male − female [95% CI]", "p (speaker permutation)", "p (Holm)",
                  "success rate male / female", "success rate male − female [95% CI]", "p (speaker permutation) ",
                  f"{STUDY_ACC} male / female"], out,
                 caption=f"{attack_title(attack)}: male versus female robust accuracy, and success rate among "
                         f"clean-correct attacked samples (comparisons of speakers) — {series}",
                 meta={"kind": "gender_gap", "attack": attack, "series": series})


def corpus_table(attack: str, series: str, c: pd.DataFrame) -> Table:
    """Corpora compared: for ``attack == "clean"`` the clean accuracy, else the robust accuracy."""
    clean = attack == "clean"
    out = []
    for r in c.itertuples():
        line = [str(r.params), f"{r.source_a} − {r.source_b}", f"{r.spk_a}/{r.spk_b}", f"{r.n_a}/{r.n_b}",
                fmt_acc(r.acc_a if clean else r.robust_a), fmt_acc(r.acc_b if clean else r.robust_b),
                gap_cell(r.gap, r.gap_lo, r.gap_hi, r.refusal), fmt_p(r.p_perm), fmt_p(r.p_holm),
                "same model" if r.same_model else "different models"]
        if not clean:
            line += [gap_cell(r.sr_gap, r.sr_gap_lo, r.sr_gap_hi, r.refusal), fmt_p(r.p_perm_sr),
                     f"{fmt_acc(r.adv_a)} / {fmt_acc(r.adv_b)}"]
        out.append(line)
    what = "Clean accuracy" if clean else f"{attack_title(attack)}: robust accuracy"
    cols = ["parameters", "corpora (A − B)", "speakers A/B", "n A/B", "A", "B", "A − B [95% CI]",
            "p (speaker permutation)", "p (Holm)", "models"]
    if not clean:
        cols += ["success rate A − B [95% CI]", "p (speaker permutation) ", f"{STUDY_ACC} A / B"]
    return Table(cols, out, caption=f"{what}: corpora / languages compared (All; speakers of each corpus "
                                    f"resampled and permuted) — {series}",
                 meta={"kind": "corpus_gap" if not clean else "clean_corpus_gap", "attack": attack,
                       "series": series})


def _tested(frame: pd.DataFrame, per: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The comparisons with a test, those of them significant at 5 % (Holm), and the sentence on
    those refused (too few speakers per ``per``)."""
    tested = frame[frame["refusal"].fillna("") == ""]
    refused = len(frame) - len(tested)
    skipped = (f" {refused} of {len(frame)} comparison(s) have fewer than {stats.MIN_GROUP_SPEAKERS} speakers per "
               f"{per}: no test, the gap is descriptive only." if refused else "")
    return tested, tested[tested["p_holm"] < 0.05], skipped


def _significant(name: str, subject: str, where: list[str], n_tested: int, how: str, end: str) -> str:
    """The sentence for significant comparisons (``where``: one item each) among ``n_tested``."""
    if len(where) == n_tested:
        return (f"{name}: {subject} is significant at 5 % in all {n_tested} tested comparison(s): "
                f"{join_list(where)} ({how}){end}")
    return (f"{name}: {subject} is significant at 5 % for {join_list(where)}; not in the other "
            f"{n_tested - len(where)} of {n_tested} ({how}){end}")


def gender_sentence(name: str, g: pd.DataFrame) -> str:
    if g.empty:
        return f"{name}: no male-female comparison (a group is missing)."
    tested, sig, skipped = _tested(g, "gender")
    if tested.empty:
        return (f"{name}: no inferential male-female claim: fewer than {stats.MIN_GROUP_SPEAKERS} speakers per "
                f"gender in every comparison (a gender gap is a gap between speakers); the robust-accuracy gaps "
                f"shown are descriptive.")
    how = (f"permutation test of the robust accuracy permuting speakers between the genders, two-sided, "
           f"Holm-adjusted over the {len(tested)} tested comparison(s) of this series")
    if sig.empty:
        return (f"{name}: the male-female difference in robust accuracy is not significant at 5 % in any of the "
                f"{len(tested)} tested comparison(s) ({how}).{skipped}")
    where = [f"{r.source} {r.params} ({r.gap:+.3f}, {p_eq(r.p_holm)})" for r in sig.itertuples()]
    return _significant(name, "the male-female difference in robust accuracy", where, len(tested), how,
                        f".{skipped}")


def corpus_sentence(name: str, c: pd.DataFrame) -> str:
    if c.empty:
        return f"{name}: only one corpus / language in this series, no language comparison."
    models = ("each corpus has its own model, so a difference mixes language and model"
              if not c["same_model"].any() else
              "the same model served these languages, so the model is held fixed"
              if c["same_model"].all() else
              "some pairs share a model, others (other runs) do not: for those the models differ too")
    what = "clean accuracy" if (c["params"] == "clean").all() else "robust accuracy"
    tested, sig, skipped = _tested(c, "corpus")
    if tested.empty:
        return (f"{name}: no inferential claim about corpora / languages: fewer than {stats.MIN_GROUP_SPEAKERS} "
                f"speakers per corpus in every comparison; the {what} gaps shown are descriptive; {models}.")
    how = (f"permutation test of the {what} permuting speakers between the corpora, two-sided, Holm-adjusted "
           f"over the {len(tested)} tested comparison(s)")
    if sig.empty:
        return (f"{name}: no difference in {what} between corpora / languages is significant at 5 % ({how}); "
                f"{models}.{skipped}")
    where = [f"{r.source_a} vs {r.source_b}" + ("" if r.params == "clean" else f" at {r.params}")
             + f" ({r.gap:+.3f}, {p_eq(r.p_holm)})" for r in sig.itertuples()]
    return _significant(name, f"the difference in {what} between corpora / languages", where, len(tested), how,
                        f"; {models}.{skipped}")
