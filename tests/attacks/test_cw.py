"""Fast torch backends of C&W L2 and C&W L-inf against ART 1.20.1, on the tiny model (CPU).

ART is run at cheap settings (the quick grids: few binary-search steps and a large initial
constant for L2, three constants for L-inf) on 8 samples; both backends see the same model,
inputs and parameters.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch

from seradv.attacks import accuracy, get_attack, perturbation_norms, predict, run_attack
from seradv.attacks.context import QueryCounter
from seradv.attacks.cw_l2 import art_l2_const_update, cw_l2_batch
from seradv.attacks.cw_linf import cw_linf_batch
from seradv.errors import AttackError

from tests.helpers.attack import CLIP, GuardedModel

L2_QUICK = {"max_iter": 10, "learning_rate": 0.01, "binary_search_steps": 4, "initial_const": 500.0}
LINF_QUICK = {"max_iter": 5, "learning_rate": 0.05, "initial_const": 0.1, "largest_const": 20.0,
              "decrease_factor": 0.5, "const_factor": 10.0}
N = 8


# one intra-op thread for the whole module; ``trained``: the tiny model (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def art_runs(trained) -> dict[str, Any]:
    """ART's results at the cheap settings (computed once)."""
    x, y, m = trained["x"][:N], trained["y"][:N], trained["model"]
    return {
        "cw_l2": run_attack("cw_l2", m, x, y, L2_QUICK, clip=CLIP, backend="art", batch_size=32),
        "cw_linf": run_attack("cw_linf", m, x, y, LINF_QUICK, clip=CLIP, backend="art", batch_size=32),
    }


def _assert_same_examples(fast: np.ndarray, art: np.ndarray) -> None:
    """ART's examples up to float rounding, which an optimiser's steps may amplify in a few
    cells (batched vs one-sample passes round differently; seen: 1 cell in 267,264 off by
    0.0025): all cells within 1e-2, all but one in 10,000 within 1e-3."""
    d = np.abs(fast - art)
    assert d.max() < 1e-2, d.max()
    assert (d > 1e-3).mean() < 1e-4, (d > 1e-3).sum()


def _check_output(res: Any, x: np.ndarray) -> None:
    assert res.backend == "torch"
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == np.float32
    assert res.x_adv.min() >= CLIP[0] and res.x_adv.max() <= CLIP[1]
    assert res.n_grads > 0 and res.n_queries > 0 and res.n_backward == 0


def test_torch_is_the_default_backend():
    assert get_attack("cw_l2").default_backend == "torch"
    assert get_attack("cw_linf").default_backend == "torch"


def test_cw_l2_torch_reproduces_art(trained, art_runs):
    """The default (line-search) backend runs ART's algorithm: the same examples up to float
    rounding, with one gradient pass per iteration where ART makes two."""
    x, y, m = trained["x"][:N], trained["y"][:N], trained["model"]
    art = art_runs["cw_l2"]
    res = run_attack("cw_l2", m, x, y, L2_QUICK, clip=CLIP, backend="torch", batch_size=32)
    _check_output(res, x)
    assert res.params["optimizer"] == "line_search"
    assert accuracy(m, res.x_adv, y) == accuracy(m, art.x_adv, y) < accuracy(m, x, y)
    np.testing.assert_allclose(perturbation_norms(x, res.x_adv)["l2"],
                               perturbation_norms(x, art.x_adv)["l2"], rtol=1e-3)
    _assert_same_examples(res.x_adv, art.x_adv)
    assert res.n_grads <= art.n_grads / 2


def test_cw_l2_study_settings_reproduce_art(trained):
    """The study's 20 binary-search steps from c = 0.01 (the constant's doubling and the
    halving/doubling line search all exercised): ART's per-sample L2 distances."""
    x, y, m = trained["x"][:4], trained["y"][:4], trained["model"]
    params = {"max_iter": 10, "learning_rate": 0.01, "binary_search_steps": 20, "initial_const": 0.01,
              "max_halving": 10, "max_doubling": 10}  # the study's code (SPEC.md)
    art = run_attack("cw_l2", m, x, y, params, clip=CLIP, backend="art", batch_size=32)
    res = run_attack("cw_l2", m, x, y, params, clip=CLIP, backend="torch", batch_size=32)
    assert accuracy(m, res.x_adv, y) == accuracy(m, art.x_adv, y)
    np.testing.assert_allclose(perturbation_norms(x, res.x_adv)["l2"],
                               perturbation_norms(x, art.x_adv)["l2"], rtol=1e-3)
    assert res.n_grads < art.n_grads / 2 and res.n_queries < art.n_queries


