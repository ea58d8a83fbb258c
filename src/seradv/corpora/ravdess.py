"""RAVDESS (Ryerson Audio-Visual Database of Emotional Speech and Song), English.

Only the audio-only speech part is used: 24 actors (``Actor_01`` ... ``Actor_24``; odd = male,
even = female), 1440 files. File names: ``03-01-05-01-02-01-12.wav`` =
modality - vocal channel - emotion - intensity - statement - repetition - actor.
Modality 01 full-AV, 02 video-only, 03 audio-only; vocal channel 01 speech, 02 song.
Emotions: 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised.
Livingstone & Russo, PLoS ONE 13(5), 2018.
"""

from __future__ import annotations

import re
from pathlib import Path

from seradv.corpora.base import Recipe, SkipFile

EMOTION_CODES: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
MODALITIES: dict[str, str] = {"01": "full audio-video", "02": "video-only", "03": "audio-only"}
CHANNELS: dict[str, str] = {"01": "speech", "02": "song"}
_FIELDS = ("modality", "channel", "emotion", "intensity", "statement", "repetition", "actor")
_NAME = re.compile(r"^" + "-".join(rf"(?P<{f}>\d{{2}})" for f in _FIELDS) + r"$")


def parse_ravdess(path: Path) -> dict:
    """Parse a RAVDESS file name into speaker, gender, emotion and utterance id.

    Only audio-only (modality 03) speech (vocal channel 01) files are accepted.
    """
    m = _NAME.match(path.stem)
    if m is None:
        raise SkipFile(
            f"name {path.name!r} does not follow the RAVDESS scheme of 7 two-digit fields "
            f"modality-channel-emotion-intensity-statement-repetition-actor "
            f"(e.g. '03-01-05-01-02-01-12.wav')"
        )
    _require(m["modality"], "03", MODALITIES, "modality", "audio-only files (modality 03) are used", path)
    _require(m["channel"], "01", CHANNELS, "vocal channel", "speech (channel 01) is used", path)
    code = m["emotion"]
    if code not in EMOTION_CODES:
        raise SkipFile(
            f"unknown RAVDESS emotion code {code!r} in {path.name!r} "
            f"(known: {', '.join(sorted(EMOTION_CODES))})"
        )
    for name in ("intensity", "statement", "repetition"):
        if m[name] not in ("01", "02"):
            raise SkipFile(
                f"invalid RAVDESS {name} {m[name]!r} in {path.name!r} (expected 01 or 02)"
            )
    actor = int(m["actor"])
    if not 1 <= actor <= 24:
        raise SkipFile(
            f"unknown RAVDESS actor {m['actor']!r} in {path.name!r} (expected 01 to 24)"
        )
    return {
        "speaker": f"ravdess-{actor:02d}",
        "gender": "m" if actor % 2 == 1 else "f",
        "emotion": EMOTION_CODES[code],
        "utterance": path.stem,
    }


def _require(value: str, wanted: str, names: dict[str, str], field: str, kept: str, path: Path) -> None:
    """Skip a file whose ``field`` code is not ``wanted``, naming what the code means."""
    if value != wanted:
        what = names.get(value, "unknown")
        raise SkipFile(f"RAVDESS {field} {value!r} ({what}) in {path.name!r}: only {kept}")


RECIPE = Recipe(
    name="ravdess",
    language="en",
    parse=parse_ravdess,
    study_emotions=("disgust", "fear", "happiness", "sadness", "surprise"),
    hyperparameters={"dropout": 0.6, "lstm_dropout": 0.2, "lr": 1e-3, "batch_size": 128},
    example_name="03-01-05-01-02-01-12.wav",
    description="RAVDESS audio-only speech (English, 24 actors, 8 emotions)",
    cv_folds=4,  # speaker_cv default: 24 actors: 3 m + 3 f per fold
)
