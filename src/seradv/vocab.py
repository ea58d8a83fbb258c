"""The one shared vocabulary of labels: emotions, genders, languages.

Every corpus recipe maps its own codes onto these names, and tables are validated
against them, so labels never drift between corpora ("female" / "F" / "f").
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = (
    "anger",
    "boredom",
    "calm",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
)
"""Canonical emotion names, shared by all corpora."""

GENDERS: tuple[str, ...] = ("m", "f")
"""Canonical gender codes: ``m`` (male) and ``f`` (female)."""

GENDER_NAMES: dict[str, str] = {"m": "Male", "f": "Female"}

LANGUAGES: dict[str, str] = {
    "de": "German",
    "it": "Italian",
    "en": "English",
    "xa": "Synthetic A",
    "xb": "Synthetic B",
    "xc": "Synthetic C",
}
"""ISO 639-1 codes (``x?`` for the synthetic corpus's invented languages)."""

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "corpus",
    "language",
    "speaker",
    "gender",
    "emotion",
    "utterance",
    "duration_s",
    "sample_rate",
)
"""Columns of every corpus table, in this order."""
