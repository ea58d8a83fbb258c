"""The CNN-LSTM's fast paths (seradv.models.fast_paths): each against the plain declared layers
(outputs and input gradients equal within float tolerance), and each used only when its
condition holds (:func:`cnn_path`)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from seradv.models import CNNLSTM
from seradv.models.fast_paths import (CNN_PATHS, FastCNN, _ConvPoolInputGrad, cnn_path, conv2d_input_grad,
                                      conv_pool_input_only, pool_first)

ONEDNN = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def _model(bn_sign: float = 1.0) -> CNNLSTM:
    """A small CNN-LSTM in eval mode with non-trivial BatchNorm statistics (weights of one sign)."""
    torch.manual_seed(0)
    m = CNNLSTM(4, n_frames=58, n_mels=40, n_chunks=2, lstm_units=8).eval()
    bn = m.cnn[2]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.2, 2.0).mul_(bn_sign)
        bn.bias.uniform_(-0.5, 0.5)
    return m


def _chunks(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 1, 29, 40, generator=torch.Generator().manual_seed(3))


def _freeze(m: nn.Module) -> None:
    for p in m.parameters():
        p.requires_grad_(False)


def _path(m: CNNLSTM, x: torch.Tensor) -> str:
    return cnn_path(x, training=m.training, eval_layers=lambda: m._fast.eval_layers(m.cnn))


def _maps_and_grad(fn, x: torch.Tensor, seed: int = 4):
    """``fn(x)`` and the input gradient of a fixed random projection of it."""
    xr = x.clone().requires_grad_(True)
    out = fn(xr)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return out.detach(), torch.autograd.grad((out * w).sum(), xr)[0]


# ------------------------------------------------------------------------ which path runs when
def test_paths_are_chosen_by_their_conditions_only():
    m = _model()
    x = _chunks()
    m.train()
    assert _path(m, x) == "declared"
    m.eval()
    with torch.no_grad():
        assert _path(m, x) == ("onednn" if ONEDNN else "pool_first")
        assert _path(m, x[:0]) == "pool_first"  # empty batch
        assert _path(m, x.double()) == "pool_first"  # not float32
    assert _path(m, x) == "pool_first"  # autograd on, input does not require grad
    assert _path(m, x.clone().requires_grad_(True)) == "pool_first"  # weights trainable
    _freeze(m)
    assert _path(m, x.clone().requires_grad_(True)) == "input_grad"
    assert _path(m, x) == "pool_first"
    m.train()
    assert _path(m, x.clone().requires_grad_(True)) == "declared"
    assert set(CNN_PATHS) == {"declared", "onednn", "input_grad", "pool_first"}


def test_input_grad_path_needs_the_pool_right_after_the_convolution():
    m = _model(bn_sign=-1.0)  # a negative BatchNorm scale keeps the pool after it
    _freeze(m)
    layers = m._fast.eval_layers(m.cnn)
    assert [type(layer).__name__ for layer in layers[:2]] == ["Conv2d", "ReLU"]
    assert not conv_pool_input_only(layers[:2])
    assert _path(m, _chunks().requires_grad_(True)) == "pool_first"
    strided = [nn.Conv2d(1, 4, 3, stride=2), nn.MaxPool2d(2)]
    _freeze(strided[0])
    assert not conv_pool_input_only(strided)
    plain = [nn.Conv2d(1, 4, 3), nn.MaxPool2d(2)]
    assert not conv_pool_input_only(plain)  # trainable
    _freeze(plain[0])
    assert conv_pool_input_only(plain)


# ------------------------------------------------------------------------ each path = declared layers
@pytest.mark.parametrize("bn_sign", [1.0, -1.0])
def test_pool_first_order_is_bit_identical_to_the_declared_layers(bn_sign):
    m = _model(bn_sign)
    moved = pool_first(list(m.cnn[:-1]))
    x = _chunks()
    with torch.no_grad():
        assert torch.equal(nn.Sequential(*moved)(x), m.cnn[:-1](x))


def test_pool_first_path_equals_the_declared_layers_with_gradients():
    m = _model()
    x = _chunks()
    ref = _maps_and_grad(lambda v: m.cnn[:-1](v), x)
    got = _maps_and_grad(lambda v: m._fast.maps(m.cnn, v, training=False), x)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-4, atol=1e-5)


def test_input_grad_path_equals_the_declared_layers():
    m = _model()
    _freeze(m)
    x = _chunks()
    ref = _maps_and_grad(lambda v: m.cnn[:-1](v), x)
    seen = []

    def fast(v):
        out = m._fast.maps(m.cnn, v, training=False)
        seen.append(out.grad_fn)
        return out

    got = _maps_and_grad(fast, x)
    names, visited, stack = set(), set(), [seen[0]]
    while stack:
        n = stack.pop()
        if n is not None and id(n) not in visited:
            visited.add(id(n))
            names.add(type(n).__name__)
            stack.extend(f for f, _ in n.next_functions)
    assert "_ConvPoolInputGradBackward" in names
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-4, atol=1e-5)


def test_conv_pool_input_grad_equals_autograd():
    torch.manual_seed(2)
    conv, pool = nn.Conv2d(1, 16, 5), nn.MaxPool2d(4, stride=2)
    _freeze(conv)
    x = _chunks(3)
    ref = _maps_and_grad(lambda v: pool(conv(v)), x)
    got = _maps_and_grad(lambda v: _ConvPoolInputGrad.apply(v, conv.weight, conv.bias, 4, 2), x)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c_in,k", [(1, 5), (3, 3)])
def test_conv2d_input_grad_equals_torch_conv2d_input(c_in, k):
    torch.manual_seed(1)
    w = torch.randn(16, c_in, k, k)
    gy = torch.randn(4, 16, 25 - k + 1, 40 - k + 1)
    ref = torch.nn.grad.conv2d_input((4, c_in, 25, 40), w, gy)
    torch.testing.assert_close(conv2d_input_grad(gy, w), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not ONEDNN, reason="oneDNN not available")
def test_onednn_path_equals_the_declared_layers_and_follows_weight_changes():
    m = _model()
    x = _chunks()
    with torch.no_grad():
        torch.testing.assert_close(m._fast.maps(m.cnn, x, training=False), m.cnn[:-1](x), rtol=0, atol=1e-5)
        first = m._fast.onednn_cnn(m.cnn)
        assert m._fast.onednn_cnn(m.cnn) is first  # cached
        m.cnn[0].weight.mul_(0.5)  # an in-place change rebuilds the copy
        assert m._fast.onednn_cnn(m.cnn) is not first
        torch.testing.assert_close(m._fast.maps(m.cnn, x, training=False), m.cnn[:-1](x), rtol=0, atol=1e-5)


def test_declared_path_is_the_layers_as_declared():
    m = _model().train()
    x = _chunks()
    torch.manual_seed(7)
    a = m._fast.maps(m.cnn, x, training=True)
    torch.manual_seed(7)
    assert torch.equal(a, m.cnn[:-1](x))


def _with_ties(x: torch.Tensor) -> torch.Tensor:
    """``x`` with a constant (silent) stretch: equal maxima in many pooling windows."""
    x = x.clone()
    x[..., 10:22, :] = -1.0
    x[..., :, 30:] = 0.25
    return x


def test_training_path_equals_the_declared_layers_bit_for_bit_ties_included():
    """run_declared (max-pools on channels-last copies) against nn.Sequential: outputs, input
    gradients and weight gradients identical, on inputs with tied maxima."""
    m = _model().train()
    x = _with_ties(_chunks(8))
    seq = copy.deepcopy(m.cnn[:-1])
    out_a, gx_a = _maps_and_grad(lambda t: m._fast.maps(m.cnn, t, training=True), x)
    out_b, gx_b = _maps_and_grad(seq, x)
    assert torch.equal(out_a, out_b) and torch.equal(gx_a, gx_b)
    for fn, mod in ((lambda t: m._fast.maps(m.cnn, t, training=True), m.cnn), (seq, seq)):
        mod.zero_grad()
        fn(x).square().sum().backward()
    for p, q in zip(m.cnn.parameters(), seq.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_training_steps_give_the_declared_layers_updates_bit_for_bit(monkeypatch):
    """Adam steps of the whole model, with the allocator setting of fit(), give the same weights
    as the layers as declared with glibc's defaults."""
    from seradv.allocator import reuse_freed_memory
    from seradv.models import fast_paths

    torch.manual_seed(0)
    base = CNNLSTM(4, n_frames=58, n_mels=40, n_chunks=2, lstm_units=8, dropout=0.3)
    x = _with_ties(torch.randn(24, 58, 40, generator=torch.Generator().manual_seed(5)))
    y = torch.arange(24) % 4

    def train(m: CNNLSTM) -> list[torch.Tensor]:
        m.train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        torch.manual_seed(1)
        for i in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x[8 * i: 8 * i + 8]), y[8 * i: 8 * i + 8]).backward()
            opt.step()
        return [t.detach().clone() for t in m.state_dict().values()]

    with reuse_freed_memory():
        now = train(copy.deepcopy(base))
    monkeypatch.setattr(fast_paths, "run_declared", lambda layers, t: nn.Sequential(*layers)(t))
    before = train(copy.deepcopy(base))
    assert all(torch.equal(a, b) for a, b in zip(now, before))


def test_deep_copy_starts_with_empty_caches_and_same_outputs():
    m = _model()
    x = torch.randn(2, 58, 40)
    with torch.no_grad():
        out = m(x)  # builds the caches (oneDNN copy where available)
        twin = copy.deepcopy(m)
        assert isinstance(twin._fast, FastCNN) and twin._fast is not m._fast
        assert twin._fast._caches == {}
        torch.testing.assert_close(twin(x), out, rtol=0, atol=0)
