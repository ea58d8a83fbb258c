"""EMOVO (Italian emotional speech), 6 actors (f1-f3, m1-m3), 14 sentences, 588 files.

File names: ``dis-f1-b1.wav`` = emotion code - actor - sentence, in folders ``f1/`` ... ``m3/``
(nested variously). Emotion codes: dis disgust, gio joy (happiness), neu neutral, pau fear,
rab anger, sor surprise, tri sadness. Real files are 48 kHz stereo.
Costantini et al., "EMOVO Corpus: an Italian Emotional Speech Database", LREC 2014.
"""

from __future__ import annotations

import re
from pathlib import Path

from seradv.corpora.base import Recipe, SkipFile

EMOTION_CODES: dict[str, str] = {
    "dis": "disgust",
    "gio": "happiness",
    "neu": "neutral",
    "pau": "fear",
    "rab": "anger",
    "sor": "surprise",
    "tri": "sadness",
}
ACTOR_GENDER: dict[str, str] = {
    "f1": "f", "f2": "f", "f3": "f",
    "m1": "m", "m2": "m", "m3": "m",
}
_NAME = re.compile(
    r"^(?P<emotion>[a-z]+)-(?P<actor>[a-z]+\d+)-(?P<sentence>[a-z]+\d+)$", re.IGNORECASE
)


def parse_emovo(path: Path) -> dict:
    """Parse an EMOVO file name into speaker, gender, emotion and utterance id."""
    m = _NAME.match(path.stem)
    if m is None:
        raise SkipFile(
            f"name {path.name!r} does not follow the EMOVO scheme "
            f"emotion-actor-sentence (e.g. 'dis-f1-b1.wav')"
        )
    code = m["emotion"].lower()
    if code not in EMOTION_CODES:
        raise SkipFile(
            f"unknown EMOVO emotion code {m['emotion']!r} in {path.name!r} "
            f"(known: {', '.join(sorted(EMOTION_CODES))})"
        )
    actor = m["actor"].lower()
    if actor not in ACTOR_GENDER:
        raise SkipFile(
            f"unknown EMOVO actor {m['actor']!r} in {path.name!r} "
            f"(known: {', '.join(sorted(ACTOR_GENDER))}): gender not known"
        )
    return {
        "speaker": f"emovo-{actor}",
        "gender": ACTOR_GENDER[actor],
        "emotion": EMOTION_CODES[code],
        "utterance": path.stem,
    }


RECIPE = Recipe(
    name="emovo",
    language="it",
    parse=parse_emovo,
    study_emotions=("disgust", "fear", "happiness", "neutral", "surprise"),
    hyperparameters={"dropout": 0.3, "lstm_dropout": 0.0, "lr": 1e-4, "batch_size": 8},
    example_name="dis-f1-b1.wav",
    description="EMOVO Italian emotional speech (6 actors, 7 emotions)",
    cv_folds=3,  # speaker_cv default: 6 speakers: 1 m + 1 f per fold
)
