"""Transferability: adversarial WAVs crafted on one model, played to others (a transfer matrix).

Sources (:func:`source_cells`): a run's finished, current waveform cells (their files
``attacks/wav/<cell_id>/<segment_id>.wav``) and its universal perturbations
(``attacks/universal/snr<..>/wav/``, :mod:`seradv.attacks.waveform.universal`, and their
same-norm random controls ``wav_random/``, attack ``universal_random``). Targets: trained runs,
each classifying the *written files* through its OWN numpy pipeline (its feature settings, its
standardizer, its model: :func:`~seradv.attacks.waveform.realize.numpy_features`), and the
clean segments (cut from the source run's audio, :func:`~seradv.attacks.waveform.segments.segment_waveforms`)
the same way.

Counted segments: only those whose utterance the target neither trained nor validated on
(its ``segments.csv``, subsets ``train`` and ``val``, also by content hash where recorded, so
a copy of a training file under another name is excluded too) and whose emotion is one of the
target's classes; ``n`` says how many, ``n_excluded`` how many were left out. On the diagonal
(target = source) every test segment counts and ``robust_acc_target`` is the source cell's own
robust accuracy on its written files.

Per (source cell, target) row: ``source_run``, ``cell_id``, ``attack``, ``params``,
``target_run``, ``n``, ``n_excluded``, ``clean_acc_target`` (target correct on the clean
segment), ``robust_acc_target`` (correct on the clean segment and on the file),
``fooling_rate_target`` (of the target's clean-correct segments, the share the file fools),
``source_robust_acc`` (the source's own verdict on the same ``n`` segments). A speaker-fold CV
run stands for its folds. Both runs need the same sample rate and segment length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from torch import nn

from seradv.attacks import ATTACKS
from seradv.attacks.waveform.realize import numpy_features, read_wavs
from seradv.attacks.waveform.segments import segment_waveforms
from seradv.attacks.waveform.universal import FACTS_JSON, RANDOM_SUBDIR, SAMPLES_CSV, UNIVERSAL_DIR, WAV_SUBDIR
from seradv.config import FeatureConfig
from seradv.errors import ParameterError
from seradv.evaluation import predict_logits
from seradv.features import Standardizer
from seradv.fileio import atomic_write_text, read_json
from seradv.grid.results import read_cell, read_samples
from seradv.prepare import read_segments, read_standardizer
from seradv.report.plots import summary_heatmap
from seradv.rundir import (attacks_dir, cells_dir, fold_run_dirs, is_cv_run, load_model, load_run_config,
                           read_preprocessing, run_fingerprints, samples_file_of, wav_dir)

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "SourceCell", "Target", "run_labels", "source_cells", "transfer_figure", "transfer_matrix"]

COLUMNS = ("source_run", "cell_id", "attack", "params", "target_run", "n", "n_excluded", "clean_acc_target",
           "robust_acc_target", "fooling_rate_target", "source_robust_acc")
"""The transfer table's columns, in order."""

EXCLUDED_SUBSETS = ("train", "val")


@dataclass
class SourceCell:
    """One source of adversarial files: ``wav_dir/<segment_id>.wav`` for each row of ``samples``
    (columns ``segment_id``, ``utterance``, ``variant``, ``seg_index``, ``emotion``, ``robust``)."""

    run: Path
    cell_id: str
    attack: str
    params: str
    wav_dir: Path
    samples: pd.DataFrame


