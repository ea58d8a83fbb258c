"""Realizability: adversarial waveforms as the 16-bit WAV files an attacker would deliver.

Robust accuracy of a waveform attack is measured on what is written, not on the float tensor
the attack ended with:

1. :func:`quantize_pcm16`: ``q = clip(round(y * 32768), -32768, 32767)`` (int16), so that the
   file holds exactly ``q`` and reads back (:func:`seradv.audio.read_audio`, libsndfile's
   int16 -> float32 ``q / 32768``) as ``q / 32768``: a sample moves by at most half a step
   (``2 ** -16``), and by one step at ``+1.0`` (clipped to 32767).
2. :func:`write_pcm16_wavs`: each waveform as a mono 16-bit PCM WAV (soundfile into memory,
   then :func:`seradv.fileio.atomic_write_bytes`).
3. :func:`realized_predictions`: the files read back with :func:`seradv.audio.read_audio`, the
   numpy features :func:`numpy_features` (what :meth:`seradv.predict.Predictor.features` computes:
   :func:`seradv.features.log_mel` then the run's standardizer) and the model's top class. The
   written segments are already the model's 3 s inputs, so they are not trimmed or segmented
   again (``seradv predict`` would trim a whole file's silences first).

Shapes: waveforms ``[shape=(n, n_samples)]`` float in ``[-1, 1]``; predictions ``[shape=(n,)]`` int64.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from torch import nn

from seradv.audio import read_audio
from seradv.config import FeatureConfig
from seradv.errors import ParameterError
from seradv.evaluation import predict_logits
from seradv.features import Standardizer, log_mel
from seradv.fileio import atomic_write_bytes, check_path_component

__all__ = ["PCM16_STEP", "fit_full_scale", "numpy_features", "quantize_pcm16", "read_wavs", "realized_predictions",
           "write_pcm16_wavs"]

PCM16_STEP = 1.0 / 32768.0
"""One 16-bit step (1 LSB) in float units."""


def fit_full_scale(waveforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segments ``[shape=(n, n_samples)]`` whose peak exceeds full scale scaled down to it.

    Augmented copies (time stretch, pitch shift) and resampling can overshoot ``[-1, 1]``
    slightly (EmoDB: one of 64 seeded paper-split test segments peaks at 1.009); no 16-bit file
    holds them and a waveform attack must start inside its box. Such a segment is multiplied by
    ``(1 - 1 LSB) / peak``; the others are unchanged. The study's log-Mel (dB re the segment's
    minimum) does not move under a gain, up to ``amin`` and ``top_db``.

    Returns the segments (float32) and the gain applied to each, in dB ``[shape=(n,)]`` (0 where
    none).
    """
    w = np.asarray(waveforms, np.float32)
    peak = np.abs(w).max(axis=1) if w.ndim == 2 else None
    if peak is None:
        raise ParameterError(f"waveforms must have shape (n, n_samples), got {w.shape}")
    top = 1.0 - PCM16_STEP
    gain = np.where(peak > 1.0, top / np.maximum(peak, 1e-12), 1.0).astype(np.float32)
    return (w * gain[:, None]).astype(np.float32), 20.0 * np.log10(gain.astype(np.float64))


def _batch(waveforms: np.ndarray) -> np.ndarray:
    y = np.asarray(waveforms, np.float64)
    if y.ndim != 2 or y.shape[0] < 1:
        raise ParameterError(f"waveforms must have shape (n, n_samples) with n >= 1, got {y.shape}")
    if not np.isfinite(y).all() or np.abs(y).max() > 1.0:
        raise ParameterError("waveforms must be finite and inside [-1, 1]")
    return y


def quantize_pcm16(waveforms: np.ndarray) -> np.ndarray:
    """The int16 samples ``[shape=(n, n_samples)]`` written for waveforms in ``[-1, 1]``."""
    y = _batch(waveforms)
    return np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)


def write_pcm16_wavs(waveforms: np.ndarray, out_dir: str | Path, names: Sequence[str], *,
                     sample_rate: int) -> list[Path]:
    """Write each waveform as ``out_dir/<name>.wav`` (mono, 16-bit PCM, atomically); return the paths."""
    q = quantize_pcm16(waveforms)
    if len(names) != q.shape[0]:
        raise ParameterError(f"{len(names)} names for {q.shape[0]} waveforms")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, samples in zip(names, q):
        buf = io.BytesIO()
        sf.write(buf, samples, int(sample_rate), subtype="PCM_16", format="WAV")
        paths.append(atomic_write_bytes(out_dir / f"{check_path_component(name, 'file name')}.wav", buf.getvalue()))
    return paths


def read_wavs(paths: Sequence[str | Path], *, sample_rate: int) -> np.ndarray:
    """The files read back with :func:`seradv.audio.read_audio` ``[shape=(n, n_samples)]`` float32."""
    out = []
    for p in paths:
        y, sr = read_audio(p)
        if sr != sample_rate:
            raise ParameterError(f"{p}: sample rate {sr}, expected {sample_rate}")
        out.append(y)
    if len({len(y) for y in out}) > 1:
        raise ParameterError("the files read back differ in length")
    return np.stack(out).astype(np.float32)


def numpy_features(segments: np.ndarray, *, sample_rate: int, features: FeatureConfig,
                   standardizer: Standardizer | None) -> np.ndarray:
    """Standardized log-Mel ``[shape=(n, T, n_mels)]`` of ``segments [shape=(n, n_samples)]``, as
    :meth:`seradv.predict.Predictor.features` (unstandardized when ``standardizer`` is None)."""
    x = np.stack([log_mel(s, sample_rate, features) for s in np.asarray(segments, np.float32)])
    return x if standardizer is None else standardizer.transform(x)


def realized_predictions(waveforms: np.ndarray, out_dir: str | Path, names: Sequence[str], *, model: nn.Module,
                         sample_rate: int, features: FeatureConfig, standardizer: Standardizer | None,
                         batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, list[Path]]:
    """Write ``waveforms`` as 16-bit WAVs, read them back and classify them through the numpy pipeline.

    Parameters
    ----------
    waveforms : array ``[shape=(n, n_samples)]`` float in ``[-1, 1]``
    out_dir, names : where the files go (``out_dir/<name>.wav``), one name per waveform
    model : nn.Module
        The feature-space model (standardized log-Mel ``[shape=(b, T, n_mels)]`` -> logits).
    sample_rate, features, standardizer : the run's (``FrontEnd.sample_rate`` / ``.features``)

    Returns
    -------
    (predictions ``[shape=(n,)]`` int64 on the files, the paths written)
    """
    paths = write_pcm16_wavs(waveforms, out_dir, names, sample_rate=sample_rate)
    segs = read_wavs(paths, sample_rate=sample_rate)
    x = numpy_features(segs, sample_rate=sample_rate, features=features, standardizer=standardizer)
    logits = predict_logits(model, x, batch_size=batch_size, device=device)
    return np.asarray(logits).argmax(1).astype(np.int64), paths
