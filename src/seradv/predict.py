"""``seradv predict``: the emotion a trained model assigns to any audio file.

Each file goes the way a corpus utterance goes through ``seradv prepare`` (without
augmentation): :func:`seradv.audio.read_audio` (every format libsndfile reads, mono or
multi-channel downmixed, any sample rate), :func:`seradv.segments.resample` to the run's rate,
:func:`seradv.segments.trim`, :func:`seradv.segments.segment` with the run's recorded
``min_remainder_samples`` (3 s segments, each trimmed again, short ones looped),
:func:`seradv.features.log_mel`, the run's :class:`~seradv.features.Standardizer`, and the
run's model (:func:`seradv.rundir.load_model`). Per segment: the class probabilities (softmax of
the logits); per file: the mean probabilities over its segments and the class with the highest
mean probability.

A file that cannot be used (missing, empty, corrupt, silent, too short) gets the one-line
:class:`~seradv.errors.AudioError` message the corpus recipes give; :func:`predict_files`
records it and goes on with the next file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from seradv.audio import read_audio
from seradv.errors import AudioError, ParameterError, RunDirError
from seradv.evaluation import predict_logits, softmax
from seradv.features import log_mel
from seradv.fileio import atomic_write_bytes
from seradv.prepare import read_standardizer
from seradv.rundir import is_cv_run, load_model, load_run_config, read_preprocessing
from seradv.segments import resample, segment, trim

__all__ = ["Predictor", "Prediction", "predict_files", "write_prediction", "OUTPUT_SUFFIXES"]

OUTPUT_SUFFIXES = (".csv", ".json")
"""What ``--output`` may end with: per-file CSV (per-segment rows in ``<stem>.segments.csv``) or one JSON."""


@dataclass
class Prediction:
    """The result of :func:`predict_files`."""

    classes: list[str]
    files: pd.DataFrame
    """One row per readable file: ``file``, ``segments``, ``predicted``, ``confidence`` (the
    predicted class's mean probability), ``p_<class>`` (mean probabilities)."""
    segments: pd.DataFrame
    """One row per segment: ``file``, ``segment`` (0-based), ``predicted``, ``confidence``, ``p_<class>``."""
    errors: list[tuple[str, str]] = field(default_factory=list)
    """``(file, one-line message)`` of every file that could not be used."""


class Predictor:
    """A trained run's segmentation, features, standardizer and model, loaded once.

    Parameters
    ----------
    run_dir : path
        A trained (ordinary, not speaker-fold CV) run directory.
    device : str
        cpu, cuda, cuda:N.
    batch_size : int
        Segments per forward pass.
    """

    def __init__(self, run_dir: str | Path, *, device: str = "cpu", batch_size: int = 64) -> None:
        run_dir = Path(run_dir)
        if is_cv_run(run_dir):
            raise RunDirError(f"{run_dir} is a speaker-fold CV run with one model per fold; pass one "
                              f"fold's directory, e.g. {run_dir / 'folds' / 'fold-1'}")
        if batch_size < 1:
            raise ParameterError(f"batch_size={batch_size} must be an integer >= 1")
        self.run_dir = run_dir
        self.cfg = load_run_config(run_dir)
        self.info = read_preprocessing(run_dir)
        self.classes = list(self.info.classes)
        self.scaler = read_standardizer(run_dir, self.info)
        self.model = load_model(run_dir, device=device)
        self.device = device
        self.batch_size = int(batch_size)
        if self.info.min_remainder_samples is not None:
            self.min_remainder = int(self.info.min_remainder_samples)
        elif self.cfg.audio.min_remainder_s is not None:
            self.min_remainder = int(round(self.cfg.audio.min_remainder_s * self.cfg.audio.sample_rate))
        else:
            raise RunDirError(f"{run_dir / 'preprocessing.json'} records no min_remainder_samples; run "
                              f"`seradv prepare` again with this run's config to record it")

    def segments(self, path: str | Path) -> np.ndarray:
        """The 3 s segments ``[shape=(n_segments, segment_samples)]`` of one file, as prepare cuts them.

        Raises :class:`AudioError` (one line naming the file) for a file that gives none.
        """
        audio = self.cfg.audio
        y, sr = read_audio(path)
        y = resample(y, sr, audio.sample_rate)
        y = trim(y, audio, where=str(path))
        segs = segment(y, audio, min_remainder=self.min_remainder)
        if not segs:
            raise AudioError(f"{path}: no segment left after trimming silence (top_db {audio.trim_top_db})")
        return np.stack(segs)

    def features(self, segs: np.ndarray) -> np.ndarray:
        """Standardized log-Mel ``[shape=(n_segments, T, n_mels)]`` of ``segs [shape=(n_segments, n)]``."""
        x = np.stack([log_mel(s, self.cfg.audio.sample_rate, self.cfg.features) for s in segs])
        if x.shape[1:] != tuple(self.info.input_shape):
            raise RunDirError(f"features of shape {x.shape[1:]} do not fit the run's input shape "
                              f"{tuple(self.info.input_shape)}")
        return self.scaler.transform(x)

    def probabilities(self, path: str | Path) -> np.ndarray:
        """Class probabilities ``[shape=(n_segments, n_classes)]`` of each segment of one file."""
        x = self.features(self.segments(path))
        logits = predict_logits(self.model, x, batch_size=self.batch_size, device=self.device)
        return softmax(logits.astype(np.float64))


def _rows(file: str, prob: np.ndarray, classes: list[str]) -> tuple[dict, list[dict]]:
    def row(p: np.ndarray) -> dict:
        k = int(np.argmax(p))
        return {"predicted": classes[k], "confidence": float(p[k]),
                **{f"p_{c}": float(v) for c, v in zip(classes, p)}}

    mean = prob.mean(axis=0)
    per_file = {"file": file, "segments": int(len(prob)), **row(mean)}
    per_segment = [{"file": file, "segment": i, **row(p)} for i, p in enumerate(prob)]
    return per_file, per_segment


def predict_files(run_dir: str | Path, files: list[str | Path], *, device: str = "cpu",
                  batch_size: int = 64, predictor: Predictor | None = None) -> Prediction:
    """Per-segment and per-file predictions of ``files`` by the model of ``run_dir``.

    A file raising :class:`AudioError` is recorded in :attr:`Prediction.errors` and skipped.
    """
    pred = predictor if predictor is not None else Predictor(run_dir, device=device, batch_size=batch_size)
    file_rows: list[dict] = []
    seg_rows: list[dict] = []
    errors: list[tuple[str, str]] = []
    for f in dict.fromkeys(str(f) for f in files):  # each file once, in the order given
        try:
            prob = pred.probabilities(f)
        except AudioError as exc:
            errors.append((f, str(exc)))
            continue
        per_file, per_segment = _rows(f, prob, pred.classes)
        file_rows.append(per_file)
        seg_rows.extend(per_segment)
    probs = [f"p_{c}" for c in pred.classes]
    files_df = pd.DataFrame(file_rows, columns=["file", "segments", "predicted", "confidence", *probs])
    segs_df = pd.DataFrame(seg_rows, columns=["file", "segment", "predicted", "confidence", *probs])
    return Prediction(classes=pred.classes, files=files_df, segments=segs_df, errors=errors)


def check_output(path: str | Path) -> Path:
    """``path`` if it ends with one of :data:`OUTPUT_SUFFIXES`, else a one-line error."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ParameterError(f"--output {path}: write predictions to a .csv or .json file")
    return path


def segments_csv_path(path: str | Path) -> Path:
    """Where the per-segment CSV goes beside the per-file CSV ``path`` (``<stem>.segments.csv``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.segments.csv")


def write_prediction(pred: Prediction, path: str | Path, *, run_dir: str | Path | None = None) -> list[Path]:
    """Write ``pred`` to ``path``: ``.csv`` (per file; per segment in ``<stem>.segments.csv``) or
    ``.json`` (everything, errors included). Returns the files written."""
    path = check_output(path)
    if path.suffix.lower() == ".csv":
        seg_path = segments_csv_path(path)
        atomic_write_bytes(path, pred.files.to_csv(index=False).encode("utf-8"))
        atomic_write_bytes(seg_path, pred.segments.to_csv(index=False).encode("utf-8"))
        return [path, seg_path]

    def probs(row: pd.Series) -> dict:
        return {c: _finite(row[f"p_{c}"]) for c in pred.classes}

    by_file = {f: g for f, g in pred.segments.groupby("file", sort=False)}
    doc = {
        "run": None if run_dir is None else str(run_dir),
        "classes": pred.classes,
        "files": [
            {"file": r["file"], "predicted": r["predicted"], "confidence": _finite(r["confidence"]),
             "probabilities": probs(r), "segments": [
                 {"segment": int(s["segment"]), "predicted": s["predicted"],
                  "confidence": _finite(s["confidence"]), "probabilities": probs(s)}
                 for _, s in by_file[r["file"]].iterrows()]}
            for _, r in pred.files.iterrows()
        ],
        "errors": [{"file": f, "error": msg} for f, msg in pred.errors],
    }
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return [path]


def _finite(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
