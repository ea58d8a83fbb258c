"""What the study's CNN-LSTM can see: its pooling arithmetic drops input cells.

Per 29-frame chunk, conv 5 -> pool 4/2 -> conv 3 -> pool 2/2 -> conv 3 -> pool 2/1 reduces the
time axis 29 -> 25 -> 11 -> 9 -> 4 -> 2 -> 1 and the Mel axis 128 -> ... -> 26 with floors that
never reach the last 3 frames of a chunk nor the top 2 Mel bands: 27 of 261 frames (10 %) and
2 of 128 bands never influence the output. Attacks leave those cells untouched (zero gradient);
the report's difference spectrograms show them as blank stripes. A property of the study's
architecture, kept for fidelity; this test documents it and guards the model's layout.
"""

from __future__ import annotations

import torch

from seradv.models import CNNLSTM


def test_cnn_lstm_ignores_the_last_three_frames_of_each_chunk_and_the_top_two_bands():
    torch.manual_seed(0)
    m = CNNLSTM().eval()
    x = torch.randn(2, 261, 128, requires_grad=True)
    m(x).sum().backward()
    g = x.grad.abs()
    per_frame = g.sum((0, 2)).reshape(9, 29)
    assert (per_frame[:, 26:] == 0).all() and (per_frame[:, :26] > 0).all()
    per_band = g.sum((0, 1))
    assert (per_band[126:] == 0).all() and (per_band[:126] > 0).all()
