"""Audio input: read, validate and probe audio files and signals.

Every signal passes through :func:`validate_audio` (dtype, shape, finite values), as in
librosa's ``valid_audio``. File reading goes through :func:`read_audio`, which turns any
library failure into an :class:`~seradv.errors.AudioError` naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from seradv.errors import AudioError

__all__ = [
    "validate_audio",
    "read_audio",
    "probe_audio",
]


def validate_audio(y: np.ndarray, *, where: str = "signal") -> np.ndarray:
    """Check that ``y`` is a non-empty, finite, floating-point mono signal.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        The signal.
    where : str
        Name used in error messages (e.g. the file path).

    Returns
    -------
    np.ndarray [shape=(n,), dtype=float32]
    """
    if not isinstance(y, np.ndarray):
        raise AudioError(f"{where}: audio must be a numpy array, got {type(y).__name__}")
    if y.ndim != 1:
        raise AudioError(f"{where}: audio must be mono with shape (n,), got shape {y.shape}")
    if y.size == 0:
        raise AudioError(f"{where}: audio is empty (0 samples)")
    if not np.issubdtype(y.dtype, np.floating):
        raise AudioError(f"{where}: audio must be floating point, got dtype {y.dtype}")
    if not np.all(np.isfinite(y)):
        n_bad = int(np.size(y) - np.count_nonzero(np.isfinite(y)))
        raise AudioError(f"{where}: audio contains {n_bad} non-finite samples (NaN or inf)")
    return y.astype(np.float32, copy=False)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file as a mono float32 signal at its native sample rate.

    Multi-channel files are downmixed by averaging the channels; 8-, 16-, 24- and
    32-bit integer and float files are all read as float32 in [-1, 1].

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32]
    sr : int

    Raises
    ------
    AudioError
        If the file is missing, unreadable, not audio, truncated, empty or contains
        non-finite samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises a RuntimeError/LibsndfileError
        raise AudioError(f"{path}: not a readable audio file ({_short(exc)})") from None
    # libsndfile silently clamps the frame count of a WAV whose data chunk was cut short to
    # the bytes actually present, so a truncated file reads "fine"; check the header ourselves.
    truncation = _wav_truncation(path)
    if truncation is not None:
        declared, present = truncation
        raise AudioError(
            f"{path}: file is truncated (header declares {declared} samples, "
            f"only {present} present)"
        )
    if info.frames == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: audio data cannot be decoded ({_short(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    if 0 < info.frames < 2**62 and data.shape[0] < info.frames:
        raise AudioError(
            f"{path}: file is truncated (header declares {info.frames} samples, "
            f"only {data.shape[0]} present)"
        )
    y = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    y = validate_audio(np.ascontiguousarray(y), where=str(path))
    return y, int(sr)


def probe_audio(path: str | Path) -> tuple[float, int]:
    """Fully read and validate a file; return ``(duration_s, sample_rate)``."""
    y, sr = read_audio(path)
    return y.size / float(sr), sr


def _wav_truncation(path: Path) -> tuple[int, int] | None:
    """``(declared_frames, present_frames)`` if a RIFF/WAVE file's data chunk is cut short.

    Returns ``None`` for complete files, non-WAV files, RF64/streamed files whose data size
    is unknown (0 or 0xFFFFFFFF), and headers too damaged to tell (libsndfile reports those).
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX"):
                return None
            order = "little" if head[:4] == b"RIFF" else "big"
            block_align = 0
            pos = 12
            for _ in range(1000):  # bounded walk over the chunks
                fh.seek(pos)
                hdr = fh.read(8)
                if len(hdr) < 8:
                    return None
                chunk_id, chunk_size = hdr[:4], int.from_bytes(hdr[4:], order)
                if chunk_id == b"fmt ":
                    fmt = fh.read(min(chunk_size, 16))
                    if len(fmt) >= 14:
                        block_align = int.from_bytes(fmt[12:14], order)
                elif chunk_id == b"data":
                    if chunk_size in (0, 0xFFFFFFFF) or block_align <= 0:
                        return None
                    present_bytes = max(size - (pos + 8), 0)
                    declared = chunk_size // block_align
                    present = present_bytes // block_align
                    return (declared, present) if present < declared else None
                pos += 8 + chunk_size + (chunk_size & 1)
    except OSError:
        return None
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
