"""Signal processing of the study (SPEC.md steps 1-4): resample, trim, segment, augment.

Pure functions on mono float32 signals; librosa does the DSP.
"""

from __future__ import annotations

import librosa
import numpy as np

from seradv.audio import validate_audio
from seradv.config import AudioConfig, AugmentConfig
from seradv.errors import AudioError, ParameterError

__all__ = ["resample", "trim", "segment", "augment", "apply_variant"]


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``y [shape=(n,)]`` from ``orig_sr`` to ``target_sr`` (librosa, soxr_hq)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ParameterError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    y = validate_audio(y)
    if orig_sr == target_sr:
        return y
    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr).astype(np.float32)


def trim(y: np.ndarray, cfg: AudioConfig, *, where: str = "signal") -> np.ndarray:
    """Trim leading and trailing silence (top_db 30, frame 512, hop 64 in the study).

    Raises :class:`AudioError` when less than one analysis frame is left.
    """
    y = validate_audio(y, where=where)
    if y.size < cfg.trim_frame_length:
        raise AudioError(
            f"{where}: only {y.size} samples, shorter than one analysis frame "
            f"({cfg.trim_frame_length} samples)"
        )
    if not np.any(np.abs(y) > 1e-6):
        raise AudioError(f"{where}: the signal is silent (every sample is zero)")
    if y.size <= TRIM_CHUNK_FRAMES * cfg.trim_hop_length:
        out, _ = librosa.effects.trim(
            y, top_db=cfg.trim_top_db, frame_length=cfg.trim_frame_length, hop_length=cfg.trim_hop_length
        )
    else:
        out = _trim_long(y, cfg)
    if out.size < cfg.trim_frame_length:
        raise AudioError(
            f"{where}: {out.size} samples left after trimming silence (top_db {cfg.trim_top_db}), "
            f"shorter than one analysis frame ({cfg.trim_frame_length} samples); the file is "
            f"silent or too short"
        )
    return out


TRIM_CHUNK_FRAMES = 2**14
"""Frames per chunk of :func:`_trim_long` (longer signals are trimmed chunk by chunk)."""


def _trim_long(y: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """``librosa.effects.trim(y, ...)[0]``, with the frames' RMS computed
    :data:`TRIM_CHUNK_FRAMES` frames at a time.

    librosa frames the whole (centre-padded) signal and squares every frame at once: a float32
    array of ``frame_length / hop_length`` (8 in the study) times the signal, 1.8 GB for an hour
    at 16 kHz. Here each chunk of frames is ``librosa.feature.rms`` of its slice of the same
    padded signal (``center=False``: the same frames, each frame's mean over its own samples),
    then the threshold is librosa's (``amplitude_to_db(rms, ref=np.max) > -top_db``) on all
    frames: the same cut, sample for sample (tests/test_features.py)."""
    frame, hop = cfg.trim_frame_length, cfg.trim_hop_length
    padded = np.pad(y, (frame // 2, frame // 2), mode="constant")
    n_frames = 1 + (padded.size - frame) // hop
    rms = np.empty(n_frames, dtype=y.dtype)
    for a in range(0, n_frames, TRIM_CHUNK_FRAMES):
        b = min(a + TRIM_CHUNK_FRAMES, n_frames)
        piece = padded[a * hop : (b - 1) * hop + frame]
        rms[a:b] = librosa.feature.rms(y=piece, frame_length=frame, hop_length=hop, center=False)[0]
    db = librosa.amplitude_to_db(rms, ref=np.max, top_db=None)
    nonzero = np.flatnonzero(db > -cfg.trim_top_db)
    if nonzero.size == 0:
        return y[:0]
    start = int(librosa.frames_to_samples(nonzero[0], hop_length=hop))
    end = min(y.size, int(librosa.frames_to_samples(nonzero[-1] + 1, hop_length=hop)))
    return y[start:end]


def segment(y: np.ndarray, cfg: AudioConfig, *, min_remainder: int) -> list[np.ndarray]:
    """Cut a trimmed utterance into fixed-length segments (SPEC.md step 3).

    An utterance of ``segment_s`` or more is split into non-overlapping segments; a final
    remainder shorter than ``min_remainder`` samples is dropped; each segment is trimmed
    again; a segment shorter than ``segment_s`` is looped (tiled) to full length. Segments
    left with less than one frame after the second trim are dropped.

    Returns
    -------
    list of np.ndarray [shape=(segment_samples,)]
    """
    n = cfg.segment_samples
    y = validate_audio(y)
    if y.size >= n:
        k = y.size // n
        parts = [y[i * n : (i + 1) * n] for i in range(k)]
        rest = y[k * n :]
        if rest.size > 0 and rest.size >= min_remainder:
            parts.append(rest)
    else:
        parts = [y]
    out = []
    for p in parts:
        try:
            p = trim(p, cfg)
        except AudioError:
            continue
        out.append(np.resize(p, n).astype(np.float32) if p.size < n else p[:n].astype(np.float32))
    return out


def augment(y: np.ndarray, sr: int, cfg: AugmentConfig) -> dict[str, np.ndarray]:
    """All copies of ``y``: the original, pitch-shifted and time-stretched (study step 4)."""
    return {v: apply_variant(y, sr, v) for v in cfg.variants()}


def apply_variant(y: np.ndarray, sr: int, variant: str) -> np.ndarray:
    """One copy of ``y`` named as in :meth:`AugmentConfig.variants`."""
    if variant == "orig":
        return y
    if variant.startswith("pitch"):
        steps = float(variant[len("pitch") :])
        return librosa.effects.pitch_shift(y, sr=sr, n_steps=steps).astype(np.float32)
    if variant.startswith("stretch"):
        rate = float(variant[len("stretch") :])
        return librosa.effects.time_stretch(y, rate=rate).astype(np.float32)
    raise ParameterError(f"unknown augmentation variant {variant!r}")
