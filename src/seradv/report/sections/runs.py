"""Section "Data, split and models": each run's split (leaky or not), standardization, model."""

from __future__ import annotations

from seradv.report.data import RunData
from seradv.report.render import Heading, Para, Table
from seradv.report.sections import Section

__all__ = ["runs_section"]


def runs_section(runs: list[RunData]) -> Section:
    blocks: list = [Heading(2, "Data, split and models")]
    for r in runs:
        info = r.info
        split = info.split
        text = (f"{r.name}: split '{split}' — {info.leak_note}. Standardization fitted on "
                f"{info.standardization_fitted_on or '?'}; clip values {info.clip_values}.")
        blocks.append(Para(text, kind="warning" if info.leaky else "note"))
    rows = []
    for r in runs:
        m = r.model_meta or {}
        test_n = r.metrics[r.metrics["group"] == "All"]["n"].sum()
        rows.append([r.name, ", ".join(sorted(r.metrics["source"].unique())), r.info.split,
                     "yes" if r.info.leaky else "no", str(int(test_n)), str(m.get("model", "?")),
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
    return Section(blocks)
