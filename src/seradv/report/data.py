"""Read what a run directory holds for the report, without writing anything into it.

The attack results are read from ``attacks/cells/*.json`` (the source ``results.csv`` is
written from, and the only one that is up to date while a grid is still running), plus the
per-sample worst case of :func:`seradv.grid.results.worst_case`. Each row gets:

``run``      the run's folder name;
``source``   the corpus and language it is about, e.g. ``emodb (de)`` (unique over the runs
             of one report);
``series``   what must never be averaged over: backend, the attacked samples (full test
             set or a seeded subset) and their seed, and early stop.

A speaker-fold CV run is read as one :class:`RunData`: the top-level pooled metrics,
predictions and confusions, and the folds' cells pooled (:func:`seradv.grid.results.pool_folds`),
whose per-sample frames are the concatenation of the folds' with a ``fold`` column.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from seradv.attacks import STUDY_ATTACKS
from seradv.fileio import read_json
from seradv.errors import RunDirError
from seradv.evaluation import GROUPS
from seradv.grid.results import (pool_folds, read_cell, read_samples, with_precision_column, worst_case,
                                 worst_case_frames)
from seradv.rundir import (CONFUSION, METRICS_CSV, MODEL_META, PREDICTIONS, RESULTS_CSV, SAMPLES_SUFFIX, TRUST_CSV,
                           Preprocessing, adv_file, attacks_dir, cell_file, cells_dir, fold_run_dirs, is_cv_run,
                           read_preprocessing, run_fingerprints, subset_file)

log = logging.getLogger(__name__)

__all__ = ["RunData", "load_run", "load_runs", "attack_order", "GROUP_ORDER", "ROBUST_COLUMNS"]

GROUP_ORDER = tuple(GROUPS)  # ("All", "Male", "Female")


def attack_order(names) -> list[str]:
    """The study's attacks in SPEC.md order, then the others alphabetically, worst case last."""
    names = set(names)
    first = [a for a in STUDY_ATTACKS if a in names]
    rest = sorted(n for n in names if n not in STUDY_ATTACKS and n != "worst_case")
    return first + rest + (["worst_case"] if "worst_case" in names else [])


@dataclass
class RunData:
    """Everything the report reads from one run directory."""

    run_dir: Path
    info: Preprocessing
    metrics: pd.DataFrame | None
    confusion: pd.DataFrame | None
    predictions: pd.DataFrame | None
    model_meta: dict | None
    results: pd.DataFrame
    cells: dict[str, dict]
    trust: pd.DataFrame | None
    notes: list[str] = field(default_factory=list)
    pooled: dict[str, pd.DataFrame] | None = None
    """Speaker-fold CV runs: the pooled per-sample frames by pooled cell id (``None`` otherwise)."""

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    @property
    def clip(self) -> tuple[float, float]:
        return self.info.clip

    def samples(self, cell_id: str) -> pd.DataFrame | None:
        """Per-sample results of one cell (``None`` if the file is missing)."""
        if self.pooled is not None:
            return self.pooled.get(cell_id)
        cache = self.__dict__.setdefault("_samples", {})
        if cell_id not in cache:
            cache[cell_id] = read_samples(cell_file(self.run_dir, cell_id, SAMPLES_SUFFIX))
        return cache[cell_id]

    def worst_case_samples(self, row: pd.Series) -> pd.DataFrame | None:
        """Per-sample table of a worst-case row, written so that :func:`seradv.grid.results.robust_flags` reads its
        ``robust`` column: ``fooled_any = ~robust``, ``attacked`` true, and ``pred_adv`` the
        label where the sample survived every member attack at the end (else a wrong label)."""
        frames = self.__dict__.setdefault("_worst", {})
        cid = str(row["cell_id"])
        if cid not in frames:
            frames[cid] = self._worst_case_frame(row)
        return frames[cid]

    def _worst_case_frame(self, row: pd.Series) -> pd.DataFrame | None:
        cache = self.__dict__.get("_worst_frames")
        if cache is None and self.pooled is not None:
            cache = self.__dict__["_worst_frames"] = {cid: ({}, f) for cid, f in self.pooled.items()
                                                      if "robust" in f and "attacked" not in f}
        if cache is None:
            base = self.results[self.results["attack"] != "worst_case"] if not self.results.empty else self.results
            try:
                cache = worst_case_frames(self.run_dir, base)
            except Exception as exc:  # noqa: BLE001 - report what is readable, say what is not
                log.warning("%s: worst case not rebuilt from the per-sample files (%s)", self.name, exc)
                cache = {}
            self.__dict__["_worst_frames"] = cache
        cid = str(row["cell_id"])
        if cid not in cache:
            return None
        base = cache[cid][1].copy()
        robust = base["robust"].astype(bool).to_numpy()
        base["attacked"] = True
        base["fooled_any"] = ~robust
        return base

    def adv_path(self, cell_id: str) -> Path:
        return adv_file(self.run_dir, cell_id)


