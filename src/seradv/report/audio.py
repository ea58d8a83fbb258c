"""Listenable renderings of (adversarial) log-Mel features.

A feature matrix ``z [shape=(T, n_mels)]`` is standardized dB of a power Mel spectrogram
(:mod:`seradv.features`). To hear it: un-standardize (``Standardizer.inverse``), undo the dB
scale (``power = 10 ** ((dB - ref) / 10)``), then invert the Mel spectrogram with librosa's
Griffin-Lim based inversion: :func:`librosa.feature.inverse.mel_to_stft` followed by
:func:`librosa.griffinlim` (the two steps of ``librosa.feature.inverse.mel_to_audio``, here
with a fixed ``random_state`` so the phase estimate, and so the file, is reproducible and the
original and adversarial renderings start from the same phase).

The study's dB conversion uses ``ref=np.min`` per segment, so the absolute level is lost:
every rendering of one example uses the original's loudest cell as 0 dB and one common gain,
so the renderings can be compared by ear, loudness included.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from seradv.config import FeatureConfig
from seradv.errors import ParameterError
from seradv.features import Standardizer

__all__ = ["to_power_mel", "render", "clip_outliers", "write_wavs"]


def to_power_mel(z: np.ndarray, scaler: Standardizer, *, ref_db: float) -> np.ndarray:
    """Power Mel spectrogram ``[shape=(n_mels, T)]`` of standardized features ``z [shape=(T, n_mels)]``."""
    z = np.asarray(z, np.float32)
    if z.ndim != 2 or z.shape != scaler.mean.shape:
        raise ParameterError(f"features of shape {z.shape} do not fit the standardizer {scaler.mean.shape}")
    db = scaler.inverse(z).astype(np.float64)
    return (10.0 ** ((db - ref_db) / 10.0)).T


def render(z: np.ndarray, scaler: Standardizer, *, sr: int, features: FeatureConfig, ref_db: float,
           n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Audio ``[shape=(n,)]`` (float32, not normalised) of standardized features ``z``."""
    mel = to_power_mel(z, scaler, ref_db=ref_db)
    stft = librosa.feature.inverse.mel_to_stft(mel, sr=sr, n_fft=features.n_fft, power=2.0)
    y = librosa.griffinlim(stft, n_iter=n_iter, hop_length=features.hop_length, n_fft=features.n_fft,
                           random_state=seed)
    return np.nan_to_num(y.astype(np.float32))


def clip_outliers(delta: np.ndarray, *, quantile: float = 0.99) -> tuple[np.ndarray, float]:
    """The perturbation with its outliers clipped: ``|delta|`` limited to its ``quantile``.

    Returns the clipped perturbation and the limit. Sparse attacks (few large changes) and
    attacks that leave a few extreme cells are made audible this way without the clicks
    the extremes produce.
    """
    if not 0 < quantile <= 1:
        raise ParameterError(f"quantile={quantile} must be in (0, 1]")
    delta = np.asarray(delta, np.float32)
    limit = float(np.quantile(np.abs(delta), quantile))
    if limit == 0.0:  # a sparse perturbation: keep its non-zero part, limited to its own quantile
        nz = np.abs(delta[delta != 0])
        limit = float(np.quantile(nz, quantile)) if nz.size else 0.0
    return np.clip(delta, -limit, limit), limit


def write_wavs(signals: dict[str, np.ndarray], folder: Path, *, sr: int, peak: float = 0.9) -> dict[str, Path]:
    """Write ``{name: audio}`` as 16-bit wav files with one common gain (loudest peak = ``peak``)."""
    folder.mkdir(parents=True, exist_ok=True)
    top = max((float(np.abs(y).max()) for y in signals.values() if y.size), default=0.0)
    gain = peak / top if top > 0 else 1.0
    out = {}
    for name, y in signals.items():
        path = folder / f"{name}.wav"
        sf.write(path, np.clip(y * gain, -1, 1), sr, subtype="PCM_16")
        out[name] = path
    return out
