"""Small helpers that write synthetic speech-like test audio with soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["speech_tone", "write_wav"]


def speech_tone(
    seconds: float = 0.5, sr: int = 16000, freq: float = 180.0, seed: int = 0
) -> np.ndarray:
    """A voiced, speech-like mono signal: a harmonic tone with a syllabic amplitude envelope.

    Short silences at both ends make trimming meaningful; the body is far above -30 dB.
    """
    n = max(int(round(seconds * sr)), 1)
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    f0 = freq * (1.0 + 0.03 * np.sin(2 * np.pi * 3.0 * t))  # slight intonation
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum((0.6 / k) * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, 6))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t) ** 2  # ~4 syllables per second
    edge = max(int(0.05 * sr), 1)  # 50 ms silence at each end, with 10 ms fades
    fade = max(int(0.01 * sr), 1)
    window = np.ones(n)
    window[:edge] = 0.0
    window[-edge:] = 0.0
    ramp = np.linspace(0.0, 1.0, fade)
    if n > 2 * (edge + fade):
        window[edge : edge + fade] = ramp
        window[n - edge - fade : n - edge] = ramp[::-1]
    y = y * envelope * window
    peak = float(np.max(np.abs(y))) or 1.0
    return (0.5 * y / peak).astype(np.float32)


def write_wav(
    path: str | Path,
    seconds: float = 0.5,
    sr: int = 16000,
    channels: int = 1,
    subtype: str = "PCM_16",
    freq: float = 180.0,
) -> Path:
    """Write a speech-like test tone to ``path`` (parents created); return the path.

    Extra channels carry the same tone slightly attenuated, so a downmix is non-silent.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    y = speech_tone(seconds, sr, freq)
    data = np.stack([y * (1.0 - 0.2 * c) for c in range(channels)], axis=1) if channels > 1 else y
    sf.write(str(path), data, sr, subtype=subtype)
    return path