def _members(value) -> list[str]:
    """Member cell ids of a worst-case row: a list, or one ``;``-separated string."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str) and value:
        return value.split(";")
    return []


#: Columns of the robust-accuracy results; results of older runs lack them (filled with nan
#: here, then from the per-sample files by :func:`seradv.report.analysis.attack_stats`).
ROBUST_COLUMNS = ("robust_accuracy", "n_clean_correct", "n_not_attacked", "success_rate")


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, dtype={"utterance": str, "speaker": str}) if path.exists() else None


def _subset_label(run_dir: Path, key: str, seed: int) -> str:
    if key == "all":
        return f"full test set, seed {seed}"
    f = subset_file(run_dir, key)
    if f.exists():
        d = read_json(f)
        return f"seeded subset of {d['limit']}, seed {d['seed']}"
    return f"subset {key}, seed {seed}"


def _read_results(run_dir: Path) -> tuple[pd.DataFrame, dict[str, dict], list[str]]:
    notes: list[str] = []
    folder = cells_dir(run_dir)
    cells: dict[str, dict] = {}
    rows: list[dict] = []
    fingerprint = run_fingerprints(run_dir)
    skipped = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        cell, why = read_cell(f, fingerprint)  # intact and computed on this model and data only
        if cell is None:
            skipped.append(f"{f.name} ({why})")
            continue
        cells[cell["cell_id"]] = cell
        rows += cell["rows"]
    if skipped:
        notes.append(f"{len(skipped)} attack cell(s) left out: " + "; ".join(skipped)
                     + "; `seradv attack` recomputes them")
        log.warning("%s: %s", run_dir, notes[-1])
    table = pd.DataFrame(rows)
    if table.empty:
        return table, cells, notes
    if "early_stop" not in table:
        table["early_stop"] = False
    table["early_stop"] = table["early_stop"].fillna(False).astype(bool)
    table = with_precision_column(table)
    subset = {cid: _subset_label(run_dir, c.get("subset", "all"), int(c.get("seed", 0))) for cid, c in cells.items()}
    table["subset"] = table["cell_id"].map(subset)
    table["members"] = [[c] for c in table["cell_id"]]
    for col in ROBUST_COLUMNS:
        if col not in table:
            table[col] = np.nan
    wc = worst_case(run_dir, table)
    if not wc.empty:
        wc = wc.copy()
        wc["early_stop"] = False
        wc["precision"] = "fp32"
        members = [_members(m) for m in wc["members"]]  # never empty: worst_case names them
        subsets = [subset.get(cids[0], "") if cids else "" for cids in members]
        wc["members"] = members
        wc["subset"] = subsets
        for col in ROBUST_COLUMNS:
            if col not in wc:
                wc[col] = np.nan
        table = pd.concat([table, wc], ignore_index=True)
    csv = attacks_dir(run_dir) / RESULTS_CSV
    if csv.exists():
        try:
            old = pd.read_csv(csv, usecols=["cell_id"])
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            old = pd.DataFrame({"cell_id": []})  # derived: rewritten by the next `seradv attack`
        missing = sorted(set(table["cell_id"]) - set(old["cell_id"]))
        if missing:
            notes.append(f"{len(missing)} finished cell(s) are not yet in results.csv (a grid still "
                         f"running?); this report reads attacks/cells/ directly")
    return table, cells, notes


def _load_cv_run(run_dir: Path) -> RunData:
    """A speaker-fold CV run as one :class:`RunData` (pooled metrics and cells; see the module text)."""
    folds = fold_run_dirs(run_dir)
    infos = [read_preprocessing(d) for d in folds]
    metrics = _read_csv(run_dir / METRICS_CSV)
    if metrics is None or "fold" not in metrics:
        raise RunDirError(f"{run_dir} has no pooled metrics.csv; run `seradv evaluate {run_dir}` first")
    metrics = metrics[metrics["fold"].astype(str) == "pooled"].drop(columns="fold").reset_index(drop=True)
    counts = [{"fold": k, **c} for k, i in enumerate(infos, start=1) for c in (i.counts or [])]
    clip = [min(i.clip[0] for i in infos), max(i.clip[1] for i in infos)]  # each fold has its own box
    info = dataclasses.replace(infos[0], counts=counts, clip_values=clip, leak_note=(
        f"speaker-independent: {len(folds)}-fold speaker cross-validation, the folds' test sets pooled (every "
        "speaker tested once); validation utterances of the training speakers"))
    table, frames = pool_folds(folds)
    notes: list[str] = []
    if not table.empty:
        table["early_stop"] = table["early_stop"].fillna(False).astype(bool) if "early_stop" in table else False
        table = with_precision_column(table)
        table["subset"] = [f"full test sets of {len(folds)} folds, seed {s}" if sub == "all"
                           else f"seeded subsets ({sub}), seed {s}" for sub, s in zip(table["subset"], table["seed"])]
        table["members"] = [[c] for c in table["cell_id"]]
        for col in ROBUST_COLUMNS:
            if col not in table:
                table[col] = np.nan
        partial = table.loc[table["folds"].astype(str).str.count(";") + 1 < len(folds), "cell_id"].unique()
        if len(partial):
            notes.append(f"{len(partial)} pooled attack cell(s) hold fewer than {len(folds)} folds; "
                         f"`seradv attack {run_dir}` computes the others")
    model_meta = read_json(folds[0] / MODEL_META) if (folds[0] / MODEL_META).exists() else None
    if model_meta is not None:
        model_meta = {**model_meta, "folds": len(folds)}
    return RunData(run_dir=run_dir, info=info, metrics=metrics, confusion=_read_csv(run_dir / CONFUSION),
                   predictions=_read_csv(run_dir / PREDICTIONS), model_meta=model_meta, results=table, cells={},
                   trust=_read_csv(attacks_dir(run_dir) / TRUST_CSV), notes=notes, pooled=frames)


def load_run(run_dir: str | Path) -> RunData:
    """Read one run directory (prepared, trained and evaluated; attacks optional)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    if is_cv_run(run_dir):
        return _load_cv_run(run_dir)
    info = read_preprocessing(run_dir)
    metrics = _read_csv(run_dir / METRICS_CSV)
    if metrics is None:
        raise RunDirError(f"{run_dir} has no metrics.csv; run `seradv evaluate {run_dir}` first")
    results, cells, notes = _read_results(run_dir)
    trust = _read_csv(attacks_dir(run_dir) / TRUST_CSV)
    model_meta = read_json(run_dir / MODEL_META) if (run_dir / MODEL_META).exists() else None
    return RunData(run_dir=run_dir, info=info, metrics=metrics,
                   confusion=_read_csv(run_dir / CONFUSION),
                   predictions=_read_csv(run_dir / PREDICTIONS), model_meta=model_meta,
                   results=results, cells=cells, trust=trust, notes=notes)


