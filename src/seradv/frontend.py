"""The study's features as a differentiable torch module: waveform -> standardized log-Mel.

:class:`FrontEnd` computes what :func:`seradv.features.log_mel` followed by
:meth:`seradv.features.Standardizer.transform` computes, in torch, so that gradients reach the
waveform (the waveform threat model of the attacks on audio):

1. STFT ``[shape=(batch, 1 + n_fft // 2, T)]``: ``n_fft`` 368, hop 184, librosa's window
   (``librosa.filters.get_window("hann", n_fft, fftbins=True)``, a constant buffer), centred
   with zero padding (``pad_mode="constant"``, as ``librosa.feature.melspectrogram``);
   3 s at 16 kHz gives ``T = 1 + 48000 // 184 = 261`` frames.
2. Power Mel ``S [shape=(batch, n_mels, T)]``: ``|X|**2`` as ``re**2 + im**2`` (no square
   root, so no NaN gradient at a zero bin), times librosa's filterbank
   (``librosa.filters.mel``, a constant buffer).
3. The study's dB conversion, :func:`seradv.features.mel_power_to_db`, i.e.
   ``librosa.amplitude_to_db(S, ref=np.min, top_db=80)`` applied to the *power* spectrogram:
   ``dB = 10 log10(max(amin**2, S**2)) - 10 log10(max(amin**2, ref(S)**2))`` with
   ``amin = 1e-5``, then ``max(dB, max(dB) - top_db)``; reference, maximum and floor per
   sample (per matrix, as librosa does per segment). Since the study passes a power
   spectrogram to ``amplitude_to_db``, its "dB" are ``20 log10`` of power (twice the usual
   scale), and top_db 80 keeps 40 dB of power dynamic range below the loudest cell.
4. Standardization ``(dB.T - mean) / std`` with the run's standardizer as buffers
   ``[shape=(T, n_mels)]``, giving the model's input ``[shape=(batch, T, n_mels)]``.

Gradients
---------
The map is continuous and piecewise differentiable; autograd returns, everywhere, the gradient
of the piece the input lies on:

* ``ref=min``: the reference is the smallest cell of the power Mel matrix, so it depends on
  the input through that one cell (``torch.amin``: the gradient goes to the minimising cell,
  split evenly on ties). Every cell's dB value moves when the minimum moves; the map is not
  differentiable where two cells tie for the minimum. When the minimum is below the amplitude
  floor ``amin`` (``S < 1e-5``, usual for real speech with silent frames or empty high bands),
  the reference is the constant ``amin`` and contributes no gradient.
* the ``amin`` floor: a cell with ``S < amin`` sits on the flat part of ``max(amin**2, S**2)``
  and passes no gradient. An exactly silent input lies entirely on this floor: its features
  are constant (every cell 0 dB before standardization), the gradient with respect to the
  waveform is exactly zero (finite, never NaN: no log of 0, no square root at 0, no division
  by the minimum), and an attack must start from a random point or a noise floor.
* ``top_db`` clipping: a cell below ``max(dB) - top_db`` is replaced by that floor, so it
  passes no gradient of its own (zero gradient below the floor); the floor itself follows the
  loudest cell and the reference, so the gradient of every clipped cell goes to the loudest
  cell (and, at ``ref=min`` above ``amin``, to the minimum cell; ``torch.maximum`` splits it at
  exact ties). Not differentiable where a cell crosses the floor. On real EmoDB segments about
  70 % of the cells lie on this floor.

Numerics: everything runs in the module's dtype (float32 by default, as librosa on the float32
segments seradv prepares; float64 for ``torch.autograd.gradcheck``). The float32 results differ
from librosa's by FFT rounding only; ``tests/test_frontend.py`` states the tolerance reached
(relative rounding in a quiet cell is magnified by the log, and at ``ref=min`` an error in the
minimum cell shifts the whole matrix, unless the minimum is at the ``amin`` floor).

Device-agnostic: move the module with ``.to(device)``; nothing here asks for CUDA.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import torch
from torch import nn

from seradv.config import AudioConfig, FeatureConfig
from seradv.errors import ParameterError, RunDirError
from seradv.features import Standardizer
from seradv.prepare import read_standardizer
from seradv.rundir import is_cv_run, load_run_config, read_preprocessing

__all__ = ["FrontEnd", "WaveformModel", "AMIN"]

AMIN = 1e-5
"""``librosa.amplitude_to_db``'s default ``amin``, which the study's conversion uses."""


class FrontEnd(nn.Module):
    """Waveforms ``[shape=(batch, n_samples)]`` -> standardized log-Mel ``[shape=(batch, T, n_mels)]``.

    Parameters
    ----------
    sample_rate : int
        Of the waveform (the run's ``audio.sample_rate``, 16 kHz in the study).
    features : FeatureConfig
        The run's feature configuration (``n_fft``, ``hop_length``, ``n_mels``, ``top_db``,
        ``db_reference``).
    standardizer : Standardizer or None
        The run's per-cell mean/std ``[shape=(T, n_mels)]``; ``None``: return the dB features
        unstandardized (what :func:`seradv.features.log_mel` returns).
    n_samples : int or None
        The waveform length the standardizer fits (checked in :meth:`forward`); ``None``: any.
    dtype : torch.dtype
        Of the buffers (float32; float64 for gradcheck).
    """

    def __init__(self, sample_rate: int = 16000, features: FeatureConfig = FeatureConfig(), *,
                 standardizer: Standardizer | None = None, n_samples: int | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        features.validate()
        self.sample_rate = int(sample_rate)
        self.features = features
        self.n_fft = features.n_fft
        self.hop_length = features.hop_length
        self.top_db = features.top_db
        self.db_reference = features.db_reference
        self.n_samples = None if n_samples is None else int(n_samples)
        window = librosa.filters.get_window("hann", features.n_fft, fftbins=True)
        mel = librosa.filters.mel(sr=self.sample_rate, n_fft=features.n_fft, n_mels=features.n_mels)
        self.register_buffer("window", torch.as_tensor(np.asarray(window), dtype=dtype))
        self.register_buffer("mel_basis", torch.as_tensor(np.asarray(mel), dtype=dtype))
        if standardizer is not None:
            mean = np.asarray(standardizer.mean)
            std = np.asarray(standardizer.std)
            if mean.ndim != 2 or mean.shape[1] != features.n_mels or std.shape != mean.shape:
                raise ParameterError(f"standardizer of shape {mean.shape} / {std.shape} does not fit "
                                     f"{features.n_mels} Mel bands")
            if self.n_samples is not None and mean.shape[0] != self.n_frames(self.n_samples):
                raise ParameterError(f"standardizer of {mean.shape[0]} frames does not fit {self.n_samples} "
                                     f"samples ({self.n_frames(self.n_samples)} frames)")
            self.register_buffer("mean", torch.as_tensor(mean, dtype=dtype))
            self.register_buffer("std", torch.as_tensor(std, dtype=dtype))
        else:
            self.mean = None
            self.std = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_run(cls, run_dir: str | Path, *, dtype: torch.dtype = torch.float32) -> "FrontEnd":
        """The front end of a prepared run directory: its config's audio and feature settings
        and its standardizer (checked against ``preprocessing.json``)."""
        run_dir = Path(run_dir)
        if is_cv_run(run_dir):
            raise RunDirError(f"{run_dir} is a speaker-fold CV run with one standardizer per fold; "
                              f"pass one fold's directory, e.g. {run_dir / 'folds' / 'fold-1'}")
        cfg = load_run_config(run_dir)
        info = read_preprocessing(run_dir)
        scaler = read_standardizer(run_dir, info)
        return cls(cfg.audio.sample_rate, cfg.features, standardizer=scaler,
                   n_samples=cfg.audio.segment_samples, dtype=dtype)

    @classmethod
    def from_config(cls, audio: AudioConfig, features: FeatureConfig, standardizer: Standardizer | None = None,
                    *, dtype: torch.dtype = torch.float32) -> "FrontEnd":
        """The front end of an audio and feature configuration (``standardizer`` optional)."""
        return cls(audio.sample_rate, features, standardizer=standardizer, n_samples=audio.segment_samples,
                   dtype=dtype)

    # ------------------------------------------------------------------ the steps

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT of ``n_samples`` samples: ``1 + n_samples // hop_length``."""
        return 1 + int(n_samples) // self.hop_length

    def power_mel(self, y: torch.Tensor) -> torch.Tensor:
        """Power Mel spectrogram ``[shape=(batch, n_mels, T)]`` of ``y [shape=(batch, n)]``."""
        spec = torch.stft(y, n_fft=self.n_fft, hop_length=self.hop_length, window=self.window,
                          center=True, pad_mode="constant", return_complex=True)
        ri = torch.view_as_real(spec)
        power = ri[..., 0] ** 2 + ri[..., 1] ** 2  # |X|^2 without abs(): no NaN gradient at 0
        return torch.matmul(self.mel_basis, power)

    def to_db(self, S: torch.Tensor) -> torch.Tensor:
        """The study's dB conversion of ``S [shape=(batch, n_mels, T)]`` (per sample), as
        :func:`seradv.features.mel_power_to_db`."""
        amin2 = AMIN * AMIN
        power = torch.clamp(S * S, min=amin2)  # amplitude_to_db squares its input (a power here)
        flat = power.flatten(1)
        ref = flat.amin(1) if self.db_reference == "min" else flat.amax(1)  # >= amin2 already
        db = 10.0 * torch.log10(power) - 10.0 * torch.log10(ref)[:, None, None]
        if self.top_db is not None:
            floor = db.flatten(1).amax(1) - self.top_db
            db = torch.maximum(db, floor[:, None, None])
        return db

    def log_mel(self, y: torch.Tensor) -> torch.Tensor:
        """Unstandardized log-Mel ``[shape=(batch, T, n_mels)]`` (what :func:`seradv.features.log_mel` gives)."""
        return self.to_db(self.power_mel(y)).transpose(1, 2)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Standardized log-Mel ``[shape=(batch, T, n_mels)]`` of ``y [shape=(batch, n_samples)]``
        (a single waveform ``[shape=(n_samples,)]`` gets a batch axis of 1)."""
        if y.ndim == 1:
            y = y[None]
        if y.ndim != 2:
            raise ParameterError(f"waveforms must have shape (batch, n_samples), got {tuple(y.shape)}")
        if self.n_samples is not None and y.shape[1] != self.n_samples:
            raise ParameterError(f"waveforms of {y.shape[1]} samples, the front end expects {self.n_samples}")
        x = self.log_mel(y.to(self.window.dtype))
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


class WaveformModel(nn.Module):
    """``model(frontend(y))``: logits ``[shape=(batch, n_classes)]`` of waveforms ``[shape=(batch, n_samples)]``."""

    def __init__(self, frontend: FrontEnd, model: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.model = model

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.model(self.frontend(y))