@dataclass
class Target:
    """A target run's classifier: its model, numpy pipeline settings, classes and unseen-utterance rule."""

    run: Path
    model: nn.Module
    sample_rate: int
    n_samples: int
    features: FeatureConfig
    standardizer: Standardizer
    classes: list[str]
    seen_utterances: frozenset[str]
    seen_contents: frozenset[str]

    @classmethod
    def load(cls, run: Path, device: str = "cpu") -> "Target":
        cfg = load_run_config(run)
        info = read_preprocessing(run)
        segs = read_segments(run, info)
        seen = segs[segs["subset"].isin(EXCLUDED_SUBSETS)]
        contents = frozenset(seen["content"].dropna().astype(str)) if "content" in seen else frozenset()
        return cls(run=run, model=load_model(run, device=device), sample_rate=cfg.audio.sample_rate,
                   n_samples=cfg.audio.segment_samples, features=cfg.features,
                   standardizer=read_standardizer(run, info), classes=list(info.classes),
                   seen_utterances=frozenset(seen["utterance"].astype(str)), seen_contents=contents)

    def unseen(self, samples: pd.DataFrame) -> np.ndarray:
        """``[shape=(len(samples),)]`` bool: the utterance (and its content) is not in the target's
        train or val subsets, and the emotion is one of its classes."""
        keep = ~samples["utterance"].astype(str).isin(self.seen_utterances).to_numpy()
        if "content" in samples and self.seen_contents:
            keep &= ~samples["content"].astype(str).isin(self.seen_contents).to_numpy()
        return keep & samples["emotion"].astype(str).isin(self.classes).to_numpy()

    def labels(self, samples: pd.DataFrame) -> np.ndarray:
        """The target's class index of each row's emotion ``[shape=(n,)]`` int64."""
        return np.array([self.classes.index(e) for e in samples["emotion"].astype(str)], np.int64)

    def predict(self, waves: np.ndarray, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
        """Top class ``[shape=(n,)]`` of waveforms ``[shape=(n, n_samples)]`` through the target's own pipeline."""
        x = numpy_features(waves, sample_rate=self.sample_rate, features=self.features,
                           standardizer=self.standardizer)
        return predict_logits(self.model, x, batch_size=batch_size, device=device).argmax(1).astype(np.int64)


def _expand(runs: Iterable[str | Path]) -> list[Path]:
    """Run directories, a speaker-fold CV run replaced by its folds."""
    out: list[Path] = []
    for r in runs:
        r = Path(r)
        out += fold_run_dirs(r) if is_cv_run(r) else [r]
    if not out:
        raise ParameterError("no run directories given")
    return out


def run_labels(runs: list[Path]) -> dict[Path, str]:
    """The shortest path suffix (1, 2, ... components) that tells the runs apart: ``{run: label}``."""
    runs = [Path(r).resolve() for r in runs]
    depth = max(len(r.parts) for r in runs)
    for k in range(1, depth + 1):
        labels = ["/".join(r.parts[-k:]) for r in runs]
        if len(set(labels)) == len(set(runs)):
            return dict(zip(runs, labels))
    return {r: str(r) for r in runs}


def _segment_columns(run: Path, samples: pd.DataFrame) -> pd.DataFrame:
    """``samples`` with ``variant``, ``seg_index`` and ``content`` from the run's ``segments.csv``."""
    segs = read_segments(run)
    cols = [c for c in ("segment_id", "variant", "seg_index", "content") if c in segs]
    extra = [c for c in cols if c != "segment_id" and c not in samples]
    return samples.merge(segs[["segment_id", *extra]], on="segment_id", how="left", validate="one_to_one")


def source_cells(run: str | Path) -> list[SourceCell]:
    """A run's sources: finished, current waveform grid cells, then universal perturbations
    (and their random controls), each with its per-segment rows."""
    run = Path(run)
    fingerprint = run_fingerprints(run)
    out: list[SourceCell] = []
    for path in sorted(cells_dir(run).glob("*.json")):
        cell, _ = read_cell(path, fingerprint)
        if cell is None:
            continue
        row = cell["rows"][0]
        spec = ATTACKS.get(row["attack"])
        folder = wav_dir(run, path.stem)
        if spec is None or spec.input != "waveform" or not folder.is_dir():
            continue
        samples = read_samples(samples_file_of(path))
        out.append(SourceCell(run, path.stem, row["attack"], str(row["params"]), folder,
                              _segment_columns(run, samples)))
    for facts_path in sorted((attacks_dir(run) / UNIVERSAL_DIR).glob(f"*/{FACTS_JSON}")):
        folder = facts_path.parent
        try:
            facts = read_json(facts_path)
        except (ValueError, UnicodeDecodeError):
            continue
        if facts.get("fingerprint") != fingerprint:
            log.warning("%s was computed on another model or preparation; left out", folder)
            continue
        samples = _segment_columns(run, read_samples(folder / SAMPLES_CSV))
        params = f"snr={facts['settings']['snr_db']:g}"
        out.append(SourceCell(run, folder.name, "universal", params, folder / WAV_SUBDIR, samples))
        rnd = samples.assign(robust=(samples["pred_clean"] == samples["label"])
                             & (samples["pred_random"] == samples["label"]))
        out.append(SourceCell(run, f"{folder.name}-random", "universal_random", params, folder / RANDOM_SUBDIR, rnd))
    return out


def _cell_row(cell: SourceCell, target: Target, clean_pred: dict[int, int], labels: dict[Path, str], *,
              device: str, batch_size: int) -> dict:
    keep = target.unseen(cell.samples)
    part = cell.samples[keep].reset_index(drop=True)
    row = {"source_run": labels[cell.run.resolve()], "cell_id": cell.cell_id, "attack": cell.attack,
           "params": cell.params, "target_run": labels[target.run.resolve()], "n": int(len(part)),
           "n_excluded": int((~keep).sum())}
    if part.empty:
        return {**row, "clean_acc_target": np.nan, "robust_acc_target": np.nan, "fooling_rate_target": np.nan,
                "source_robust_acc": np.nan}
    y = target.labels(part)
    waves = read_wavs([cell.wav_dir / f"{s}.wav" for s in part["segment_id"]], sample_rate=target.sample_rate)
    if waves.shape[1] != target.n_samples:
        raise ParameterError(f"{cell.wav_dir}: segments of {waves.shape[1]} samples, {target.run} expects "
                             f"{target.n_samples}")
    adv = target.predict(waves, device=device, batch_size=batch_size)
    clean = np.array([clean_pred[int(s)] for s in part["segment_id"]], np.int64)
    ok = clean == y
    return {**row, "clean_acc_target": float(ok.mean()), "robust_acc_target": float(np.mean(ok & (adv == y))),
            "fooling_rate_target": float(np.mean(adv[ok] != y[ok])) if ok.any() else np.nan,
            "source_robust_acc": float(part["robust"].astype(bool).mean())}


def transfer_matrix(source_runs: Iterable[str | Path], target_runs: Iterable[str | Path], *,
                    attacks: Iterable[str] | None = None, out: str | Path | None = None, device: str = "cpu",
                    batch_size: int = 64) -> pd.DataFrame:
    """The transfer table (module docstring), one row per (source cell, target); also written to ``out`` (CSV).

    Parameters
    ----------
    source_runs, target_runs : run directories (a CV run stands for its folds)
    attacks : names or None
        Only these source attacks (``universal`` and ``universal_random`` included); ``None``: all.
    out : path or None
        Where the CSV goes (atomically).
    device, batch_size : of the targets' classification
    """
    sources, targets = _expand(source_runs), _expand(target_runs)
    labels = run_labels(sources + targets)
    wanted = None if attacks is None else set(attacks)
    loaded = {t: Target.load(t, device=device) for t in dict.fromkeys(targets)}
    rows = []
    for src in dict.fromkeys(sources):
        cells = [c for c in source_cells(src) if wanted is None or c.attack in wanted]
        if not cells:
            log.warning("%s has no waveform cells or universal perturbations to transfer", src)
            continue
        union = pd.concat([c.samples for c in cells]).drop_duplicates("segment_id").reset_index(drop=True)
        clean_waves = segment_waveforms(src, union)
        audio = load_run_config(src).audio
        for target in loaded.values():
            if (target.sample_rate, target.n_samples) != (audio.sample_rate, audio.segment_samples):
                raise ParameterError(f"{src} and {target.run} differ in sample rate or segment length; transfer "
                                     f"needs the same")
            preds = target.predict(clean_waves, device=device, batch_size=batch_size)
            clean_pred = dict(zip(union["segment_id"].astype(int), preds.tolist()))
            rows += [_cell_row(c, target, clean_pred, labels, device=device, batch_size=batch_size) for c in cells]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if out is not None:
        atomic_write_text(Path(out), table.to_csv(index=False))
    return table


FIGURE_TITLE = "Transfer: the target's robust accuracy (rows: source run: attack; columns: target run)"


def transfer_figure(table: pd.DataFrame, path: str | Path, *, title: str = FIGURE_TITLE) -> Path:
    """Heatmap of ``robust_acc_target``: one row per source cell (source run: attack params), one
    column per target run, each cell with its value and n (:func:`seradv.report.plots.summary_heatmap`)."""
    if table.empty:
        raise ParameterError("the transfer table is empty: nothing to draw")
    grid = pd.DataFrame({
        "row": [f"{r.source_run}: {r.attack} {r.params}" for r in table.itertuples()],
        "column": table["target_run"].astype(str).to_numpy(),
        "value": table["robust_acc_target"].to_numpy(float), "n": table["n"].to_numpy(int)})
    return summary_heatmap(grid, Path(path), title=title, group_every=None)
