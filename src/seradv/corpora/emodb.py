"""EmoDB (Berlin Database of Emotional Speech), German, 10 speakers, 535 files.

File names: ``03a01Fa.wav`` = speaker (2 digits) + text (3) + emotion letter (1) + version (1).
Emotion letters: W anger, L boredom, E disgust, A fear, F happiness, T sadness, N neutral.
Burkhardt et al., "A Database of German Emotional Speech", Interspeech 2005.
"""

from __future__ import annotations

import re
from pathlib import Path

from seradv.corpora.base import Recipe, SkipFile

EMOTION_CODES = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
SPEAKER_GENDER = {
    "03": "m", "10": "m", "11": "m", "12": "m", "15": "m",
    "08": "f", "09": "f", "13": "f", "14": "f", "16": "f",
}
_NAME = re.compile(r"^(?P<speaker>\d{2})(?P<text>[a-z]\d{2})(?P<emotion>[A-Z])(?P<version>[a-z])$")


def parse_emodb(path: Path) -> dict:
    """Parse an EmoDB file name into speaker, gender, emotion and utterance id."""
    m = _NAME.match(path.stem)
    if m is None:
        raise SkipFile(f"name {path.name!r} does not follow the EmoDB scheme (e.g. '03a01Fa.wav')")
    code = m["emotion"]
    if code not in EMOTION_CODES:
        raise SkipFile(
            f"unknown EmoDB emotion code {code!r} in {path.name!r} "
            f"(known: {', '.join(sorted(EMOTION_CODES))})"
        )
    speaker = m["speaker"]
    if speaker not in SPEAKER_GENDER:
        raise SkipFile(f"unknown EmoDB speaker {speaker!r} in {path.name!r}: gender not known")
    return {
        "speaker": f"emodb-{speaker}",
        "gender": SPEAKER_GENDER[speaker],
        "emotion": EMOTION_CODES[code],
        "utterance": path.stem,
    }


RECIPE = Recipe(
    name="emodb",
    language="de",
    parse=parse_emodb,
    study_emotions=("boredom", "disgust", "happiness", "neutral", "sadness"),
    hyperparameters={"dropout": 0.3, "lstm_dropout": 0.2, "lr": 1e-3, "batch_size": 32},
    example_name="03a01Fa.wav",
    description="Berlin Database of Emotional Speech (German, 10 actors)",
    cv_folds=5,  # speaker_cv default: 10 speakers: 1 m + 1 f per fold
)
