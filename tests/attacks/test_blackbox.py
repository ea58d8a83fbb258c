"""Fast torch backends of the Pixel and Boundary attacks against ART 1.20.1 (tiny model, CPU).

Both backends see the same model, inputs, parameters and seed. Acceptance (issue 5): the
torch backend's adversarial accuracy is within 0.03 of ART's or lower, its perturbation norms
are of the same order, and it keeps the black-box threat model (no autograd, clip box).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from seradv.attacks import accuracy, get_attack, perturbation_norms, run_attack

from tests.helpers.attack import CLIP, GuardedModel

PIXEL = {"th": 5, "max_iter": 3}
BOUNDARY = {"delta": 0.01, "epsilon": 0.01, "step_adapt": 0.5, "max_iter": 20, "num_trial": 3,
            "sample_size": 10}
HSJ = {"max_iter": 5, "max_eval": 50, "init_eval": 10, "init_size": 20}
N = 8


# one intra-op thread for the whole module; ``trained``: the tiny model (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_autograd(monkeypatch):
    """Any backward pass or autograd.grad call fails the test."""
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("black-box attack called autograd")

    monkeypatch.setattr(torch.autograd, "backward", forbidden)
    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    monkeypatch.setattr(torch.Tensor, "backward", forbidden)


def _both(trained, name: str, params: dict) -> dict[str, Any]:
    m, x, y = trained["model"], trained["x"][:N], trained["y"][:N]
    return {b: run_attack(name, m, x, y, params, clip=CLIP, backend=b, seed=3) for b in ("art", "torch")}


@pytest.mark.parametrize("name,params", [("pixel", PIXEL), ("boundary", BOUNDARY), ("hopskipjump", HSJ)])
def test_torch_at_least_as_strong_as_art_with_norms_of_the_same_order(trained, name, params):
    m, x, y = trained["model"], trained["x"][:N], trained["y"][:N]
    res = _both(trained, name, params)
    acc = {b: accuracy(m, r.x_adv, y) for b, r in res.items()}
    # random searches with different random streams: one sample of N either way is chance
    assert acc["torch"] <= acc["art"] + 1 / N + 1e-9, acc
    assert acc["torch"] < accuracy(m, x, y)
    for norm in ("l2", "l0"):
        art = perturbation_norms(x, res["art"].x_adv)[norm]
        fast = perturbation_norms(x, res["torch"].x_adv)[norm]
        fooled_a, fooled_t = art > 0, fast > 0
        if fooled_a.any() and fooled_t.any():  # same order of magnitude where both changed a sample
            ratio = fast[fooled_t].mean() / art[fooled_a].mean()
            assert 0.2 < ratio < 5.0, (norm, ratio)


def test_pixel_changes_at_most_th_cells_on_the_256_level_grid(trained):
    x = trained["x"][:N]
    r = run_attack("pixel", trained["model"], x, trained["y"][:N], PIXEL, clip=CLIP, backend="torch", seed=1)
    changed = r.x_adv != x
    assert (changed.reshape(N, -1).sum(1) <= PIXEL["th"]).all()
    lo, hi = CLIP
    levels = (r.x_adv[changed] - lo) / (hi - lo) * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # ART's [0, 255] grid


@pytest.mark.parametrize("name,params", [("pixel", PIXEL), ("boundary", BOUNDARY), ("hopskipjump", HSJ)])
def test_black_box_torch_backend_never_calls_autograd_and_stays_in_the_box(trained, no_autograd, name, params):
    guarded = GuardedModel(trained["model"])
    x, y = trained["x"][:N], trained["y"][:N]
    r = run_attack(name, guarded, x, y, params, clip=CLIP, backend="torch", seed=2)
    assert guarded.grad_forwards == 0 and guarded.backwards == 0 and guarded.forwards > 0
    assert r.x_adv.min() >= CLIP[0] and r.x_adv.max() <= CLIP[1]
    assert r.n_queries > 0 and r.n_grads == 0


@pytest.mark.parametrize("name,params", [("pixel", PIXEL), ("boundary", BOUNDARY), ("hopskipjump", HSJ)])
def test_torch_backend_is_deterministic_per_seed(trained, name, params):
    m, x, y = trained["model"], trained["x"][:4], trained["y"][:4]
    a = run_attack(name, m, x, y, params, clip=CLIP, backend="torch", seed=5)
    b = run_attack(name, m, x, y, params, clip=CLIP, backend="torch", seed=5)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)


def test_torch_is_the_default_backend():
    assert get_attack("pixel").default_backend == "torch"
    assert get_attack("boundary").default_backend == "torch"
    assert get_attack("hopskipjump").default_backend == "torch"


def test_hopskipjump_torch_runs_arts_query_schedule(trained):
    """Same schedule as ART: per iteration a binary search of ceil(log2(sqrt(d) / 0.01)) queries,
    min(int(init_eval sqrt(i + 1)), max_eval) queries for the normal, then the step search."""
    import math

    m, x, y = trained["model"], trained["x"][:N], trained["y"][:N]
    res = _both(trained, "hopskipjump", HSJ)
    q_art, q_torch = res["art"].n_queries, res["torch"].n_queries
    assert abs(q_torch - q_art) <= 0.1 * q_art, (q_torch, q_art)
    search = math.ceil(math.log2(math.sqrt(x[0].size) / 0.01))
    estimate = sum(min(int(HSJ["init_eval"] * math.sqrt(i + 1)), HSJ["max_eval"]) for i in range(HSJ["max_iter"]))
    assert q_torch >= N * HSJ["max_iter"] * (search + 1) + N * estimate  # + >= 1 step query
    assert (perturbation_norms(x, res["torch"].x_adv)["l2"] > 0).all()


@pytest.mark.parametrize("delta", [0.01, 3.0, 2.4e19, 1e30, 1e200])
def test_boundary_orthogonal_step_stays_finite_and_on_the_sphere(delta):
    """ART's delta doubles while most candidates stay adversarial (seen on the EmoDB model:
    2.4e19 after ~70 trials); the step must stay finite and never move away from x."""
    from seradv.attacks.boundary import _orthogonal_candidates

    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 50, generator=gen)
    cur = x0 + 2.0 * torch.randn(3, 50, generator=gen)
    cand = _orthogonal_candidates(x0, cur, torch.full((3,), delta, dtype=torch.float64), 4, gen)
    assert torch.isfinite(cand).all()
    dist = (cur - x0).norm(dim=1)
    # ||cand - x0||^2 = (dist^2 + ||p_orth||^2) / (1 + delta^2) <= dist^2
    assert ((cand - x0[:, None]).norm(dim=2) <= dist[:, None] * (1 + 1e-5)).all()


# ------------------------------------------------------------------ chunked-model fast path
def _small_cnn_lstm():
    from seradv.models import CNNLSTM

    torch.manual_seed(0)
    return CNNLSTM(4, n_frames=58, n_mels=40, n_chunks=2, lstm_units=8).eval()


def test_cnn_lstm_implements_the_chunked_protocol_exactly():
    from seradv.models import CNNLSTM, chunked

    from tests.helpers.attack import TinySER

    m = _small_cnn_lstm()
    assert chunked(m) and chunked(CNNLSTM()) and not chunked(TinySER()) and not chunked(GuardedModel(m))
    x = torch.randn(3, 58, 40)
    for grad in (False, True):  # oneDNN CNN without autograd, strided CNN with it
        with torch.set_grad_enabled(grad):
            feats = m.encode_chunks(x.reshape(6, 29, 40)).reshape(3, 2, -1)
            torch.testing.assert_close(m.decode_chunks(feats), m(x), rtol=0, atol=1e-6)


def _trained_bn(m):
    """Give the BatchNorm non-trivial running statistics and affine weights (both signs)."""
    bn = m.cnn[2]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(-2.0, 2.0)
        bn.bias.uniform_(-0.5, 0.5)
    return m


def test_pool_first_moves_max_pools_before_relu_and_positive_batchnorm_only():
    from torch import nn

    from seradv.models.fast_paths import pool_first

    m = _trained_bn(_small_cnn_lstm())
    names = lambda layers: [type(layer).__name__ for layer in layers]  # noqa: E731
    layers = list(m.cnn[:-1])
    assert names(pool_first(layers))[:4] == ["Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d"]  # scale < 0
    with torch.no_grad():
        m.cnn[2].weight.abs_().add_(0.1)
    moved = pool_first(list(m.cnn[:-1]))
    assert names(moved) == ["Conv2d", "MaxPool2d", "ReLU", "BatchNorm2d", "Conv2d", "MaxPool2d", "ReLU",
                            "Conv2d", "MaxPool2d", "ReLU"]
    x = torch.randn(7, 1, 29, 40)
    with torch.no_grad():
        assert torch.equal(nn.Sequential(*moved)(x), m.cnn[:-1](x))  # bit for bit
    # the eval-mode autograd path (pooled first, channels-last): same maps and input gradients
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [m.cnn[:-1](xs[0]), m._cnn_maps(xs[1])]
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-5)
    w = torch.randn_like(outs[0])
    grads = [torch.autograd.grad((o * w).sum(), xi)[0] for o, xi in zip(outs, xs)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c_in,k", [(1, 5), (3, 3)])
def test_conv2d_input_grad_equals_torch(c_in, k):
    from seradv.models.fast_paths import conv2d_input_grad

    torch.manual_seed(1)
    w = torch.randn(16, c_in, k, k)
    gy = torch.randn(4, 16, 25 - k + 1, 40 - k + 1)
    ref = torch.nn.grad.conv2d_input((4, c_in, 25, 40), w, gy)
    for g in (gy, gy.contiguous(memory_format=torch.channels_last)):
        torch.testing.assert_close(conv2d_input_grad(g, w), ref, rtol=1e-5, atol=1e-4)


def test_frozen_cnn_lstm_input_gradient_equals_the_declared_layers():
    """With frozen weights (as attacks run it) the first convolution and pool take the custom
    input-only backward: same logits and input gradients as the layers as declared; weights
    that require grad take autograd's path and still get their gradients."""
    m = _trained_bn(_small_cnn_lstm())
    with torch.no_grad():
        m.cnn[2].weight.abs_().add_(0.1)  # pools first, as in a trained model
    x = torch.randn(5, 58, 40)

    def logits_and_grad(model):
        xr = x.clone().requires_grad_(True)
        out = model(xr)
        return out.detach(), torch.autograd.grad(out.square().sum(), xr)[0], _graph_nodes(out)

    ref_out, ref_grad, _ = logits_and_grad(_Declared(m))
    for p in m.parameters():
        p.requires_grad_(False)
    out, grad, nodes = logits_and_grad(m)
    assert "_ConvPoolInputGradBackward" in nodes  # the custom backward ran
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    for p in m.parameters():
        p.requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    m(xr).square().sum().backward()
    assert m.cnn[0].weight.grad is not None and m.cnn[0].weight.grad.abs().sum() > 0
    torch.testing.assert_close(xr.grad, ref_grad, rtol=1e-4, atol=1e-6)