def test_cw_l2_adam_same_order_as_art(trained, art_runs):
    x, y, m = trained["x"][:N], trained["y"][:N], trained["model"]
    art = art_runs["cw_l2"]
    res = run_attack("cw_l2", m, x, y, {**L2_QUICK, "optimizer": "adam"}, clip=CLIP, backend="torch",
                     batch_size=32)
    _check_output(res, x)
    acc_art, acc_torch = accuracy(m, art.x_adv, y), accuracy(m, res.x_adv, y)
    assert acc_torch < accuracy(m, x, y)
    assert acc_torch <= acc_art + 0.03 + 1e-9
    l2_art = perturbation_norms(x, art.x_adv)["l2"].mean()
    l2_torch = perturbation_norms(x, res.x_adv)["l2"].mean()
    assert 0.2 < l2_torch / l2_art < 5.0  # same order
    # one forward+backward per Adam step (at most 10 x 4 per sample), fewer passes than ART
    assert res.n_grads <= N * 10 * 4 and res.n_grads < art.n_grads


def test_cw_l2_adam_is_torch_only(trained):
    with pytest.raises(AttackError, match="torch backend only"):
        run_attack("cw_l2", trained["model"], trained["x"][:2], trained["y"][:2], {"optimizer": "adam"},
                   clip=CLIP, backend="art")


def test_cw_l2_probabilities(trained):
    x, y, m = trained["x"][:N], trained["y"][:N], trained["model"]
    params = {**L2_QUICK, "output": "probabilities", "optimizer": "adam"}
    res = run_attack("cw_l2", m, x, y, params, clip=CLIP, backend="torch", batch_size=32)
    _check_output(res, x)
    assert accuracy(m, res.x_adv, y) <= 0.25


def test_cw_linf_torch_reproduces_art(trained, art_runs):
    """The L-inf backend runs ART's algorithm: same examples up to float rounding."""
    x, y, m = trained["x"][:N], trained["y"][:N], trained["model"]
    art = art_runs["cw_linf"]
    res = run_attack("cw_linf", m, x, y, LINF_QUICK, clip=CLIP, backend="torch", batch_size=32)
    _check_output(res, x)
    assert accuracy(m, res.x_adv, y) <= accuracy(m, art.x_adv, y) + 0.03 + 1e-9
    np.testing.assert_allclose(perturbation_norms(x, res.x_adv)["linf"],
                               perturbation_norms(x, art.x_adv)["linf"], rtol=1e-3, atol=1e-4)
    _assert_same_examples(res.x_adv, art.x_adv)
    assert res.n_grads < art.n_grads / 3


def test_art_l2_const_update_is_arts_code():
    """ART's own statements (carlini.py, end of a binary-search step), aliasing included."""

    def art(c_current, c_lower_bound, c_double, overall_attack_success):
        c_double[overall_attack_success] = False
        c_current[overall_attack_success] = (c_lower_bound + c_current)[overall_attack_success] / 2
        c_old = c_current
        c_current[~overall_attack_success & c_double] *= 2
        c_current1 = (c_current - c_lower_bound)[~overall_attack_success & ~c_double]
        c_current[~overall_attack_success & ~c_double] += c_current1 / 2
        c_lower_bound[~overall_attack_success] = c_old[~overall_attack_success]

    rng = np.random.default_rng(0)
    n = 256
    c, lo, dbl = 0.01 * np.ones(n), np.zeros(n), np.ones(n, bool)
    ct, lot, dblt = torch.tensor(c), torch.tensor(lo), torch.tensor(dbl)
    for _ in range(20):
        ok = rng.random(n) < 0.4
        art(c, lo, dbl, ok)
        ct, lot, dblt = art_l2_const_update(ct, lot, dblt, torch.from_numpy(ok))
        np.testing.assert_array_equal(ct.numpy(), c)
        np.testing.assert_array_equal(lot.numpy(), lo)
        np.testing.assert_array_equal(dblt.numpy(), dbl)
    # the quirk: fail, fail, succeed -> the constant stays at 4 * c0 for good
    c, lo, dbl = torch.tensor([0.01]), torch.tensor([0.0]), torch.tensor([True])
    for ok, expected in [(False, 0.02), (False, 0.04), (True, 0.04), (False, 0.04), (True, 0.04)]:
        c, lo, dbl = art_l2_const_update(c, lo, dbl, torch.tensor([ok]))
        assert c.item() == pytest.approx(expected)


