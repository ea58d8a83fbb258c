"""Robust-accuracy flags of the attacks: ``AttackResult.fooled_any`` (some watched iterate was
misclassified) and ``AttackResult.attacked`` (a decision-based attack found a start)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers.attack import CLIP
from seradv.attacks import predict, run_attack
from seradv.attacks._starts import START_BLEND, START_NONE, START_SAMPLE, fallback_rng, fallback_starts

# one intra-op thread for the whole module; ``trained``: the tiny model (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

N = 4
WATCHED = [
    ("bim", {"eps": 0.25, "eps_step": 0.1, "max_iter": 3}),
    ("pgd", {"eps": 0.25, "eps_step": 0.1, "max_iter": 3, "num_random_init": 2}),
    ("pgd_l2", {"eps": 5.0, "eps_step": 1.0, "max_iter": 3, "num_random_init": 1}),
    ("deepfool", {"max_iter": 3}),
    ("cw_l2", {"max_iter": 3, "binary_search_steps": 2, "initial_const": 5.0}),
    ("cw_l2", {"max_iter": 3, "binary_search_steps": 2, "initial_const": 5.0, "optimizer": "adam"}),
    ("cw_linf", {"max_iter": 3, "learning_rate": 0.05, "initial_const": 0.1, "largest_const": 20.0,
                 "decrease_factor": 0.5, "const_factor": 10.0}),
    ("jsma", {"theta": 1.0, "gamma": 0.005}),
    ("pixel", {"th": 2, "max_iter": 2}),
]


@pytest.mark.parametrize("name,params", WATCHED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(WATCHED)])
def test_torch_iterative_attacks_watch_their_iterates(trained, name, params):
    m, x, y = trained["model"], trained["x"][:N], trained["y"][:N]
    res = run_attack(name, m, x, y, params, clip=CLIP, backend="torch")
    assert res.fooled_any is not None and res.fooled_any.shape == (N,) and res.fooled_any.dtype == bool
    wrong_at_end = predict(m, res.x_adv).labels != y
    assert not (wrong_at_end & ~res.fooled_any).any(), (wrong_at_end, res.fooled_any)
    wrong_clean = predict(m, x).labels != y
    assert not (wrong_clean & ~res.fooled_any).any()  # the clean input is the first iterate
    assert res.attacked is None


def test_art_backends_do_not_claim_to_watch(trained):
    m, x, y = trained["model"], trained["x"][:2], trained["y"][:2]
    res = run_attack("bim", m, x, y, {"eps": 0.25, "eps_step": 0.1, "max_iter": 2}, clip=CLIP, backend="art")
    assert res.fooled_any is None and res.attacked is None


class MeanBand(nn.Module):
    """Class 1 where the mean of all cells lies in ``(c - w, c + w)``, else class 0 (smooth
    logits): cross-entropy's gradient w.r.t. class 0 points into the band from either side."""

    def __init__(self, c: float = 0.25, w: float = 0.1) -> None:
        super().__init__()
        self.c, self.w = c, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1)
        return torch.stack([torch.zeros_like(s), 20 * (self.w - (s - self.c).abs())], 1)


def test_an_iterate_fooled_on_the_way_counts_though_the_last_is_right():
    """BIM steps of 0.2 in every cell move the mean 0 -> 0.2 (in the band: fooled) -> 0.4 (out)."""
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((3, 261, 128))).astype(np.float32)
    x -= x.reshape(3, -1).mean(1)[:, None, None]
    y = np.zeros(3, dtype=np.int64)
    model = MeanBand()
    assert (predict(model, x).labels == 0).all()
    res = run_attack("bim", model, x, y, {"eps": 1.0, "eps_step": 0.2, "max_iter": 2}, clip=CLIP,
                     backend="torch")
    np.testing.assert_allclose(res.x_adv.reshape(3, -1).mean(1), 0.4, atol=1e-4)
    assert (predict(model, res.x_adv).labels == 0).all()  # correct at the returned example
    assert res.fooled_any.all()  # but fooled at the first step
    one = run_attack("bim", model, x, y, {"eps": 1.0, "eps_step": 0.2, "max_iter": 1}, clip=CLIP,
                     backend="torch")
    assert one.fooled_any.all() and (predict(model, one.x_adv).labels == 1).all()