def _source_label(corpus: str, language: str) -> str:
    return f"{corpus} ({language})"


def load_runs(run_dirs) -> list[RunData]:
    """Read several runs and label their sources (corpus and language) uniquely."""
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise RunDirError(f"run directories must have distinct folder names, got {names}")
    seen: dict[str, int] = {}
    for r in runs:
        for c, lang in r.metrics[["corpus", "language"]].drop_duplicates().itertuples(index=False):
            seen[_source_label(c, lang)] = seen.get(_source_label(c, lang), 0) + 1
    for r in runs:
        def label(c: str, lang: str, run: RunData = r) -> str:
            base = _source_label(c, lang)
            return base if seen.get(base, 0) <= 1 else f"{base} [{run.name}]"

        r.metrics = r.metrics.assign(source=[label(c, lg) for c, lg in zip(r.metrics["corpus"], r.metrics["language"])])
        if r.confusion is not None:
            r.confusion = r.confusion.assign(
                source=[label(c, lg) for c, lg in zip(r.confusion["corpus"], r.confusion["language"])])
        if r.predictions is not None:
            r.predictions = r.predictions.assign(
                source=[label(c, lg) for c, lg in zip(r.predictions["corpus"], r.predictions["language"])])
        if not r.results.empty:
            res = r.results.assign(
                run=r.name,
                source=[label(c, lg) for c, lg in zip(r.results["corpus"], r.results["language"])])
            res["series"] = [
                f"{b} backend, {s}" + (", early stop" if e else "") + (f", {p}" if p != "fp32" else "")
                for b, s, e, p in zip(res["backend"], res["subset"], res["early_stop"],
                                      with_precision_column(res)["precision"])
            ]
            r.results = res
    return runs
