"""Realized fooling of feature-space attacks: adversarial log-Mel matrices rendered as audio.

The study's attacks change the standardized log-Mel matrix, which is not audio. This module
renders a matrix as a waveform, writes it as a 16-bit WAV, reads the file back through the
numpy feature pipeline (:func:`~seradv.attacks.waveform.realize.realized_predictions`) and asks
the model again: an adversarial matrix is *realized* when its rendering still fools the model.

Two renderings (``method``):

* ``"griffinlim"``: the report's (:func:`seradv.features.features_to_audio`): power Mel ->
  linear magnitude (librosa's NNLS ``mel_to_stft``) -> Griffin-Lim phase (``n_iter``
  iterations, seeded). What the study's own audio rendering did, without its scaling bug.
* ``"phase"``: the same magnitude with the *original segment's* phase (an attacker who holds
  the clean waveform keeps its phase; no Griffin-Lim artefacts), inverse STFT.

The clean matrix is rendered the same way, with the same reference level and the same
Griffin-Lim seed, and both renderings share one gain (peak 0.9 of the louder one), so that
the *rendering itself* can be told apart from the perturbation: a sample counts for the
realized rate only when its clean rendering is still classified correctly
(``clean_render_correct``). The standardized features are level-invariant up to ``amin`` and
``top_db`` (the study's ``ref=min`` dB), so the common gain does not move them.

Shapes: features ``[shape=(n, T, n_mels)]`` standardized; waveforms ``[shape=(n, n_samples)]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
from torch import nn

from seradv.attacks.waveform.metrics import snr_db
from seradv.attacks.waveform.realize import realized_predictions
from seradv.config import FeatureConfig
from seradv.errors import ParameterError
from seradv.features import Standardizer, features_to_magnitude

__all__ = ["RENDER_METHODS", "render_features", "realize_feature_attack"]

RENDER_METHODS = ("griffinlim", "phase")
"""How an adversarial log-Mel matrix becomes audio (module docstring)."""

_PEAK = 0.9


def render_features(z: np.ndarray, scaler: Standardizer, *, sr: int, features: FeatureConfig, ref_db: float,
                    n_samples: int, method: str = "griffinlim", phase_of: np.ndarray | None = None,
                    n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Audio ``[shape=(n_samples,)]`` float64 (not normalised) of one standardized matrix ``z [shape=(T, n_mels)]``.

    ``method="phase"`` needs ``phase_of [shape=(n_samples,)]``, the clean segment whose STFT
    phase is kept. ``ref_db``: the dB level mapped to power 1 (use the clean matrix's maximum
    for both the clean and the adversarial matrix).
    """
    if method not in RENDER_METHODS:
        raise ParameterError(f"method={method!r} must be one of {', '.join(RENDER_METHODS)}")
    mag = features_to_magnitude(z, scaler, sr=sr, features=features, ref_db=ref_db)
    if method == "griffinlim":
        y = librosa.griffinlim(mag, n_iter=n_iter, hop_length=features.hop_length, n_fft=features.n_fft,
                               random_state=seed)
    else:
        if phase_of is None:
            raise ParameterError("method='phase' needs the clean waveform (phase_of)")
        spec = librosa.stft(np.asarray(phase_of, np.float32), n_fft=features.n_fft, hop_length=features.hop_length)
        if spec.shape != mag.shape:
            raise ParameterError(f"the clean waveform's STFT {spec.shape} does not fit the features' {mag.shape}")
        y = librosa.istft(mag * np.exp(1j * np.angle(spec)), hop_length=features.hop_length, n_fft=features.n_fft,
                          length=n_samples)
    return librosa.util.fix_length(np.nan_to_num(np.asarray(y, np.float64)), size=n_samples)


def realize_feature_attack(model: nn.Module, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, *,
                           scaler: Standardizer, sr: int, features: FeatureConfig, n_samples: int,
                           wav_dir: str | Path, names: Sequence[str], method: str = "griffinlim",
                           clean_waves: np.ndarray | None = None, n_iter: int = 32, seed: int = 0,
                           batch_size: int = 64, device: str = "cpu") -> pd.DataFrame:
    """Render clean and adversarial matrices, write both as 16-bit WAVs, classify the files.

    Parameters
    ----------
    model : the feature-space model (standardized log-Mel -> logits)
    x, x_adv : array ``[shape=(n, T, n_mels)]`` clean and adversarial standardized features
    y : array ``[shape=(n,)]`` labels
    wav_dir, names : files ``wav_dir/<name>-clean.wav`` and ``wav_dir/<name>-adv.wav``
    clean_waves : array ``[shape=(n, n_samples)]``, needed by ``method="phase"``

    Returns
    -------
    One row per sample: ``pred_clean_render``, ``pred_adv_render`` (the model on the read-back
    files), ``clean_render_correct``, ``realized_fooled`` (``pred_adv_render != y``) and
    ``render_snr_db`` (adversarial rendering against the clean rendering).
    """
    x, x_adv = np.asarray(x, np.float32), np.asarray(x_adv, np.float32)
    if x.shape != x_adv.shape or x.ndim != 3 or len(y) != len(x) or len(names) != len(x):
        raise ParameterError(f"x {x.shape}, x_adv {x_adv.shape}, y ({len(y)}) and names ({len(names)}) must agree")
    if method == "phase" and (clean_waves is None or len(clean_waves) != len(x)):
        raise ParameterError("method='phase' needs one clean waveform per sample (clean_waves)")
    clean_r, adv_r = [], []
    for i in range(len(x)):
        ref_db = float(scaler.inverse(x[i]).max())
        kw = dict(sr=sr, features=features, ref_db=ref_db, n_samples=n_samples, method=method, n_iter=n_iter,
                  seed=seed, phase_of=None if clean_waves is None else clean_waves[i])
        a, b = render_features(x[i], scaler, **kw), render_features(x_adv[i], scaler, **kw)
        peak = max(np.abs(a).max(), np.abs(b).max(), 1e-12)
        clean_r.append(a * (_PEAK / peak))
        adv_r.append(b * (_PEAK / peak))
    clean_r, adv_r = np.stack(clean_r), np.stack(adv_r)
    common = dict(model=model, sample_rate=sr, features=features, standardizer=scaler, batch_size=batch_size,
                  device=device)
    pc, paths_c = realized_predictions(clean_r, wav_dir, [f"{n}-clean" for n in names], **common)
    pa, paths_a = realized_predictions(adv_r, wav_dir, [f"{n}-adv" for n in names], **common)
    y = np.asarray(y)
    return pd.DataFrame({
        "pred_clean_render": pc, "pred_adv_render": pa,
        "clean_render_correct": pc == y, "realized_fooled": pa != y,
        "render_snr_db": snr_db(clean_r, adv_r),
        "wav_clean": [p.name for p in paths_c], "wav_adv": [p.name for p in paths_a],
    })
