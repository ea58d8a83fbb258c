"""Phonology of the three invented languages: vowels, consonants, syllable structure, rhythm."""

from __future__ import annotations

from dataclasses import dataclass

from seradv.vocab import LANGUAGES

# Adult male reference formants F1..F4 (Hz).
VOWELS: dict[str, tuple[float, float, float, float]] = {
    "a": (730, 1100, 2450, 3400), "e": (450, 1950, 2550, 3500), "i": (280, 2250, 2950, 3700),
    "o": (480, 850, 2400, 3350), "u": (310, 800, 2250, 3300), "E": (580, 1800, 2500, 3450),
    "O": (600, 900, 2450, 3350), "@": (500, 1450, 2450, 3400), "y": (280, 1750, 2150, 3300),
    "2": (390, 1500, 2250, 3350), "1": (320, 1450, 2400, 3400), "ae": (680, 1700, 2450, 3450),
    "A": (720, 1050, 2550, 3400),
}
NEUTRAL_F = VOWELS["@"]

# Noise bands (Hz) of fricatives and bursts.
BANDS: dict[str, tuple[float, float]] = {
    "s": (3800.0, 7800.0), "sh": (1900.0, 5200.0), "f": (1000.0, 7500.0),
    "lab": (300.0, 2000.0), "alv": (2500.0, 6000.0), "vel": (1200.0, 3200.0),
}
BAND_NAMES = tuple(BANDS)

# symbol: (kind, formant loci, voicing amplitude, aspiration, noise band, noise amplitude)
CONSONANTS: dict[str, tuple[str, tuple[float, ...], float, float, str | None, float]] = {
    "p": ("stop", (350, 900, 2200, 3300), 0.0, 0.25, "lab", 0.45),
    "t": ("stop", (350, 1700, 2600, 3400), 0.0, 0.25, "alv", 0.5),
    "k": ("stop", (350, 1900, 2300, 3300), 0.0, 0.25, "vel", 0.5),
    "b": ("stop", (300, 900, 2200, 3300), 0.12, 0.0, "lab", 0.3),
    "d": ("stop", (300, 1700, 2600, 3400), 0.12, 0.0, "alv", 0.3),
    "g": ("stop", (300, 1900, 2300, 3300), 0.12, 0.0, "vel", 0.3),
    "m": ("son", (280, 1000, 2200, 3300), 0.35, 0.0, None, 0.0),
    "n": ("son", (280, 1500, 2500, 3400), 0.35, 0.0, None, 0.0),
    "l": ("son", (360, 1150, 2700, 3400), 0.6, 0.0, None, 0.0),
    "r": ("son", (420, 1250, 1650, 3200), 0.55, 0.0, None, 0.0),
    "j": ("son", (280, 2150, 2900, 3600), 0.55, 0.0, None, 0.0),
    "w": ("son", (300, 650, 2200, 3300), 0.5, 0.0, None, 0.0),
    "s": ("fric", (350, 1700, 2600, 3400), 0.0, 0.0, "s", 0.45),
    "S": ("fric", (330, 1800, 2300, 3300), 0.0, 0.0, "sh", 0.45),
    "f": ("fric", (350, 1000, 2300, 3300), 0.0, 0.0, "f", 0.2),
    "v": ("fric", (330, 1000, 2300, 3300), 0.3, 0.0, "f", 0.12),
    "z": ("fric", (330, 1700, 2600, 3400), 0.3, 0.0, "s", 0.25),
    "h": ("fric", NEUTRAL_F, 0.0, 0.55, None, 0.0),
}


@dataclass(frozen=True)
class Language:
    """Syllable structure and rhythm of one invented language."""

    onsets: tuple[str, ...]           # space-separated consonant strings, "" = no onset
    onset_weights: tuple[float, ...]
    codas: tuple[str, ...]
    coda_weights: tuple[float, ...]
    stressed_vowels: tuple[str, ...]
    unstressed_vowels: tuple[str, ...]
    word_sizes: tuple[int, ...]
    stress: str                       # "penult", "initial" or "random"
    cons_s: float                     # consonant duration
    vowel_s: float                    # vowel duration (unstressed / short)
    stressed_vowel_s: float
    long_vowel_s: float               # xc: long vowels
    long_prob: float
    duration_sd: float                # log-normal sd of segment durations (rhythm regularity)
    stress_timed: bool
    unstressed_gain: float
    accent_st: float
    accent_kind: str                  # "bump" or "drop" (pitch accent with fall)


LANGS: dict[str, Language] = {
    # syllable-timed, CV, even durations, 5 cardinal vowels
    "xa": Language(
        onsets=("p", "t", "k", "m", "n", "l", "s", "b", "d", ""),
        onset_weights=(1, 1.2, 1, 1, 1, 1, 1, 0.6, 0.6, 0.6),
        codas=("",), coda_weights=(1,),
        stressed_vowels=("a", "e", "i", "o", "u"), unstressed_vowels=("a", "e", "i", "o", "u"),
        word_sizes=(2, 3, 3), stress="penult",
        cons_s=0.065, vowel_s=0.115, stressed_vowel_s=0.125, long_vowel_s=0.125, long_prob=0.0,
        duration_sd=0.06, stress_timed=False, unstressed_gain=0.85, accent_st=2.0,
        accent_kind="bump",
    ),
    # stress-timed, CVC/CCVC, long stressed vs short reduced syllables
    "xb": Language(
        onsets=("p", "t", "k", "b", "d", "g", "f", "s", "S", "m", "n", "l", "r", "v", "z",
                "s t", "S t", "p r", "t r", "k r", "p l", "k l", "f r", "S p", "b r", "g r"),
        onset_weights=(1, 1, 1, .7, .7, .7, .8, .8, .6, .7, .7, .7, .7, .4, .4,
                       .6, .5, .5, .5, .5, .4, .4, .5, .4, .4, .4),
        codas=("t", "k", "s", "n", "l", "r", "S", "f", "m", "s t", "n t", "k s", ""),
        coda_weights=(1, 1, 1, 1, .8, .8, .6, .5, .7, .5, .5, .4, .8),
        stressed_vowels=("i", "E", "a", "O", "u"), unstressed_vowels=("@", "@", "@", "i", "a"),
        word_sizes=(1, 2, 2, 3), stress="initial",
        cons_s=0.07, vowel_s=0.055, stressed_vowel_s=0.175, long_vowel_s=0.175, long_prob=0.0,
        duration_sd=0.13, stress_timed=True, unstressed_gain=0.55, accent_st=4.0,
        accent_kind="bump",
    ),
    # V/CV, vowel-length contrast, front rounded / central vowels, pitch accent with drop
    "xc": Language(
        onsets=("m", "n", "j", "w", "h", "k", "l", ""),
        onset_weights=(1, 1, .8, .8, .8, .8, .8, 2.2),
        codas=("",), coda_weights=(1,),
        stressed_vowels=("y", "2", "1", "ae", "A", "o"),
        unstressed_vowels=("y", "2", "1", "ae", "A", "o"),
        word_sizes=(2, 3, 4), stress="random",
        cons_s=0.06, vowel_s=0.075, stressed_vowel_s=0.08, long_vowel_s=0.2, long_prob=0.35,
        duration_sd=0.08, stress_timed=False, unstressed_gain=0.8, accent_st=3.0,
        accent_kind="drop",
    ),
}

SYNTHETIC_LANGUAGES: tuple[str, ...] = tuple(k for k in LANGS if k in LANGUAGES)
"""Invented languages the generator can speak (codes of :data:`seradv.vocab.LANGUAGES`)."""
