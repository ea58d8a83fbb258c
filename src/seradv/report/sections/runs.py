"""Section "Data, split and models": each run's split (leaky or not), standardization, model."""

from __future__ import annotations

import pandas as pd

from seradv.report.data import RunData
from seradv.report.format import DASH, fmt_time
from seradv.report.render import Heading, Para, Table
from seradv.report.sections import Section

__all__ = ["fold_table", "runs_section", "training_table"]


_DETAILS = (("model", "model"), ("parameters", "parameters"), ("defence", "defence (training)"), ("split", "split"), ("folds", "speaker folds (CV)"),
            ("epochs_budget", "epochs (budget)"), ("epochs_run", "epochs run"), ("best_epoch", "best epoch (kept)"),
            ("stopped_early", "stopped early"), ("patience", "early-stopping patience"),
            ("best_val_loss", "best validation loss"), ("n_train", "training segments"),
            ("n_val", "validation segments"), ("batch_size", "batch size"), ("lr", "learning rate"),
            ("dropout", "dropout"), ("train_seconds", "training time (s)"),
            ("attacked_subsets", "attacked samples"), ("attack_cells", "attack cells"),
            ("attacked_per_cell", "samples per cell"), ("not_attacked", "samples not attacked (all cells)"))


def _detail(key: str, v) -> str:
    if v is None or (isinstance(v, float) and not pd.notna(v)) or v == "":
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if key == "parameters":
        return f"{int(v):,}"
    if key == "train_seconds":
        return fmt_time(float(v))
    if key == "best_val_loss":
        return f"{float(v):.4f}"
    return str(v)


def training_table(details: pd.DataFrame) -> Table:
    """How each model was trained and sampled (:func:`seradv.report.analysis.training_details`),
    transposed: one row per fact, one column per run, so that it fits the page."""
    rows = [[label] + [_detail(key, d.get(key)) for d in details.to_dict("records")] for key, label in _DETAILS]
    return Table(["", *details["run"].astype(str)], rows,
                 caption="Training and sampling details per model (model.json, history.csv, config.yaml, attack "
                         "cells); a CV run shows its first fold's model",
                 meta={"kind": "training"})


_FOLD_COLUMNS = (("fold", "fold"), ("test_speakers", "test speakers"), ("n_train", "train"), ("n_val", "val"),
                 ("n_test", "test"), ("epochs_run", "epochs"), ("best_epoch", "best"),
                 ("stopped_early", "stopped early"), ("best_val_loss", "best val. loss"),
                 ("train_seconds", "training time"), ("accuracy", "clean acc."), ("uar", "UAR"))


def fold_table(name: str, folds: pd.DataFrame) -> Table:
    """The folds of one CV run (:func:`seradv.report.analysis.fold_details`), one row each."""
    def cell(key: str, v) -> str:
        if key in ("accuracy", "uar"):
            return f"{float(v):.3f}" if v is not None and pd.notna(v) else DASH
        return _detail(key, v)

    rows = [[cell(k, r.get(k)) for k, _ in _FOLD_COLUMNS] for r in folds.to_dict("records")]
    return Table([label for _, label in _FOLD_COLUMNS], rows,
                 caption=f"{name}: the speaker folds (segments per subset; clean accuracy on each fold's test "
                         "speakers, their segments; the pooled figures weigh folds by their test segments)",
                 meta={"kind": "folds"})


def runs_section(runs: list[RunData], details: pd.DataFrame | None = None,
                 folds: dict[str, pd.DataFrame] | None = None) -> Section:
    """The data, split and models of every run; ``details``: the training table's rows;
    ``folds``: per CV run (by name), its folds' rows."""
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
    if details is not None and not details.empty:
        blocks.append(training_table(details))
    for name, f in (folds or {}).items():
        if not f.empty:
            blocks.append(fold_table(name, f))
    if len(runs) > 1:
        blocks.append(Para("Each run has its own model, trained on its own corpus: wherever corpora of "
                           "different runs are compared, the models differ too, so a gap mixes the "
                           "language (and speakers, recording conditions) with the model.", kind="note"))
    for r in runs:
        for n in r.notes:
            blocks.append(Para(f"{r.name}: {n}", kind="note"))
    return Section(blocks)
