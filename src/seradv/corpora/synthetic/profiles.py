"""Emotion profiles: the prosody and voice quality of each emotion, and how much they vary."""

from __future__ import annotations

from seradv.vocab import EMOTIONS

# Prosody: f0 = F0 level in semitones re the speaker's base; range = factor on intonation
# excursions; tempo = factor on speaking rate; energy = level in dB; final = phrase-final F0
# movement (st); peak = accent peak shift (s, < 0 early); attack = onset smoothing (ms);
# tremor = F0 tremor depth (st).
_PROSODY_KEYS = ("f0", "range", "tempo", "energy", "final", "peak", "attack", "tremor")
_PROSODY: dict[str, tuple[float, ...]] = {
    #               f0  range  tempo  energy  final    peak  attack  tremor
    "neutral":   ( 0.00,  1.00, 1.000,    0.0, -3.00,  0.000,     12,   0.00),
    "happiness": ( 5.75,  2.21, 1.241,    6.9,  3.90,  0.052,      5,   0.00),
    "sadness":   (-2.59,  0.14, 0.655,   -8.6, -1.28,  0.000,     26,   0.44),
    "boredom":   (-4.31,  0.05, 0.759,   -5.2, -0.41,  0.000,     17,   0.00),
    "disgust":   (-1.72,  1.17, 0.724,    0.0, -6.45, -0.086,     43,   0.00),
    "anger":     ( 5.17,  1.69, 1.172,   12.1, -4.72, -0.034,      3,   0.00),
    "fear":      ( 8.62,  0.83, 1.431,    0.0,  2.17,  0.000,      9,   1.21),
    "calm":      (-1.72,  0.48, 0.828,   -5.2, -2.14,  0.000,     17,   0.00),
    "surprise":  ( 8.62,  2.72, 1.000,    5.2, 12.52,  0.034,      5,   0.00),
}
# Voice quality: oq = glottal open quotient; breath = aspiration-to-voice ratio; jitter =
# relative period sd; tilt = pre-emphasis coefficient (> 0 bright, < 0 dark); creak =
# phrase-final creak strength; f1, f2 = formant factors (smiling raises F2, pharyngealised
# disgust raises F1 and lowers F2, sad lip protrusion lowers both).
_VOICE_KEYS = ("oq", "breath", "jitter", "tilt", "creak", "f1", "f2")
_VOICE: dict[str, tuple[float, ...]] = {
    #               oq  breath  jitter    tilt  creak     f1     f2
    "neutral":   (0.600, 0.060, 0.0100,  0.000, 0.100, 1.000, 1.000),
    "happiness": (0.427, 0.043, 0.0117,  0.598, 0.000, 1.052, 1.121),
    "sadness":   (0.850, 0.388, 0.0204, -0.770, 0.186, 0.931, 0.897),
    "boredom":   (0.703, 0.112, 0.0117, -0.431, 0.531, 0.966, 0.966),
    "disgust":   (0.341, 0.163, 0.0445,  0.172, 0.962, 1.172, 0.862),
    "anger":     (0.278, 0.026, 0.0273,  0.850, 0.100, 1.138, 1.034),
    "fear":      (0.514, 0.215, 0.0445,  0.172, 0.000, 1.000, 1.069),
    "calm":      (0.686, 0.129, 0.0083, -0.345, 0.100, 0.983, 0.983),
    "surprise":  (0.427, 0.095, 0.0134,  0.431, 0.000, 1.086, 1.086),
}
PROFILE_KEYS = _PROSODY_KEYS + _VOICE_KEYS
PROFILES: dict[str, dict[str, float]] = {
    emo: dict(zip(PROFILE_KEYS, _PROSODY[emo] + _VOICE[emo], strict=True)) for emo in _PROSODY
}
# Per-utterance random variation (sd) of each profile parameter, and the clip ranges.
PROFILE_SD: dict[str, float] = {
    "f0": 1.6, "range": 0.25, "tempo": 0.07, "energy": 2.0, "final": 1.5, "peak": 0.02,
    "attack": 4.0, "tremor": 0.1, "oq": 0.06, "breath": 0.04, "jitter": 0.005, "tilt": 0.15,
    "creak": 0.12, "f1": 0.02, "f2": 0.02,
}
PROFILE_CLIP: dict[str, tuple[float, float]] = {
    "range": (0.15, 3.0), "tempo": (0.6, 1.5), "energy": (-11.0, 11.0), "attack": (3.0, 50.0),
    "tremor": (0.0, 1.5), "oq": (0.3, 0.85), "breath": (0.0, 0.5), "jitter": (0.002, 0.08),
    "tilt": (-0.8, 0.85), "creak": (0.0, 1.0), "f1": (0.85, 1.2), "f2": (0.85, 1.15),
}
VARIATION = 1.0  # global scale of the per-utterance and per-speaker variation

SYNTHETIC_EMOTIONS: tuple[str, ...] = tuple(e for e in EMOTIONS if e in PROFILES)
"""Emotions the generator can express (names of :data:`seradv.vocab.EMOTIONS`)."""
