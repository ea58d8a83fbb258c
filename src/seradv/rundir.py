"""The run directory: its layout, the records it holds, which outputs depend on which.

The only module that knows the run directory's file names (:data:`PREPARATION_FILES`,
:data:`TRAIN_OUTPUTS`, :data:`EVAL_OUTPUTS`, the ``attacks/`` layout), and that reads its
shared records: the resolved config (:func:`load_run_config`), the preprocessing record
(:class:`Preprocessing`, ``preprocessing.json``), the trained model (:func:`load_model`).

Stages and their outputs, each depending on everything before it:

* prepare: :data:`PREPARATION_FILES` (``manifest.csv`` ... ``preprocessing.json``, ``config.yaml``);
* train: :data:`TRAIN_OUTPUTS` (weights, their metadata, history, the resumable state);
* evaluate: :data:`EVAL_OUTPUTS`;
* attack and report: :data:`ATTACK_OUTPUTS` (the ``attacks/`` and ``report/`` folders).

A speaker-fold cross-validation run (split ``speaker_cv``) keeps ``config.yaml``,
``manifest.csv``, ``skipped.csv`` and ``folds.csv`` (speaker -> fold) at its top and one
ordinary run directory per fold, ``folds/fold-1/`` ... (:func:`fold_run_dirs`,
:func:`is_cv_run`); its top-level ``metrics.*``, ``predictions.csv``, ``confusion.csv`` and
``attacks/results.csv`` pool the folds.

A changed preparation makes every later output stale (:func:`remove_outputs` with
``PREPARE_DOWNSTREAM``); a new model makes the metrics, attack results and report stale
(``TRAIN_DOWNSTREAM``). :func:`run_fingerprints` gives sha256 fingerprints of the model
weights and of the preparation, for results that must be reused only when both still match.
:func:`run_logging` and :func:`deferred_logging` append a stage's log to ``log.txt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
from safetensors.torch import load_file

from seradv.fileio import json_default, read_json
from seradv.config import RunConfig, load_config
from seradv.errors import ModelError, RunDirError
from seradv.models import build_model
from seradv.training import select_device

__all__ = [
    "PREPARATION_FILES",
    "TRAIN_OUTPUTS",
    "EVAL_OUTPUTS",
    "ATTACK_OUTPUTS",
    "PREPARE_DOWNSTREAM",
    "TRAIN_DOWNSTREAM",
    "PREPROCESSING_FINGERPRINT_FILES",
    "Preprocessing",
    "read_preprocessing",
    "preparation_fingerprint",
    "run_fingerprints",
    "remove_outputs",
    "load_run_config",
    "load_model",
    "run_logging",
    "deferred_logging",
    "damaged_message",
    "check_sha256",
    "CV_FILES",
    "FOLDS_CSV",
    "fold_dir",
    "fold_run_dirs",
    "is_cv_run",
]

# ------------------------------------------------------------------------------ file names

CONFIG = "config.yaml"
MANIFEST = "manifest.csv"
SKIPPED = "skipped.csv"
SPLIT = "split.csv"
SEGMENTS = "segments.csv"
STANDARDIZER = "standardizer.safetensors"
PREPROCESSING = "preprocessing.json"
TRAIN_STATE = "train_state.pt"
MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"
HISTORY = "history.csv"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
CONFUSION = "confusion.csv"
PREDICTIONS = "predictions.csv"
LOG = "log.txt"
ATTACKS_DIR = "attacks"
REPORT_DIR = "report"
FOLDS_CSV = "folds.csv"
FOLDS_DIR = "folds"

# inside attacks/ (see :mod:`seradv.grid.run`)
CELLS_DIR = "cells"
ADV_DIR = "adv"
WAV_DIR = "wav"
SUBSETS_DIR = "subsets"
CELL_SUFFIX = ".json"
SAMPLES_SUFFIX = ".samples.csv"
LOCK_SUFFIX = ".lock"
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
TRUST_CSV = "trust.csv"
TRUST_JSON = "trust.json"
GRID_YAML = "grid.yaml"

PREPARATION_FILES = (MANIFEST, SKIPPED, SPLIT, SEGMENTS, STANDARDIZER, PREPROCESSING, CONFIG)
"""The files the prepare stage writes into a run directory, in writing order (``config.yaml``
last, so a run directory never names a config whose outputs are absent)."""
TRAIN_OUTPUTS = (TRAIN_STATE, MODEL_WEIGHTS, MODEL_META, HISTORY)
EVAL_OUTPUTS = (METRICS_CSV, METRICS_JSON, CONFUSION, PREDICTIONS)
ATTACK_OUTPUTS = (ATTACKS_DIR, REPORT_DIR)
PREPARE_DOWNSTREAM = TRAIN_OUTPUTS + EVAL_OUTPUTS + ATTACK_OUTPUTS
"""Outputs that a changed preparation makes stale."""
TRAIN_DOWNSTREAM = EVAL_OUTPUTS + ATTACK_OUTPUTS
"""Outputs that a newly trained model makes stale."""

CV_FILES = (MANIFEST, SKIPPED, FOLDS_CSV, CONFIG)
"""The files the prepare stage writes at the top of a speaker-fold CV run (``config.yaml``
last), beside the fold run directories under ``folds/``."""

PREPROCESSING_FINGERPRINT_FILES = (PREPROCESSING, SEGMENTS, STANDARDIZER)
"""The files whose bytes make the ``preprocessing`` fingerprint (features, split, labels,
standardization: everything a model's input depends on)."""


def attacks_dir(run_dir: str | Path) -> Path:
    """``run_dir/attacks``: the grid's results."""
    return Path(run_dir) / ATTACKS_DIR


def cells_dir(run_dir: str | Path) -> Path:
    """``run_dir/attacks/cells``: one JSON, one per-sample CSV and one lock per cell."""
    return attacks_dir(run_dir) / CELLS_DIR


def cell_file(run_dir: str | Path, cell_id: str, suffix: str = CELL_SUFFIX) -> Path:
    """``attacks/cells/<cell_id><suffix>`` (:data:`CELL_SUFFIX`, :data:`SAMPLES_SUFFIX`, :data:`LOCK_SUFFIX`)."""
    return cells_dir(run_dir) / f"{cell_id}{suffix}"


def samples_file_of(cell_json: Path) -> Path:
    """The per-sample file beside a cell's JSON file."""
    return cell_json.with_name(cell_json.name[: -len(CELL_SUFFIX)] + SAMPLES_SUFFIX)


def adv_file(run_dir: str | Path, cell_id: str) -> Path:
    """``attacks/adv/<cell_id>.npy``: a cell's perturbations (float16)."""
    return attacks_dir(run_dir) / ADV_DIR / f"{cell_id}.npy"


def wav_dir(run_dir: str | Path, cell_id: str) -> Path:
    """``attacks/wav/<cell_id>/``: a waveform cell's adversarial segments as 16-bit WAVs."""
    return attacks_dir(run_dir) / WAV_DIR / cell_id


def subset_file(run_dir: str | Path, key: str) -> Path:
    """``attacks/subsets/<key>.json``: the segment ids of a seeded subset."""
    return attacks_dir(run_dir) / SUBSETS_DIR / f"{key}.json"


# ------------------------------------------------------------------------------ speaker-fold CV runs


def fold_dir(run_dir: str | Path, fold: int) -> Path:
    """``run_dir/folds/fold-<fold>``: one fold of a CV run, an ordinary run directory."""
    return Path(run_dir) / FOLDS_DIR / f"fold-{int(fold)}"


def is_cv_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` is a speaker-fold cross-validation run (it has ``folds.csv``)."""
    return (Path(run_dir) / FOLDS_CSV).is_file()


def fold_run_dirs(run_dir: str | Path) -> list[Path]:
    """The fold run directories of a CV run, fold 1 first (the folds ``folds.csv`` names)."""
    path = Path(run_dir) / FOLDS_CSV
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a speaker-fold CV run (no {FOLDS_CSV}); "
                          f"prepare it with `seradv prepare CORPUS --split speaker_cv -o {run_dir}`")
    try:
        folds = sorted({int(f) for f in pd.read_csv(path, dtype={"speaker": str})["fold"]})
    except (ValueError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RunDirError(damaged_message(path, exc, "prepare")) from None
    if not folds or folds != list(range(1, len(folds) + 1)):
        raise RunDirError(damaged_message(path, f"folds {folds} are not 1..K", "prepare"))
    return [fold_dir(run_dir, k) for k in folds]


# ------------------------------------------------------------------------------ damaged files


def damaged_message(path: Path, why: object, stage: str) -> str:
    """One-line message for a damaged run-directory file and the stage that rewrites it."""
    why = " ".join(str(why).split())
    fix = (f"run `seradv train {path.parent}` again" if stage == "train"
           else f"run `seradv {stage}` again with this run's config")
    return f"{path} is damaged ({why}); {fix} to rewrite it"


def check_sha256(path: Path, expected: str | None, stage: str) -> bytes:
    """The bytes of ``path``; a clear error if it is missing or its sha256 is not ``expected``."""
    if not path.exists():
        raise RunDirError(f"{path} is missing; run `seradv {stage}` again")
    data = path.read_bytes()
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise RunDirError(damaged_message(path, "its content does not match the hash recorded when it was "
                                                "written; truncated or edited", stage))
    return data


# ------------------------------------------------------------------------------ preprocessing record


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """The content of ``preprocessing.json``: what the prepare stage decided, fields in file order.

    Written by the prepare stage (:meth:`to_json_bytes`), read by every later one
    (:func:`read_preprocessing`). Only ``classes``, ``split``, ``feature_cache`` and
    ``input_shape`` are required; the others may be ``None`` in run directories written by
    older versions.
    """

    corpus: str | None = None
    language: str | None = None
    languages: list[str] | None = None
    classes: list[str]
    split: str
    leaky: bool | None = None
    leak_note: str | None = None
    utterances_in_several_subsets: int | None = None
    clip_values: list[float] | None = None
    standardization_fitted_on: str | None = None
    min_remainder_samples: int | None = None
    feature_cache: str
    input_shape: list[int]
    counts: list[dict] | None = None
    n_skipped: int | None = None
    preprocessing_version: int | None = None
    segments_sha256: str | None = None
    standardizer_sha256: str | None = None

    @property
    def clip(self) -> tuple[float, float]:
        """The threat model's box ``(lo, hi)`` of the standardized features."""
        lo, hi = self.clip_values
        return float(lo), float(hi)

    def to_dict(self) -> dict[str, Any]:
        """The record as ``preprocessing.json`` holds it (keys in field order)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json_bytes(self) -> bytes:
        """The bytes of ``preprocessing.json``."""
        return (json.dumps(self.to_dict(), indent=2, default=json_default) + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """The record of a parsed ``preprocessing.json`` (keys it does not know are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def read_preprocessing(run_dir: str | Path) -> Preprocessing:
    """``preprocessing.json`` of a prepared run directory (clear error if absent or damaged)."""
    path = Path(run_dir) / PREPROCESSING
    if not path.exists():
        raise RunDirError(
            f"{run_dir} is not a prepared run directory (no preprocessing.json); "
            f"run `seradv prepare CORPUS -o {run_dir}` first"
        )
    try:
        info = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(damaged_message(path, f"not valid JSON: {exc}", "prepare")) from None
    missing = [k for k in ("classes", "feature_cache", "split", "input_shape")
               if not isinstance(info, dict) or k not in info]
    if missing:
        raise RunDirError(damaged_message(path, f"lacks {', '.join(missing)}", "prepare"))
    return Preprocessing.from_dict(info)


# ------------------------------------------------------------------------------ fingerprints, invalidation


def _digest(files: dict[str, bytes] | None, names: tuple[str, ...]) -> str | None:
    """sha256 over ``names`` (in order: name, length, bytes); ``None`` if one is absent."""
    if files is None or any(n not in files for n in names):
        return None
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0" + len(files[name]).to_bytes(8, "little"))
        h.update(files[name])
    return h.hexdigest()


def _read_files(run_dir: Path, names: tuple[str, ...]) -> dict[str, bytes] | None:
    paths = [run_dir / n for n in names]
    if not all(p.is_file() for p in paths):
        return None
    return {p.name: p.read_bytes() for p in paths}


def preparation_fingerprint(run_dir: str | Path | None = None, *,
                            files: dict[str, bytes] | None = None) -> str | None:
    """sha256 of a preparation (:data:`PREPROCESSING_FINGERPRINT_FILES`), read from ``run_dir``
    or taken from ``files`` (name -> bytes); ``None`` if one is absent.

    These three files determine every model input (classes, feature config via the cache
    folder, content hashes, variants, subsets, standardization), so a change of only the
    ``train`` or ``attack`` sections of the config does not make the model stale."""
    if files is None:
        if run_dir is None:
            raise TypeError("preparation_fingerprint needs run_dir or files")
        files = _read_files(Path(run_dir), PREPROCESSING_FINGERPRINT_FILES)
    return _digest(files, PREPROCESSING_FINGERPRINT_FILES)


def run_fingerprints(run_dir: str | Path) -> dict[str, str | None]:
    """sha256 fingerprints of a run directory's model and preparation.

    Returns ``{"model": sha256 of model.safetensors, "preprocessing": sha256 over
    preprocessing.json + segments.csv + standardizer.safetensors}``; a value is ``None`` when its
    files are absent. Equal fingerprints mean byte-identical weights / model inputs.
    """
    run_dir = Path(run_dir)
    return {
        "model": _digest(_read_files(run_dir, (MODEL_WEIGHTS,)), (MODEL_WEIGHTS,)),
        "preprocessing": preparation_fingerprint(run_dir),
    }


def remove_outputs(run_dir: str | Path, names: tuple[str, ...]) -> list[str]:
    """Delete the files or folders ``names`` of ``run_dir`` that exist; return those removed."""
    run_dir = Path(run_dir)
    removed = []
    for name in names:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


# ------------------------------------------------------------------------------ a stage's log

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def _seradv_records(handler: logging.Handler) -> Iterator[None]:
    """seradv's records at INFO and above go to ``handler`` while the block runs."""
    logger = logging.getLogger("seradv")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@contextlib.contextmanager
def run_logging(run_dir: str | Path) -> Iterator[None]:
    """Append seradv's log records to ``run_dir/log.txt`` while the block runs."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / LOG)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    try:
        with _seradv_records(handler):
            yield
    finally:
        handler.close()


@contextlib.contextmanager
def deferred_logging(run_dir: str | Path) -> Iterator[None]:
    """Like :func:`run_logging`, but the records reach ``run_dir/log.txt`` only if the folder
    exists when the block ends, so a failed first ``prepare`` creates nothing."""
    run_dir = Path(run_dir)
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    try:
        with _seradv_records(_Keep()):
            yield
    finally:
        if run_dir.is_dir() and records:
            fmt = logging.Formatter(_LOG_FORMAT)
            try:
                with open(run_dir / LOG, "a") as fh:
                    fh.writelines(fmt.format(r) + "\n" for r in records)
            except OSError:
                pass  # the log must never hide the stage's own error


# ------------------------------------------------------------------------------ config and model


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The ``config.yaml`` of a run directory."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise RunDirError(f"{run_dir} has no config.yaml; is it a seradv run directory?")
    return load_config(path)


def load_model(run_dir: str | Path, *, model: torch.nn.Module | None = None,
               device: str = "cpu") -> torch.nn.Module:
    """The trained model of ``run_dir`` in eval mode.

    For a model that is not in the registry, pass an instance of it as ``model``: its
    weights are loaded from ``model.safetensors`` (strictly: every key must match).
    """
    dev = select_device(str(device))  # a one-line error for cuda without CUDA, before any work
    run_dir = Path(run_dir)
    meta_path, weights = run_dir / MODEL_META, run_dir / MODEL_WEIGHTS
    if not meta_path.exists() or not weights.exists():
        raise RunDirError(f"{run_dir} has no trained model (model.safetensors); run `seradv train {run_dir}`")
    try:
        meta = read_json(meta_path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(damaged_message(meta_path, f"not valid JSON: {exc}", "train")) from None
    need = ("model", "n_classes", "hyperparameters")
    if not isinstance(meta, dict) or any(k not in meta for k in need):
        raise RunDirError(damaged_message(meta_path, f"lacks one of {', '.join(need)}", "train"))
    check_sha256(weights, meta.get("weights_sha256"), "train")
    if model is None:
        if not meta.get("registered", True):
            raise ModelError(
                f"{run_dir} holds weights of the unregistered model {meta['model']!r}; pass an "
                f"instance of it as model= or register it with seradv.models.register_model"
            )
        hyper = meta["hyperparameters"]
        model = build_model(meta["model"], meta["n_classes"], dropout=hyper["dropout"],
                            lstm_dropout=hyper["lstm_dropout"])
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise RunDirError(damaged_message(weights, f"{type(exc).__name__}: {exc}", "train")) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights in {weights} do not fit {type(model).__name__}: {exc}") from None
    return model.to(dev).eval()
