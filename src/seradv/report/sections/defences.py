"""Section "Defended vs undefended": each defended model beside the undefended model of the
same corpora and split (Armory's baseline tables are the model), with the study's defence
table (SPEC.md) beside ours and the trust checks that flag masking on the defended model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seradv.report.analysis import defence_label
from seradv.report.data import GROUP_ORDER, RunData
from seradv.report.format import DASH, ci, fmt_acc
from seradv.report.render import Heading, Para, Table
from seradv.report.sections import Section
from seradv.report.study import study_defence_figure

__all__ = ["defence_pairs", "defence_section"]


def _defended(run: RunData) -> bool:
    d = (run.model_meta or {}).get("defence") or {}
    return d.get("kind", "none") != "none"


def _sources(run: RunData) -> tuple[tuple[str, str], ...]:
    """The run's (corpus, language) pairs (not the report's labels, which name the run where
    two runs share a corpus)."""
    return tuple(sorted(set(zip(run.metrics["corpus"].astype(str), run.metrics["language"].astype(str)))))


def defence_pairs(runs: list[RunData]) -> list[tuple[RunData, RunData]]:
    """``(undefended, defended)`` pairs: same corpora and split kind, one defended."""
    plain = [r for r in runs if not _defended(r)]
    return [(u, d) for d in runs if _defended(d) for u in plain
            if _sources(u) == _sources(d) and u.info.split == d.info.split]


def _largest(rows: pd.DataFrame) -> pd.DataFrame:
    """One cell per (attack, params): the one on the most samples (All group)."""
    all_ = rows[rows["group"] == "All"].sort_values("n", ascending=False, kind="stable")
    keep = all_.drop_duplicates(["attack", "params"])["cell_id"]
    return rows[rows["cell_id"].isin(keep)]


def _triple(part: pd.DataFrame, col: str) -> str:
    vals = []
    for g in GROUP_ORDER:
        v = part.loc[part["group"] == g, col]
        vals.append(fmt_acc(float(v.iloc[0])) if len(v) else DASH)
    return " / ".join(vals)


def _robust(part: pd.DataFrame) -> str:
    a = part[part["group"] == "All"]
    if a.empty or not np.isfinite(float(a["robust_accuracy"].iloc[0])):
        return DASH
    r = a.iloc[0]
    return f"{ci(r['robust_accuracy'], r['robust_lo'], r['robust_hi'])} (n {int(r['n'])})"


def _clean(run: RunData) -> str:
    m = run.metrics
    vals = [m.loc[m["group"] == g, "accuracy"] for g in GROUP_ORDER]
    return " / ".join(fmt_acc(float(v.iloc[0])) if len(v) else DASH for v in vals)


def _pair_blocks(u: RunData, d: RunData, table: pd.DataFrame) -> list:
    corpora = sorted(d.metrics["corpus"].unique()) if "corpus" in d.metrics else []
    corpus = str(corpora[0]) if len(corpora) == 1 else ""  # the study's figures are per corpus
    tu = _largest(table[table["run"] == u.name])
    td = _largest(table[table["run"] == d.name])
    keys = list(dict.fromkeys(zip(td["attack"], td["params"])))  # attack_stats' order: the study's first
    study_clean = study_defence_figure(corpus, "clean", "")
    rows = [["clean (no attack)", _clean(u), _clean(d), DASH, fmt_acc(study_clean) if study_clean else DASH]]
    for attack, params in keys:
        pu = tu[(tu["attack"] == attack) & (tu["params"] == params)]
        pd_ = td[(td["attack"] == attack) & (td["params"] == params)]
        s = study_defence_figure(corpus, attack, params)
        rows.append([f"{attack} {params}", _robust(pu) if len(pu) else "not run", _robust(pd_),
                     _triple(pd_, "adv_accuracy"), fmt_acc(s) if s is not None else DASH])
    blocks: list = [Para(f"{d.name} ({defence_label((d.model_meta or {}).get('defence'))}) against {u.name} "
                         f"(undefended), split '{d.info.split}'.", kind="note"),
                    Table(["attack", f"{u.name}: robust accuracy All [95 % CI] (n)",
                           f"{d.name}: robust accuracy All [95 % CI] (n)",
                           f"{d.name}: accuracy on adversarial examples, as the study, All / Male / Female",
                           "study, defended (accuracy on adversarial examples, All)"], rows,
                          caption="Defended vs undefended, each attack at each budget; clean rows: accuracy All / "
                                  "Male / Female. The study's column is its accuracy on adversarial examples "
                                  "(SPEC.md, defence table), comparable with the fourth column, not with robust "
                                  "accuracy", meta={"kind": "defence"})]
    trust = d.trust
    if trust is not None and not trust.empty and "status" in trust:
        bad = trust[trust["status"] != "pass"]
        if len(bad):
            lines = "; ".join(f"{r.check} ({r.attack}, {r.group}): {r.detail}"
                              for r in bad.drop_duplicates(["check", "attack"]).head(6).itertuples())
            blocks.append(Para(f"Trust checks that fire on {d.name} ({len(bad)}): {lines}. Robust accuracy that "
                               "rises with eps, or a single step (FGSM) far weaker than the iterative attacks at the "
                               "same eps, is the signature of a model that masks gradients rather than resists: "
                               "read its robust accuracy from the strongest attack (the worst case).",
                               kind="warning"))
        else:
            blocks.append(Para(f"Every trust check passes on {d.name} ({len(trust)} checks).", kind="note"))
    return blocks


def defence_section(runs: list[RunData], table: pd.DataFrame) -> Section:
    """Nothing when no run is defended; else one table per (undefended, defended) pair."""
    pairs = defence_pairs(runs)
    if not pairs or table.empty:
        defended = [r.name for r in runs if _defended(r)]
        if not defended:
            return Section([])
        return Section([Heading(2, "Defended vs undefended"),
                        Para(f"{', '.join(defended)}: defended, but no undefended run of the same corpora and split "
                             "is in this report (add it to `seradv report`) or nothing was attacked.", kind="note")])
    blocks: list = [Heading(2, "Defended vs undefended")]
    for u, d in pairs:
        blocks += _pair_blocks(u, d, table)
    return Section(blocks)