# --------------------------------------------------------------------------------------
# Decision-based attacks: starting points
# --------------------------------------------------------------------------------------
class FirstCellsBand(nn.Module):
    """Class 1 where the mean ``m`` of the first 50 cells is within 0.5 of -2, else class 0.

    Uniform noise in the clip box has ``m`` = 1 +- 0.49: always class 0. A sample with ``m = -3``
    (class 0) reaches the band by blending with noise (``m`` runs from -3 towards 1); one with
    ``m ~ 0`` never does (``m`` runs from 0 to 1); one with ``m = -2`` is class 1.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1)[:, :50].mean(1)
        return torch.stack([torch.zeros_like(m), 10 * (0.5 - (m + 2).abs())], 1)


def _band_samples(kinds: str) -> np.ndarray:
    """``"a"``: m = -3 (blend reaches the band), ``"b"``: m ~ 0 (never), ``"c"``: m = -2 (class 1)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((len(kinds), 261, 128)).astype(np.float32)
    for i, k in enumerate(kinds):
        if k in "ac":
            x[i, 0, :50] = -3.0 if k == "a" else -2.0
    return np.clip(x, *CLIP)


BLACK_BOX = [
    ("boundary", {"delta": 0.01, "epsilon": 0.01, "step_adapt": 0.5, "max_iter": 3, "num_trial": 2,
                  "sample_size": 4, "init_size": 20}),
    ("hopskipjump", {"max_iter": 1, "max_eval": 20, "init_eval": 5, "init_size": 20}),
]


@pytest.mark.parametrize("backend", ["torch", "art"])
@pytest.mark.parametrize("name,params", BLACK_BOX, ids=[n for n, _ in BLACK_BOX])
def test_samples_without_a_start_are_marked_not_attacked(name, params, backend, caplog):
    model = FirstCellsBand()
    x = _band_samples("abab")
    y = predict(model, x).labels
    assert (y == 0).all()  # one class only: no other-class sample to start from
    with caplog.at_level(logging.WARNING):
        res = run_attack(name, model, x, y, params, clip=CLIP, backend=backend, seed=2)
    np.testing.assert_array_equal(res.attacked, [True, False, True, False])
    np.testing.assert_array_equal(res.fooled_any, [True, False, True, False])
    np.testing.assert_array_equal(res.x_adv[~res.attacked], x[~res.attacked])
    assert (predict(model, res.x_adv[res.attacked]).labels == 1).all()
    assert "0 start from the nearest sample of another class, 2 from a noise blend, 2 stay clean" in caplog.text


@pytest.mark.parametrize("backend", ["torch", "art"])
@pytest.mark.parametrize("name,params", BLACK_BOX, ids=[n for n, _ in BLACK_BOX])
def test_other_class_samples_start_where_uniform_noise_fails(name, params, backend, caplog):
    model = FirstCellsBand()
    x = _band_samples("bcb")
    y = predict(model, x).labels
    np.testing.assert_array_equal(y, [0, 1, 0])
    with caplog.at_level(logging.WARNING):
        res = run_attack(name, model, x, y, params, clip=CLIP, backend=backend, seed=2)
    assert res.attacked.all() and res.fooled_any.all()
    np.testing.assert_array_equal(predict(model, res.x_adv).labels, [1, 0, 1])
    assert "2 start from the nearest sample of another class, 0 from a noise blend, 0 stay clean" in caplog.text


def test_fallback_starts_nearest_other_class_then_blends():
    model = FirstCellsBand()
    x = _band_samples("bcacb")
    preds = predict(model, x).labels
    np.testing.assert_array_equal(preds, [0, 1, 0, 1, 0])
    calls = []

    def labels(a: np.ndarray) -> np.ndarray:
        calls.append(len(a))
        return predict(model, a).labels

    starts, source = fallback_starts(x, preds, np.array([0, 2]), labels, clip=CLIP, rng=fallback_rng(0))
    np.testing.assert_array_equal(source, [START_SAMPLE, START_SAMPLE])
    for k, i in enumerate([0, 2]):  # the nearer of the two class-1 samples, no query needed
        d = [np.square(x[j] - x[i]).sum() for j in (1, 3)]
        np.testing.assert_array_equal(starts[k], x[(1, 3)[int(np.argmin(d))]])
    assert calls == []
    # one class only: blends, seeded, their queries made through ``labels``
    only = x[[0, 2, 4]]
    p0 = predict(model, only).labels
    s1, src1 = fallback_starts(only, p0, np.arange(3), labels, clip=CLIP, rng=fallback_rng(0))
    s2, src2 = fallback_starts(only, p0, np.arange(3), labels, clip=CLIP, rng=fallback_rng(0))
    np.testing.assert_array_equal(src1, [START_NONE, START_BLEND, START_NONE])
    np.testing.assert_array_equal(s1, s2)
    assert predict(model, s1[1:2]).labels[0] == 1 and sum(calls) > 0
    np.testing.assert_array_equal(s1[[0, 2]], only[[0, 2]])
