"""Benchmark: peak memory of preparing one long file, step by step (issue 16, "peak memory").

Writes a long 48 kHz stereo 16-bit WAV (``--minutes``, a speech-like tone with pauses, in
blocks), then does what ``seradv prepare`` does to one file (``prepare._feature_worker``:
read and downmix, resample to 16 kHz, trim silence, cut 3 s segments, their log-Mel
features) and prints the peak resident memory of each step (``VmHWM`` after a reset through
``/proc/self/clear_refs``; Linux only) and the sizes of what each step holds.

``--before`` runs it as seradv did before (2026-12-04): ``soundfile.read`` of every channel
then the mean, and ``librosa.effects.trim`` framing the whole signal at once (now: decoded
in blocks, trimmed in chunks of frames; the same samples either way).

Usage: ``.venv/bin/python benchmarks/long_file_memory.py --minutes 60``
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from seradv import audio as audio_mod
from seradv import segments as segments_mod
from seradv.audio import read_audio
from seradv.config import AudioConfig, FeatureConfig
from seradv.features import log_mel
from seradv.progress import peak_memory_mb, reset_peak_memory
from seradv.segments import resample, segment, trim


def write_long_wav(path: Path, minutes: float, sr: int = 48000) -> None:
    """A stereo 16-bit WAV of ``minutes``: 2 s of a 140 Hz harmonic tone, 0.5 s of near silence, repeated."""
    t = np.arange(int(2.5 * sr)) / sr
    tone = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6)) * 0.2
    tone[int(2.0 * sr):] *= 1e-3
    unit = np.stack([tone, 0.7 * tone], axis=1).astype(np.float32)
    reps = int(np.ceil(minutes * 60 / 2.5))
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=2, subtype="PCM_16") as fh:
        for _ in range(reps):
            fh.write(unit)


def _whole_read(path: Path) -> tuple[np.ndarray, int]:
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.mean(axis=1)), int(sr)


def _step(name: str, fn: Callable[[], Any], rows: list[str]) -> Any:
    reset_peak_memory()
    t0 = time.perf_counter()
    out = fn()
    peak = peak_memory_mb()
    arrays = out if isinstance(out, (list, tuple)) else [out]
    size = sum(getattr(a, "nbytes", 0) for a in arrays)
    rows.append(f"| {name} | {peak:,.0f} | {size / 2**20:,.0f} | {time.perf_counter() - t0:.1f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--before", action="store_true", help="whole-file read and one-shot trim, as before")
    args = ap.parse_args()
    audio, feats = AudioConfig(), FeatureConfig()
    if args.before:
        audio_mod._read_mono = _whole_read
        segments_mod.TRIM_CHUNK_FRAMES = 2**62  # librosa.effects.trim on the whole signal
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        write_long_wav(path, args.minutes)
        rows = ["| step | peak resident MiB | output MiB | s |", "|---|---|---|---|"]
        reset_peak_memory()
        rows.append(f"| (process before the steps) | {peak_memory_mb():,.0f} | - | - |")
        y, sr = _step("read + downmix" + (" (whole file)" if args.before else " (blocks)"),
                      lambda: read_audio(path), rows)
        y = _step("resample 48 -> 16 kHz", lambda: resample(y, sr, audio.sample_rate), rows)
        y = _step("trim silence" + (" (one shot)" if args.before else " (chunks)"), lambda: trim(y, audio), rows)
        segs = _step("segments (3 s)", lambda: segment(y, audio, min_remainder=1), rows)
        _step("log-Mel features", lambda: np.stack([log_mel(s, audio.sample_rate, feats) for s in segs]), rows)
    print(f"{platform.machine()}, {args.minutes:g} min 48 kHz stereo 16-bit WAV "
          f"({path.name}, {len(segs)} segments)")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