def _graph_nodes(out):
    seen, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(nxt for nxt, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


class _Declared(torch.nn.Module):
    """A CNNLSTM's forward through its layers as declared (no eval-mode fast path)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        m = self.m
        b = x.shape[0]
        feats = m.cnn(x.reshape(b * m.n_chunks, 1, m.chunk, x.shape[2])).reshape(b, m.n_chunks, -1)
        _, (h, _) = m.lstm(feats)
        return m.head(torch.cat([h[0], h[1]], dim=1))


def test_attacks_freeze_the_weights_only_while_they_run():
    """run_attack freezes the parameters (input gradients only), then restores requires_grad."""
    m = _small_cnn_lstm()
    m.head.weight.requires_grad_(False)
    seen = []
    m.register_forward_hook(lambda mod, i, o: seen.append(any(p.requires_grad for p in mod.parameters())))
    x = np.random.default_rng(0).standard_normal((2, 58, 40)).astype(np.float32)
    run_attack("fgsm", m, x, np.array([0, 1]), {"eps": 0.1}, clip=(-5.0, 5.0))
    assert seen and not any(seen)
    assert not m.head.weight.requires_grad
    assert all(p.requires_grad for n, p in m.named_parameters() if n != "head.weight")
    assert all(p.grad is None for p in m.parameters())


@pytest.mark.parametrize("positive_bn", [False, True])
def test_cnn_lstm_inference_path_matches_autograd_path(positive_bn):
    """The oneDNN inference CNN gives the strided CNN's logits; a weight change is picked up."""
    m = _trained_bn(_small_cnn_lstm())
    if positive_bn:  # the oneDNN copy then pools before the BatchNorm
        with torch.no_grad():
            m.cnn[2].weight.abs_().add_(0.1)
    x = torch.randn(5, 58, 40)
    ref = m(x).detach()  # grad mode: strided CNN
    with torch.inference_mode():
        torch.testing.assert_close(m(x), ref, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=0, atol=1e-5)
        m.cnn[0].weight.mul_(1.5)  # in-place update, as an optimiser step does
        changed = m(x)
    assert (changed - ref).abs().max() > 1e-3
    torch.testing.assert_close(changed, m(x).detach(), rtol=0, atol=1e-5)
    assert not any("mkldnn" in k for k in m.state_dict())
    copied = copy.deepcopy(m)
    with torch.no_grad():
        torch.testing.assert_close(copied(x), changed, rtol=0, atol=1e-6)


def test_cnn_lstm_local_chunk_encoding_equals_full_encoding():
    """Re-running the CNN on a 50-column crop around changed Mel columns gives encode_chunks."""
    from seradv.models import CNNLSTM

    torch.manual_seed(0)
    m = _trained_bn(CNNLSTM(4, n_frames=58, n_mels=128, n_chunks=2, lstm_units=8).eval())
    assert m.column_geometry() == (4, 26)  # output column j sees Mel columns [4 j, 4 j + 26)
    gen = torch.Generator().manual_seed(3)
    clean = torch.randn(1, 29, 128, generator=gen)
    spans = [(c, c) for c in range(128)] + [(0, 3), (10, 14), (60, 90), (0, 127), (100, 127)]
    chunks = clean.repeat(len(spans), 1, 1)
    for i, (lo, hi) in enumerate(spans):
        rows = torch.randint(0, 29, (3,), generator=gen)
        cols = torch.randint(lo, hi + 1, (3,), generator=gen)
        chunks[i, rows, cols] = 5.0
        chunks[i, 0, lo], chunks[i, 28, hi] = -4.0, 6.0  # the span's own edges change too
    lo = torch.tensor([s[0] for s in spans])
    hi = torch.tensor([s[1] for s in spans])
    for grad in (False, True):  # oneDNN and strided CNN
        with torch.set_grad_enabled(grad):
            base = m.encode_chunks(clean).expand(len(spans), -1)
            full = m.encode_chunks(chunks)
            local = m.encode_chunks_local(chunks, lo, hi, base)
        torch.testing.assert_close(local, full, rtol=0, atol=1e-5)
    assert ((full - base).abs().amax(1) > 0).sum() >= 120  # the changes do reach the features
    # only the two wide spans (60-90, 0-127) take the whole chunk; 100-127 reaches 7 columns
    rows_full = []
    encode = m.encode_chunks
    m.encode_chunks = lambda ch: rows_full.append(ch.shape[0]) or encode(ch)
    with torch.no_grad():
        m.encode_chunks_local(chunks, lo, hi, base)
    assert rows_full == [2]


def test_pixel_chunked_queries_equal_full_forward_passes():
    """Re-encoding only the chunks a candidate's cells fall in gives the full model's outputs."""
    from seradv.attacks.pixel import _PixelProblem

    m = _small_cnn_lstm()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 58, 40, generator=gen).clamp(*CLIP)
    y = torch.tensor([0, 1, 2])
    with torch.inference_mode():
        for th in (1, 3, 8):
            fast = _PixelProblem(m, x, y, th, CLIP, None, 64)
            slow = _PixelProblem(GuardedModel(m), x, y, th, CLIP, None, 64)
            assert fast.chunk == 29 and slow.chunk == 0
            trial = torch.rand(3, 50, 3 * th, generator=gen, dtype=torch.float64)
            p_fast, c_fast = fast.evaluate(torch.arange(3), trial)
            p_slow, c_slow = slow.evaluate(torch.arange(3), trial)
            torch.testing.assert_close(p_fast, p_slow, rtol=0, atol=1e-6)
            assert torch.equal(c_fast, c_slow)


def test_pixel_attack_same_result_with_and_without_the_chunked_path():
    from seradv.attacks.pixel import pixel_attack_torch

    m = _small_cnn_lstm()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 58, 40, generator=gen).clamp(*CLIP)
    with torch.no_grad():
        y = m(x).argmax(1)  # attack the model's own predictions: every sample starts "correct"
    runs = {}
    for name, model in (("fast", m), ("slow", GuardedModel(m))):
        runs[name] = pixel_attack_torch(model, x, y, th=2, max_iter=3, clip=CLIP,
                                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fooled = {k: int((m(v).argmax(1) != y).sum()) for k, v in runs.items()}
    assert abs(fooled["fast"] - fooled["slow"]) <= 1, fooled
    for v in runs.values():
        assert ((v != x).flatten(1).sum(1) <= 2).all()
