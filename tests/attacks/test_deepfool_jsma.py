"""The batched torch backends of DeepFool and JSMA against ART 1.20.1 on the tiny model (CPU)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers.attack import CLIP, N_CLASSES, CellWeighted, GuardedModel
from seradv.attacks import accuracy, get_attack, perturbation_norms, run_attack
from seradv.attacks.context import QueryCounter
from seradv.attacks.deepfool import deepfool_batch
from seradv.attacks.jsma import jsma_batch, random_targets


# one intra-op thread for the whole module; ``trained``: the tiny model (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _norms(x: np.ndarray, x_adv: np.ndarray) -> dict[str, float]:
    nr = perturbation_norms(x, x_adv)
    return {"mabs": float(np.abs(x_adv - x).mean()), "l2": float(nr["l2"].mean()),
            "l0": float(nr["l0"].mean())}


def _assert_close_to_art(m, x, y, art, fast, ratio=(0.9, 1.1)) -> None:
    acc_art, acc_fast = accuracy(m, art.x_adv, y), accuracy(m, fast.x_adv, y)
    assert acc_fast <= acc_art + 0.03 + 1e-9, (acc_fast, acc_art)
    na, nt = _norms(x, art.x_adv), _norms(x, fast.x_adv)
    for key in na:
        if na[key] == 0:
            assert nt[key] == 0
        else:
            assert ratio[0] <= nt[key] / na[key] <= ratio[1], (key, nt[key], na[key])


def _no_clip_warning(caplog) -> None:
    assert not [r for r in caplog.records if "exceeded the clip box" in r.getMessage()]


# --------------------------------------------------------------------------------------
# DeepFool
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("params", [{"max_iter": 5}, {"max_iter": 1, "output": "probabilities"}])
def test_deepfool_torch_matches_art(trained, params, caplog):
    m, x, y = trained["model"], trained["x"][:16], trained["y"][:16]
    caplog.set_level(logging.WARNING)
    art = run_attack("deepfool", m, x, y, params, clip=CLIP, backend="art", batch_size=8)
    fast = run_attack("deepfool", m, x, y, params, clip=CLIP, backend="torch", batch_size=8)
    _no_clip_warning(caplog)
    assert fast.backend == "torch" and fast.x_adv.shape == x.shape and fast.x_adv.dtype == np.float32
    _assert_close_to_art(m, x, y, art, fast)
    # the same deterministic algorithm: (almost) every sample lands on ART's example
    diff = np.abs(fast.x_adv - art.x_adv).reshape(len(x), -1).max(1)
    assert (diff < 1e-3).sum() >= 14, diff
    assert accuracy(m, fast.x_adv, y) < accuracy(m, x, y)
    assert fast.n_grads > 0 and fast.n_backward == fast.n_grads * (N_CLASSES - 1)
    assert all(p.grad is None for p in m.parameters())


def test_deepfool_gradient_subset_is_arts_labels_set(trained):
    """nb_grads < n_classes: gradients of the union of every sample's top classes only."""
    m = trained["model"]
    sel = np.flatnonzero(trained["y"] < 2)[:8]
    x, y = trained["x"][sel], trained["y"][sel]
    assert set(np.argmax(m(torch.from_numpy(x)).detach().numpy(), 1)) == {0, 1}
    params = {"max_iter": 5, "nb_grads": 1}
    art = run_attack("deepfool", m, x, y, params, clip=CLIP, backend="art")
    fast = run_attack("deepfool", m, x, y, params, clip=CLIP, backend="torch")
    _assert_close_to_art(m, x, y, art, fast)
    np.testing.assert_allclose(fast.x_adv, art.x_adv, atol=1e-3)
    # classes {0, 1}: one extra backward per gradient pass; one forward pass of x for the set
    assert fast.n_backward == fast.n_grads and fast.n_queries >= len(x)


