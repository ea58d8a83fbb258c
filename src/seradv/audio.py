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
        y, sr = _read_mono(path)
    except Exception as exc:
        raise AudioError(f"{path}: audio data cannot be decoded ({_short(exc)})") from None
    if y.shape[0] == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    if 0 < info.frames < 2**62 and y.shape[0] < info.frames:
        raise AudioError(
            f"{path}: file is truncated (header declares {info.frames} samples, "
            f"only {y.shape[0]} present)"
        )
    y = validate_audio(y, where=str(path))
    return y, int(sr)


READ_BLOCK_FRAMES = 2**20
"""Frames per block of :func:`read_audio` (about 22 s at 48 kHz)."""


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    """The file's samples downmixed to mono float32 (the channels' mean), decoded in blocks of
    :data:`READ_BLOCK_FRAMES`: the memory a file needs is its mono signal plus one block, not
    all its channels at once (a 1-hour 48 kHz stereo file: 0.7 GB instead of 2.1 GB). Each
    frame's mean is computed as on the whole file, so the samples are the same, bit for bit."""
    with sf.SoundFile(str(path)) as fh:
        sr, declared = fh.samplerate, fh.frames
        y = np.empty(declared if 0 < declared < 2**62 else READ_BLOCK_FRAMES, np.float32)
        n = 0
        for block in fh.blocks(blocksize=READ_BLOCK_FRAMES, dtype="float32", always_2d=True):
            m = block.shape[0]
            if n + m > y.shape[0]:  # more frames than the header declared (or none declared)
                y = np.concatenate([y[:n], np.empty(max(n + m, 2 * y.shape[0]) - n, np.float32)])
            if block.shape[1] > 1:
                np.mean(block, axis=1, out=y[n : n + m])
            else:
                y[n : n + m] = block[:, 0]
            n += m
    return (y if n == y.shape[0] else y[:n].copy()), int(sr)


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