def test_failed_samples_are_returned_clean(trained, caplog):
    x, y, m = trained["x"][:N], trained["y"][:N], trained["model"]
    # a budget where the L2 attack flips some samples only
    res = run_attack("cw_l2", m, x, y, {"binary_search_steps": 1, "initial_const": 5.0, "max_iter": 3},
                     clip=CLIP, backend="torch")
    fooled = predict(m, res.x_adv).labels != y
    changed = np.abs(res.x_adv - x).reshape(N, -1).max(1) > 0
    # a sample the model gets right is changed iff it was fooled (the tiny model trained with
    # another CPU's round-off may get a clean sample wrong: fooled with or without a change)
    correct = predict(m, x).labels == y
    assert 0 < fooled[correct].sum() < correct.sum()
    np.testing.assert_array_equal(res.x_adv[~changed], x[~changed])
    np.testing.assert_array_equal(changed[correct], fooled[correct])
    # nothing found at all: clean inputs and a warning. Two samples the model gets right: a
    # clean error is adversarial from the first step on, and C&W L-inf keeps that step
    xc, yc = x[correct][:2], y[correct][:2]
    assert len(yc) == 2
    with caplog.at_level(logging.WARNING, logger="seradv.attacks"):
        r2 = run_attack("cw_l2", m, xc, yc, {"binary_search_steps": 1, "learning_rate": 1e-6},
                        clip=CLIP, backend="torch")
        r3 = run_attack("cw_linf", m, xc, yc, {**LINF_QUICK, "learning_rate": 1e-6},
                        clip=CLIP, backend="torch")
    np.testing.assert_array_equal(r2.x_adv, xc)
    np.testing.assert_array_equal(r3.x_adv, xc)
    assert caplog.text.count("changed no sample") == 2


def test_clip_box_is_respected_at_its_edges(trained):
    """Cells at the box edges stay inside it (tanh parametrisation), without the final clip."""
    m = trained["model"]
    x = torch.from_numpy(trained["x"][:4].copy())
    x[:, ::7] = CLIP[0]
    x[:, 3::7] = CLIP[1]
    y = torch.from_numpy(trained["y"][:4])
    a = cw_l2_batch(m, x, y, confidence=0.0, learning_rate=0.05, max_iter=5, binary_search_steps=2,
                    initial_const=500.0, clip=CLIP)
    b = cw_linf_batch(m, x, y, confidence=0.0, learning_rate=0.05, max_iter=5, decrease_factor=0.5,
                      initial_const=0.1, largest_const=20.0, const_factor=10.0, clip=CLIP)
    for adv in (a, b):
        assert adv.shape == x.shape and adv.dtype == torch.float32
        assert adv.min() >= CLIP[0] and adv.max() <= CLIP[1]
        assert not adv.requires_grad


def test_deterministic(trained):
    x, y, m = trained["x"][:4], trained["y"][:4], trained["model"]
    for name, params in (("cw_l2", {**L2_QUICK, "binary_search_steps": 2}), ("cw_linf", LINF_QUICK)):
        r1 = run_attack(name, m, x, y, params, clip=CLIP, backend="torch", seed=1)
        r2 = run_attack(name, m, x, y, params, clip=CLIP, backend="torch", seed=2)
        np.testing.assert_array_equal(r1.x_adv, r2.x_adv)
        assert (r1.n_grads, r1.n_queries) == (r2.n_grads, r2.n_queries)


def test_counters_match_the_passes_run(trained):
    x, y = trained["x"][:N], trained["y"][:N]
    guarded = GuardedModel(trained["model"])
    res = run_attack("cw_l2", guarded, x, y, {"binary_search_steps": 1, "max_iter": 3, "optimizer": "adam"},
                     clip=CLIP, backend="torch", batch_size=32)
    assert guarded.grad_forwards == guarded.backwards == 3  # one forward+backward per Adam step
    assert res.n_grads == N * 3 and res.n_queries == N  # + one forward of the last iterate
    guarded = GuardedModel(trained["model"])
    res = run_attack("cw_l2", guarded, x, y, {"binary_search_steps": 1, "max_iter": 3},
                     clip=CLIP, backend="torch", batch_size=32)
    assert guarded.grad_forwards == guarded.backwards == 3  # one gradient pass per iteration
    assert res.n_grads == N * 3
    # a forward at the start, then per iteration and row 1-5 halving trials, up to 5 doublings
    # and one forward of the new iterate
    assert N * (1 + 3 * 2) <= res.n_queries <= N * (1 + 3 * 11)
    assert res.n_queries == guarded.query_rows - 1  # run_attack's class-count probe: 1 row
    guarded = GuardedModel(trained["model"])
    res = run_attack("cw_linf", guarded, x, y, LINF_QUICK, clip=CLIP, backend="torch", batch_size=32)
    assert guarded.grad_forwards == guarded.backwards > 0
    assert 0 < res.n_grads <= N * LINF_QUICK["max_iter"] * guarded.grad_forwards
    assert all(p.grad is None for p in trained["model"].parameters())


@pytest.mark.parametrize("name,params", [("cw_l2", L2_QUICK), ("cw_linf", LINF_QUICK)])
def test_early_stop(trained, name, params):
    x, y, m = trained["x"][:N], trained["y"][:N], trained["model"]
    full = run_attack(name, m, x, y, params, clip=CLIP, backend="torch", batch_size=32)
    fast = run_attack(name, m, x, y, params, clip=CLIP, backend="torch", batch_size=32, early_stop=True)
    assert fast.early_stop and fast.n_grads < full.n_grads
    assert accuracy(m, fast.x_adv, y) <= accuracy(m, full.x_adv, y) + 0.03 + 1e-9
    assert fast.x_adv.min() >= CLIP[0] and fast.x_adv.max() <= CLIP[1]
