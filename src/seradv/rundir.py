"""What a run directory holds, which outputs depend on which, and fingerprints of its inputs.

Stages and their outputs, each depending on everything before it:

* prepare: :data:`seradv.dataset.PREPARATION_FILES` (``config.yaml`` ... ``preprocessing.json``);
* train: :data:`TRAIN_OUTPUTS` (weights, their metadata, history, the resumable state);
* evaluate: :data:`EVAL_OUTPUTS`;
* attack and report: :data:`ATTACK_OUTPUTS` (the ``attacks/`` and ``report/`` folders).

A changed preparation makes every later output stale (:func:`remove_outputs` with
``PREPARE_DOWNSTREAM``); a new model makes the metrics, attack results and report stale
(``TRAIN_DOWNSTREAM``). :func:`run_fingerprints` gives sha256 fingerprints of the model
weights and of the preparation, for results that must be reused only when both still match.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file

from seradv.fileio import read_json
from seradv.config import RunConfig, load_config
from seradv.dataset import _check_sha256, _damaged
from seradv.errors import ModelError, RunDirError
from seradv.models import build_model
from seradv.training import select_device

__all__ = [
    "TRAIN_OUTPUTS",
    "EVAL_OUTPUTS",
    "ATTACK_OUTPUTS",
    "PREPARE_DOWNSTREAM",
    "TRAIN_DOWNSTREAM",
    "PREPROCESSING_FINGERPRINT_FILES",
    "run_fingerprints",
    "remove_outputs",
    "load_run_config",
    "load_model",
    "run_logging",
]

TRAIN_OUTPUTS = ("train_state.pt", "model.safetensors", "model.json", "history.csv")
EVAL_OUTPUTS = ("metrics.csv", "metrics.json", "confusion.csv", "predictions.csv")
ATTACK_OUTPUTS = ("attacks", "report")
PREPARE_DOWNSTREAM = TRAIN_OUTPUTS + EVAL_OUTPUTS + ATTACK_OUTPUTS
"""Outputs that a changed preparation makes stale."""
TRAIN_DOWNSTREAM = EVAL_OUTPUTS + ATTACK_OUTPUTS
"""Outputs that a newly trained model makes stale."""

PREPROCESSING_FINGERPRINT_FILES = ("preprocessing.json", "segments.csv", "standardizer.safetensors")
"""The files whose bytes make the ``preprocessing`` fingerprint (features, split, labels,
standardization: everything a model's input depends on)."""


def _sha256_files(paths: list[Path]) -> str | None:
    if not all(p.is_file() for p in paths):
        return None
    h = hashlib.sha256()
    for p in paths:
        data = p.read_bytes()
        h.update(p.name.encode() + b"\0" + len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def run_fingerprints(run_dir: str | Path) -> dict[str, str | None]:
    """sha256 fingerprints of a run directory's model and preparation.

    Returns ``{"model": sha256 of model.safetensors, "preprocessing": sha256 over
    preprocessing.json + segments.csv + standardizer.safetensors}``; a value is ``None`` when its
    files are absent. Equal fingerprints mean byte-identical weights / model inputs.
    """
    run_dir = Path(run_dir)
    model = run_dir / "model.safetensors"
    return {
        "model": _sha256_files([model]),
        "preprocessing": _sha256_files([run_dir / f for f in PREPROCESSING_FINGERPRINT_FILES]),
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


@contextlib.contextmanager
def run_logging(run_dir: str | Path) -> Iterator[None]:
    """Append seradv's log records to ``run_dir/log.txt`` while the block runs."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("seradv")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()



def load_run_config(run_dir: str | Path) -> RunConfig:
    """The ``config.yaml`` of a run directory."""
    path = Path(run_dir) / "config.yaml"
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
    meta_path, weights = run_dir / "model.json", run_dir / "model.safetensors"
    if not meta_path.exists() or not weights.exists():
        raise RunDirError(f"{run_dir} has no trained model (model.safetensors); run `seradv train {run_dir}`")
    try:
        meta = read_json(meta_path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(_damaged(meta_path, f"not valid JSON: {exc}", "train")) from None
    need = ("model", "n_classes", "hyperparameters")
    if not isinstance(meta, dict) or any(k not in meta for k in need):
        raise RunDirError(_damaged(meta_path, f"lacks one of {', '.join(need)}", "train"))
    _check_sha256(weights, meta.get("weights_sha256"), "train")
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
        raise RunDirError(_damaged(weights, f"{type(exc).__name__}: {exc}", "train")) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights in {weights} do not fit {type(model).__name__}: {exc}") from None
    return model.to(dev).eval()
