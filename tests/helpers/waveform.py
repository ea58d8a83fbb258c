"""A tiny waveform classifier on speech-like tones: TinyNet behind a FrontEnd with its standardizer."""

from __future__ import annotations

import numpy as np
import torch

from tests.helpers.audio import speech_tone
from tests.helpers.corpus import TinyNet
from seradv.features import Standardizer, log_mel
from seradv.frontend import FrontEnd, WaveformModel

__all__ = ["SR", "N", "tone_batch", "tone_waveform_model"]

SR = 16000
N = 48000
FREQ = (110.0, 180.0, 300.0)


def tone_batch(seeds) -> tuple[np.ndarray, np.ndarray]:
    """3 s tones ``[shape=(3 * len(seeds), 48000)]`` of three pitch classes and their labels."""
    ys, labels = [], []
    for s in seeds:
        for k, f in enumerate(FREQ):
            ys.append(speech_tone(3.0, SR, freq=f * (1 + 0.04 * ((s % 5) - 2)), seed=s))
            labels.append(k)
    return np.stack(ys), np.array(labels, np.int64)


def tone_waveform_model(steps: int = 60, seed: int = 0) -> WaveformModel:
    """TinyNet trained for ``steps`` full-batch Adam steps on the log-Mel of 30 tones (seeds 0-9),
    in eval mode behind a FrontEnd with the same standardizer (as tests/attacks/test_waveform.py)."""
    x_train, y_train = tone_batch(range(10))
    feats = np.stack([log_mel(y, SR) for y in x_train])
    scaler = Standardizer.fit(feats)
    torch.manual_seed(seed)
    model = TinyNet(3)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    xt, yt = torch.as_tensor(scaler.transform(feats)), torch.as_tensor(y_train)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    return WaveformModel(FrontEnd(SR, standardizer=scaler, n_samples=N), model).eval()