def test_deepfool_clip_determinism_and_early_stop(trained):
    m, x, y = trained["model"], trained["x"][:8].copy(), trained["y"][:8].copy()
    lo, hi = -1.0, 1.0  # a narrow box: DeepFool's clip-range-scaled steps hit it
    xb = torch.from_numpy(np.clip(x, lo, hi))
    labels = list(range(N_CLASSES))
    a = deepfool_batch(m, xb, labels=labels, max_iter=3, overshoot=0.02, clip=(lo, hi))
    b = deepfool_batch(m, xb, labels=labels, max_iter=3, overshoot=0.02, clip=(lo, hi))
    assert a.min() >= lo and a.max() <= hi
    assert torch.equal(a, b)
    # early_stop: samples the model already gets wrong are not attacked
    y[0] = (int(m(torch.from_numpy(x[:1])).argmax()) + 1) % N_CLASSES
    plain = run_attack("deepfool", m, x, y, {"max_iter": 5}, clip=CLIP, backend="torch")
    early = run_attack("deepfool", m, x, y, {"max_iter": 5}, clip=CLIP, backend="torch", early_stop=True)
    assert np.array_equal(early.x_adv[0], x[0]) and not np.array_equal(plain.x_adv[0], x[0])
    # the other rows: the same run, up to the round-off of a batch one row shorter
    np.testing.assert_allclose(early.x_adv[1:], plain.x_adv[1:], atol=1e-4)
    assert early.n_grads < plain.n_grads


# --------------------------------------------------------------------------------------
# JSMA
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tie_free(trained):
    """The tiny model behind a fixed per-cell weight (``CellWeighted``): no two cells share a
    gradient, so JSMA's top-2 choice is the model's, not a backend's tie-break rule."""
    return CellWeighted(trained["model"])


def _jsma_guarantees(m, x, targets, x_adv, gamma) -> None:
    """What JSMA promises per sample, on any CPU: it stops when the target is predicted or once
    more than ``gamma`` of the cells were chosen (two per step: at most ``gamma * size + 2``)."""
    l0 = perturbation_norms(x, x_adv)["l0"]
    with torch.no_grad():
        pred = m(torch.from_numpy(x_adv)).argmax(1).numpy()
    assert (l0 <= gamma * x[0].size + 2).all(), l0
    assert ((pred == targets) | (l0 > gamma * x[0].size)).all(), (pred, targets, l0)


@pytest.mark.parametrize(
    "params,n",
    [({"theta": 1.0, "gamma": 0.02}, 8),
     ({"theta": -1.0, "gamma": 0.005}, 4),
     ({"theta": 0.5, "gamma": 0.02, "output": "probabilities"}, 8)],
)
def test_jsma_torch_matches_art(trained, tie_free, params, n, caplog):
    """The same algorithm as ART's: on a tie-free model, each sample's run is ART's.

    On TinySER itself whole blocks of cells share one gradient value and ART's
    ``argpartition`` and torch's ``topk`` break those ties differently, so which backend
    "wins" depended on a CPU's round-off (an AVX-512 machine failed where an AVX2 one passed).
    The per-sample agreement allows one run in four to part ways at a near tie (round-off of
    the two backends' different batch shapes); the guarantees hold for every sample.
    """
    m, x, y = tie_free, trained["x"][:n], trained["y"][:n]
    caplog.set_level(logging.WARNING)
    art = run_attack("jsma", m, x, y, params, clip=CLIP, backend="art", batch_size=8, seed=1)
    fast = run_attack("jsma", m, x, y, params, clip=CLIP, backend="torch", batch_size=8, seed=1)
    _no_clip_warning(caplog)
    assert fast.backend == "torch" and fast.x_adv.shape == x.shape and fast.x_adv.dtype == np.float32
    targets = random_targets(y, N_CLASSES, 1)
    _jsma_guarantees(m, x, targets, art.x_adv, params["gamma"])
    _jsma_guarantees(m, x, targets, fast.x_adv, params["gamma"])
    same = np.abs(fast.x_adv - art.x_adv).reshape(n, -1).max(1) < 1e-4
    assert same.mean() >= 0.75, same
    # the targets reached: no more than the parted runs apart
    reached_art, reached_fast = accuracy(m, art.x_adv, targets), accuracy(m, fast.x_adv, targets)
    assert abs(reached_fast - reached_art) <= (~same).mean() + 1e-9, (reached_fast, reached_art)
    assert fast.n_grads > 0 and fast.n_backward == 0
    assert all(p.grad is None for p in m.parameters())


