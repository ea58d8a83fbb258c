"""Log-Mel features (SPEC.md step 5), per-cell standardization (step 6) and their inversion.

:func:`log_mel` reproduces the study: a power Mel spectrogram (128 bands, n_fft 368, hop 184)
converted with ``librosa.amplitude_to_db(S, ref=np.min)`` (top_db 80) and transposed to
time x Mel, so 3 s at 16 kHz gives ``[shape=(261, 128)]``.

Inversion lives beside extraction (as in ``librosa.feature.inverse``): to hear a standardized
feature matrix, :func:`to_power_mel` un-standardizes it (``Standardizer.inverse``) and undoes the
dB scale (``power = 10 ** ((dB - ref) / 10)``); :func:`features_to_audio` then inverts the Mel
spectrogram with :func:`librosa.feature.inverse.mel_to_stft` and :func:`librosa.griffinlim` (the
two steps of ``librosa.feature.inverse.mel_to_audio``, here with a fixed ``random_state`` so the
phase estimate, and so the file, is reproducible and the original and adversarial renderings
start from the same phase). The study's dB conversion uses ``ref=np.min`` per segment, so the
absolute level is lost: the caller chooses ``ref_db`` (the report uses the original's loudest
cell for every rendering of one example, so they can be compared by ear, loudness included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
from safetensors.numpy import load_file, save

from seradv.audio import validate_audio
from seradv.fileio import atomic_write_bytes
from seradv.config import FeatureConfig
from seradv.errors import ParameterError

__all__ = ["log_mel", "Standardizer", "mel_power_to_db", "to_power_mel", "features_to_audio"]


def mel_power_to_db(S: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The study's dB conversion of a power Mel spectrogram ``[shape=(n_mels, t)]``."""
    ref = np.min if cfg.db_reference == "min" else np.max
    return librosa.amplitude_to_db(S, ref=ref, top_db=cfg.top_db)


def log_mel(y: np.ndarray, sr: int, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Log-Mel spectrogram of ``y [shape=(n,)]``, time-major.

    Returns
    -------
    np.ndarray [shape=(1 + n // hop_length, n_mels), dtype=float32]
    """
    y = validate_audio(y)
    S = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels, power=2.0
    )
    return np.ascontiguousarray(mel_power_to_db(S, cfg).T.astype(np.float32))


@dataclass
class Standardizer:
    """Per-cell zero mean, unit variance: ``(x - mean) / std`` with ``mean, std [shape=(T, F)]``."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, *, chunk: int = 512) -> "Standardizer":
        """Fit on ``x [shape=(n, T, F)]`` (float64 accumulation, chunked to bound memory)."""
        if x.ndim != 3 or x.shape[0] < 2:
            raise ParameterError(f"Standardizer.fit needs at least 2 samples of shape (T, F), got {x.shape}")
        s = np.zeros(x.shape[1:], np.float64)
        ss = np.zeros(x.shape[1:], np.float64)
        for i in range(0, x.shape[0], chunk):
            b = x[i : i + chunk].astype(np.float64)
            s += b.sum(0)
            ss += (b * b).sum(0)
        n = x.shape[0]
        mean = s / n
        var = np.maximum(ss / n - mean**2, 0.0)
        std = np.sqrt(var)
        std[std < 1e-8] = 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (z * self.std + self.mean).astype(np.float32)

    def to_bytes(self) -> bytes:
        """The safetensors bytes that :meth:`save` writes."""
        return save({"mean": self.mean, "std": self.std})

    def save(self, path: str | Path) -> None:
        atomic_write_bytes(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "Standardizer":
        d = load_file(str(path))
        return cls(d["mean"], d["std"])


# ----------------------------------------------------------------------------- inversion


def to_power_mel(z: np.ndarray, scaler: Standardizer, *, ref_db: float) -> np.ndarray:
    """Power Mel spectrogram ``[shape=(n_mels, T)]`` of standardized features ``z [shape=(T, n_mels)]``."""
    z = np.asarray(z, np.float32)
    if z.ndim != 2 or z.shape != scaler.mean.shape:
        raise ParameterError(f"features of shape {z.shape} do not fit the standardizer {scaler.mean.shape}")
    db = scaler.inverse(z).astype(np.float64)
    return (10.0 ** ((db - ref_db) / 10.0)).T


def features_to_magnitude(z: np.ndarray, scaler: Standardizer, *, sr: int, features: FeatureConfig,
                          ref_db: float) -> np.ndarray:
    """Linear STFT magnitude ``[shape=(1 + n_fft // 2, T)]`` of standardized features ``z [shape=(T, n_mels)]``
    (:func:`to_power_mel`, then librosa's NNLS ``mel_to_stft``)."""
    mel = to_power_mel(z, scaler, ref_db=ref_db)
    return librosa.feature.inverse.mel_to_stft(mel, sr=sr, n_fft=features.n_fft, power=2.0)


def features_to_audio(z: np.ndarray, scaler: Standardizer, *, sr: int, features: FeatureConfig, ref_db: float,
                      n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Audio ``[shape=(n,)]`` (float32, not normalised) of standardized features ``z [shape=(T, n_mels)]``."""
    stft = features_to_magnitude(z, scaler, sr=sr, features=features, ref_db=ref_db)
    y = librosa.griffinlim(stft, n_iter=n_iter, hop_length=features.hop_length, n_fft=features.n_fft,
                           random_state=seed)
    return np.nan_to_num(y.astype(np.float32))
