"""The second architecture, small_cnn (seradv.models.small_cnn): registry, shapes, errors, that every
input cell reaches the output, and that it learns the tone classes in a few steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.waveform import SR, tone_batch
from seradv.errors import ModelError
from seradv.features import Standardizer, log_mel
from seradv.models import MODELS, SmallCNN, build_model, check_model, count_parameters


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_small_cnn_is_registered_and_keeps_the_model_contract():
    assert "small_cnn" in MODELS
    m = build_model("small_cnn", 5, dropout=0.2, lstm_dropout=0.5)  # lstm_dropout ignored
    assert isinstance(m, SmallCNN) and m.dropout.p == 0.2
    check_model(m, 5)
    assert 50_000 < count_parameters(m) < 200_000  # ~98 k, the CNN-LSTM has 3.96 M
    m.eval()
    x = torch.randn(3, 261, 128)
    with torch.no_grad():
        out = m(x)
        assert out.shape == (3, 5) and torch.isfinite(out).all()
        torch.testing.assert_close(m(x[:, None]), out)  # (batch, 1, T, n_mels) too


def test_small_cnn_refuses_bad_inputs_and_settings():
    m = SmallCNN(3)
    with pytest.raises(ModelError, match="expects input of shape"):
        m(torch.zeros(2, 8, 128))  # shorter than the four poolings need
    with pytest.raises(ModelError, match="expects input of shape"):
        m(torch.zeros(2, 2, 261, 128))
    with pytest.raises(ModelError, match="n_classes"):
        SmallCNN(1)
    with pytest.raises(ModelError, match="channels"):
        SmallCNN(3, channels=())
    with pytest.raises(ModelError, match="dropout"):
        SmallCNN(3, dropout=1.0)


def test_every_input_cell_reaches_the_output():
    torch.manual_seed(0)
    m = SmallCNN(4).eval()
    x = torch.randn(2, 261, 128, requires_grad=True)
    m(x).sum().backward()
    g = x.grad.abs().sum(0)
    assert torch.isfinite(g).all()
    assert (g.sum(1) > 0).all() and (g.sum(0) > 0).all()  # no blind frames or bands (the CNN-LSTM has some)


def test_small_cnn_learns_the_tone_classes_in_a_few_steps():
    x_wave, y = tone_batch(range(3))
    feats = np.stack([log_mel(w, SR) for w in x_wave])
    xt = torch.as_tensor(Standardizer.fit(feats).transform(feats))
    yt = torch.as_tensor(y)
    torch.manual_seed(0)
    m = build_model("small_cnn", 3, dropout=0.0)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(xt), yt)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0]  # measured: 1.27 -> 0.02
    m.eval()  # BatchNorm's running statistics have seen 12 batches only: well above chance (1/3) already
    with torch.no_grad():
        assert float((m(xt).argmax(1) == yt).float().mean()) > 0.6  # measured 0.89
