"""A tiny test corpus ("tones") and a tiny model ("tiny") registered for the tests."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import torch
from torch import nn

from tests.helpers.audio import speech_tone
from seradv.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from seradv.corpora import CORPORA, Recipe, SkipFile, register_corpus
from seradv.models import MODELS, register_model

EMOS = ("happiness", "neutral", "sadness")
FREQ = {"happiness": 300.0, "neutral": 180.0, "sadness": 110.0}


def _parse_tones(path: Path) -> dict:
    parts = path.stem.split("_")
    if len(parts) != 3 or parts[1] not in FREQ:
        raise SkipFile(f"name {path.name!r} does not follow the tones scheme")
    spk = parts[0]
    return {"speaker": spk, "gender": spk[0], "emotion": parts[1], "utterance": path.stem}


if "tones" not in CORPORA:
    register_corpus(Recipe(name="tones", language="en", parse=_parse_tones, study_emotions=EMOS,
                           hyperparameters={"dropout": 0.1, "lstm_dropout": 0.0, "lr": 3e-3, "batch_size": 8},
                           example_name="m0_happiness_0.wav"))


class TinyNet(nn.Module):
    """A small model with the seradv contract: (batch, 261, 128) -> logits."""

    def __init__(self, n_classes: int = 3, **_: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d((8, 16)), nn.Flatten(), nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1))


if "tiny" not in MODELS:
    register_model("tiny", lambda n_classes, **hp: TinyNet(n_classes))


def make_tone_corpus(root: Path, n_per_gender: int = 3, per: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for g in ("m", "f"):
        for s in range(n_per_gender):
            for emo in EMOS:
                for i in range(per):
                    k += 1
                    f0 = FREQ[emo] * (1.3 if g == "f" else 1.0) * (1 + 0.03 * s)
                    y = speech_tone(1.2 + 0.4 * i, 16000, freq=f0, seed=k)
                    sf.write(root / f"{g}{s}_{emo}_{i}.wav", y, 16000, subtype="PCM_16")
    return root


def tone_config(data_dir: Path, **train) -> RunConfig:
    return RunConfig(
        name="t",
        data=DataConfig(corpus="tones", data_dir=str(data_dir)),
        augment=AugmentConfig(pitch_steps=(1.5,), stretch_rates=()),
        train=TrainConfig(model="tiny", epochs=train.pop("epochs", 3), patience=5, **train),
        n_jobs=1,
    )






def prepared_tone_run(root: Path) -> Path:
    """A tone corpus under ``root`` prepared (not trained) into ``root / "run"``."""
    from seradv import pipeline

    data = make_tone_corpus(root / "tones", n_per_gender=3, per=2)
    run_dir = root / "run"
    pipeline.prepare_run(tone_config(data), run_dir)
    return run_dir