def test_jsma_batch_equals_one_sample_at_a_time(trained, tie_free):
    """Per-sample masks: a batch gives each sample's own run; finished samples stop costing."""
    m, x, y = tie_free, trained["x"][:6], trained["y"][:6]
    t = torch.from_numpy(random_targets(y, N_CLASSES, 3))
    xb = torch.from_numpy(x)
    kw: dict[str, Any] = {"theta": 1.0, "gamma": 0.01, "clip": CLIP}
    cb = QueryCounter()
    batch = jsma_batch(m, xb, t, counter=cb, **kw)
    singles, c1 = [], QueryCounter()
    for i in range(len(x)):
        singles.append(jsma_batch(m, xb[i : i + 1], t[i : i + 1], counter=c1, **kw))
    single = torch.cat(singles)
    l0_b = (batch != xb).flatten(1).sum(1)
    l0_s = (single != xb).flatten(1).sum(1)
    assert (l0_b == l0_s).float().mean() >= 5 / 6, (l0_b, l0_s)
    # rows that just finished may ride along in one last gradient pass
    assert c1.n_grads <= cb.n_grads <= c1.n_grads + len(x)
    assert batch.min() >= CLIP[0] and batch.max() <= CLIP[1]


def test_jsma_rolling_window_equals_whole_batch(trained, tie_free):
    """A window of 2 rows, refilled as samples finish, gives each sample the whole batch's run."""
    m, x, y = tie_free, trained["x"][:8], trained["y"][:8]
    t = torch.from_numpy(random_targets(y, N_CLASSES, 5))
    xb = torch.from_numpy(x)
    kw: dict[str, Any] = {"theta": -1.0, "gamma": 0.01, "clip": CLIP}
    whole, windowed = QueryCounter(), QueryCounter()
    a = jsma_batch(m, xb, t, counter=whole, **kw)
    b = jsma_batch(m, xb, t, counter=windowed, max_rows=2, **kw)
    l0_a = (a != xb).flatten(1).sum(1)
    l0_b = (b != xb).flatten(1).sum(1)
    assert len(set(l0_a.tolist())) > 2  # samples of different lengths (0: predicted as the target)
    assert (l0_a == l0_b).float().mean() >= 7 / 8, (l0_a, l0_b)
    assert torch.isclose(a, b, atol=1e-6).all(1).all(1).float().mean() >= 7 / 8
    # every row of every pass is a live sample (or one that just finished, riding along)
    assert abs(windowed.n_grads - whole.n_grads) <= len(x)


def test_jsma_determinism_counters_and_early_stop(trained, tie_free):
    m, x, y = tie_free, trained["x"][:6], trained["y"][:6]
    p = {"theta": 1.0, "gamma": 0.02}
    guarded = GuardedModel(m)
    r1 = run_attack("jsma", guarded, x, y, p, clip=CLIP, backend="torch", seed=4)
    r2 = run_attack("jsma", m, x, y, p, clip=CLIP, backend="torch", seed=4)
    np.testing.assert_array_equal(r1.x_adv, r2.x_adv)
    assert r1.n_grads == r2.n_grads > 0
    # one backward pass per gradient pass; forward-only passes are counted as queries
    assert 0 < guarded.backwards <= guarded.grad_forwards
    early = run_attack("jsma", m, x, y, p, clip=CLIP, backend="torch", seed=4, early_stop=True)
    assert accuracy(m, early.x_adv, y) <= accuracy(m, r1.x_adv, y)
    assert (perturbation_norms(x, early.x_adv)["l0"] <= perturbation_norms(x, r1.x_adv)["l0"]).all()
    assert early.n_grads <= r1.n_grads


def test_torch_is_the_default_backend():
    assert get_attack("deepfool").default_backend == "torch"
    assert get_attack("jsma").default_backend == "torch"
