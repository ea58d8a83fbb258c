"""SNR and segmental SNR of adversarial waveforms, per sample (numpy, float64).

* SNR: ``10 log10(sum x**2 / sum (x_adv - x)**2)`` over the whole segment, in dB; ``inf`` when
  ``x_adv == x``.
* Segmental SNR (Quackenbush, Barnwell, Clements 1988, "Objective measures of speech quality"):
  the mean over non-overlapping frames of ``frame_length`` samples (20 ms at 16 kHz, a trailing
  partial frame dropped) of each frame's SNR ``10 log10(sum_frame x**2 / sum_frame delta**2)``,
  clamped to ``[floor_db, ceil_db]`` (-10, 35 dB: a silent frame with noise counts as -10 dB, a
  frame without noise as 35 dB). Frames where both the signal and the perturbation are exactly
  zero carry no information and are left out; a segment with no other frame gets NaN.

* STOI (Taal, Hendriks, Heusdens, Jensen 2011, "An algorithm for intelligibility prediction
  of time-frequency weighted noisy speech"): :func:`stoi_scores`, pystoi's ``stoi(clean, adv,
  sample_rate)`` per segment (pystoi resamples to 10 kHz and drops silent frames itself; about
  1 for an inaudible change, lower as intelligibility drops; pystoi returns 1e-5 with a warning
  when a segment has too few non-silent frames).
* Wide-band PESQ (ITU-T P.862.2): :func:`pesq_scores`, the ``pesq`` package's
  ``pesq(16000, clean, adv, "wb")`` per segment (MOS-LQO, about 1.0 to 4.64), only at 16 kHz.
  ``pesq`` is optional (the extra ``seradv[perceptual]``; it builds from C sources):
  :func:`pesq_available` says whether it can be imported; a segment it cannot score (e.g. no
  utterance found) gets NaN.

Inputs: ``x``, ``x_adv`` ``[shape=(n, n_samples)]`` -> ``[shape=(n,)]`` float64.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from seradv.errors import ParameterError

log = logging.getLogger(__name__)

__all__ = ["pesq_available", "pesq_scores", "segmental_snr_db", "snr_db", "stoi_scores"]

PESQ_SAMPLE_RATE = 16000
"""Wide-band PESQ is defined at 16 kHz."""


def _pair(x: np.ndarray, x_adv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, np.float64)
    b = np.asarray(x_adv, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ParameterError(f"x {a.shape} and x_adv {b.shape} must both have shape (n, n_samples)")
    return a, b - a


def snr_db(x: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
    """``10 log10(||x||^2 / ||x_adv - x||^2)`` per sample ``[shape=(n,)]`` (``inf`` without perturbation)."""
    a, d = _pair(x, x_adv)
    sig = (a * a).sum(1)
    noise = (d * d).sum(1)
    with np.errstate(divide="ignore"):
        return np.where(noise > 0, 10.0 * np.log10(sig / np.where(noise > 0, noise, 1.0)), np.inf)


def segmental_snr_db(x: np.ndarray, x_adv: np.ndarray, *, frame_length: int = 320, floor_db: float = -10.0,
                     ceil_db: float = 35.0) -> np.ndarray:
    """Mean clamped per-frame SNR (module docstring) per sample ``[shape=(n,)]``."""
    if int(frame_length) < 1 or not floor_db < ceil_db:
        raise ParameterError(f"frame_length={frame_length} must be >= 1 and floor_db < ceil_db")
    a, d = _pair(x, x_adv)
    n_frames = a.shape[1] // int(frame_length)
    if n_frames < 1:
        raise ParameterError(f"segments of {a.shape[1]} samples are shorter than one frame ({frame_length})")
    cut = n_frames * int(frame_length)
    sig = (a[:, :cut] ** 2).reshape(a.shape[0], n_frames, -1).sum(2)
    noise = (d[:, :cut] ** 2).reshape(a.shape[0], n_frames, -1).sum(2)
    with np.errstate(divide="ignore", invalid="ignore"):
        frame = 10.0 * np.log10(sig / noise)  # +inf (no noise), -inf (silent frame), nan (both zero)
    frame = np.clip(frame, floor_db, ceil_db)
    used = ~((sig == 0) & (noise == 0))
    count = used.sum(1)
    total = np.where(used, frame, 0.0).sum(1)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def stoi_scores(clean: np.ndarray, adv: np.ndarray, sample_rate: int) -> np.ndarray:
    """STOI of each adversarial segment against its clean one ``[shape=(n,)]`` float64 (pystoi).

    Parameters
    ----------
    clean, adv : array ``[shape=(n, n_samples)]``, float waveforms
    sample_rate : int
        Their sample rate in Hz (pystoi resamples to 10 kHz).
    """
    from pystoi import stoi  # a dependency; imported here so that the SNR functions need no scipy

    a, d = _pair(clean, adv)
    if int(sample_rate) < 1:
        raise ParameterError(f"sample_rate={sample_rate} must be a positive integer")
    b = a + d
    return np.array([float(stoi(a[i], b[i], int(sample_rate), extended=False)) for i in range(a.shape[0])],
                    np.float64)


def pesq_available() -> bool:
    """Whether the optional ``pesq`` package can be imported (``pip install 'seradv[perceptual]'``)."""
    return importlib.util.find_spec("pesq") is not None


def pesq_scores(clean: np.ndarray, adv: np.ndarray, sample_rate: int) -> np.ndarray:
    """Wide-band PESQ of each adversarial segment against its clean one ``[shape=(n,)]`` float64.

    Raises
    ------
    ParameterError
        The ``pesq`` package is not installed, or ``sample_rate`` is not 16000 (wide-band PESQ
        is defined at 16 kHz).
    """
    if not pesq_available():
        raise ParameterError("PESQ needs the pesq package: pip install 'seradv[perceptual]' (or pip install pesq)")
    if int(sample_rate) != PESQ_SAMPLE_RATE:
        raise ParameterError(f"wide-band PESQ needs {PESQ_SAMPLE_RATE} Hz audio, got sample_rate={sample_rate}")
    from pesq import pesq

    a, d = _pair(clean, adv)
    b = a + d
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        try:
            out[i] = float(pesq(PESQ_SAMPLE_RATE, a[i], b[i], "wb"))
        except Exception as exc:  # noqa: BLE001 - pesq raises its own error types (no utterance, ...)
            log.warning("PESQ of segment %d not computed (%s: %s): NaN", i, type(exc).__name__, exc)
    return out
