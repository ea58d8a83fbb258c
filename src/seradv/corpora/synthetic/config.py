"""What to generate: :class:`SyntheticConfig` (validated, hashable) and the files it plans."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from seradv.corpora.synthetic.languages import SYNTHETIC_LANGUAGES
from seradv.corpora.synthetic.profiles import SYNTHETIC_EMOTIONS
from seradv.errors import ParameterError

GENERATOR_VERSION = 1
"""Version of the synthesis algorithm; bumped whenever the generated audio changes."""

STUDY_EMOTIONS: tuple[str, ...] = ("boredom", "disgust", "happiness", "neutral", "sadness")


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate: languages, speakers, emotions, sizes and the random seed.

    Attributes
    ----------
    seed : int
        Non-negative random seed; the same config always gives the same files.
    languages : tuple[str, ...]
        Invented languages to generate, among :data:`SYNTHETIC_LANGUAGES`.
    speakers_per_gender : int
        Speakers per gender and language (1-99); speakers are distinct per language.
    utterances_per_emotion : int
        Utterances per speaker and emotion (1-999).
    emotions : tuple[str, ...]
        Emotions to generate, among :data:`SYNTHETIC_EMOTIONS`.
    sample_rate : int
        Sample rate of the files in Hz (8000-48000).
    min_duration_s, max_duration_s : float
        Range of utterance durations in seconds (0.5-30).
    """

    seed: int = 0
    languages: tuple[str, ...] = ("xa", "xb", "xc")
    speakers_per_gender: int = 3
    utterances_per_emotion: int = 4
    emotions: tuple[str, ...] = STUDY_EMOTIONS
    sample_rate: int = 16000
    min_duration_s: float = 1.5
    max_duration_s: float = 3.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", _check_int("seed", self.seed, 0, None))
        object.__setattr__(self, "languages", _check_names(
            "languages", self.languages, SYNTHETIC_LANGUAGES, "synthetic languages"))
        object.__setattr__(self, "emotions", _check_names(
            "emotions", self.emotions, SYNTHETIC_EMOTIONS, "emotions"))
        for name, lo, hi in (("speakers_per_gender", 1, 99), ("utterances_per_emotion", 1, 999),
                             ("sample_rate", 8000, 48000)):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), lo, hi))
        for name in ("min_duration_s", "max_duration_s"):
            value = getattr(self, name)
            numeric = isinstance(value, (int, float, np.integer, np.floating))
            if isinstance(value, bool) or not numeric or not np.isfinite(value):
                raise ParameterError(f"{name}={value!r} must be a number of seconds")
            if not 0.5 <= value <= 30.0:
                raise ParameterError(f"{name}={value!r} must be between 0.5 and 30 seconds")
            object.__setattr__(self, name, float(value))
        if self.min_duration_s > self.max_duration_s:
            raise ParameterError(
                f"min_duration_s={self.min_duration_s} must not exceed "
                f"max_duration_s={self.max_duration_s}"
            )

    @property
    def n_files(self) -> int:
        """Number of audio files the config produces."""
        return (len(self.languages) * 2 * self.speakers_per_gender * len(self.emotions)
                * self.utterances_per_emotion)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ParameterError`."""
        if not isinstance(data, dict):
            raise ParameterError(f"synthetic config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ParameterError(f"unknown synthetic config keys {unknown}; known: {sorted(known)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)

    def short_hash(self) -> str:
        """12 hex digits identifying this config and the generator version."""
        blob = json.dumps({"version": GENERATOR_VERSION, "config": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _check_int(name: str, value: Any, lo: int, hi: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name}={value!r} must be an integer")
    if value < lo or (hi is not None and value > hi):
        rng = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise ParameterError(f"{name}={value!r} must be {rng}")
    return int(value)


def _check_names(name: str, values: Any, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, (tuple, list)):
        raise ParameterError(f"{name}={values!r} must be a tuple of names, e.g. {allowed[:2]}")
    values = tuple(values)
    if not values:
        raise ParameterError(f"{name} must not be empty; choose among {list(allowed)}")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ParameterError(f"{name}: unknown {what} {bad}; allowed: {list(allowed)}")
    if len(set(values)) != len(values):
        raise ParameterError(f"{name}={list(values)} contains duplicates")
    return values


@dataclass(frozen=True)
class UtteranceSpec:
    """One file of the corpus: who says what with which emotion."""

    language: str
    gender: str
    speaker_number: int
    emotion: str
    index: int

    @property
    def speaker(self) -> str:
        return f"{self.language}-{self.gender}{self.speaker_number:02d}"

    @property
    def file_name(self) -> str:
        return f"{self.language}_{self.speaker}_{self.emotion}_{self.index:03d}.wav"


def plan_utterances(config: SyntheticConfig) -> list[UtteranceSpec]:
    """All utterances of ``config`` in a fixed order (language, gender, speaker, emotion, index)."""
    return [
        UtteranceSpec(lang, gender, spk, emo, idx)
        for lang in config.languages
        for gender in ("f", "m")
        for spk in range(1, config.speakers_per_gender + 1)
        for emo in config.emotions
        for idx in range(1, config.utterances_per_emotion + 1)
    ]
