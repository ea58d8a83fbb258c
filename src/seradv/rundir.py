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

import hashlib
import shutil
from pathlib import Path

__all__ = [
    "TRAIN_OUTPUTS",
    "EVAL_OUTPUTS",
    "ATTACK_OUTPUTS",
    "PREPARE_DOWNSTREAM",
    "TRAIN_DOWNSTREAM",
    "PREPROCESSING_FINGERPRINT_FILES",
    "run_fingerprints",
    "remove_outputs",
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
