"""Boundary attack (study, black-box, decision-based): random walk along the decision boundary.

Paper: Brendel, Rauber, Bethge (2018), "Decision-based adversarial attacks: reliable attacks
against black-box machine learning models", https://arxiv.org/abs/1712.04248.

Distance: L2 (minimised). Decision-based black-box: only the predicted class of queries is used.
Untargeted: a sample is adversarial when its predicted class differs from the clean
*prediction*.

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32 -> ``x_adv`` like ``x``.

Each sample starts from a uniform random input in the clip box that is already misclassified,
then ``max_iter`` times: up to ``num_trial`` trials of ``sample_size`` orthogonal steps
(size ``delta``, adapted by ``step_adapt``) and up to ``num_trial`` steps towards the clean
sample (size ``epsilon``). The result is always adversarial when a starting point was found;
samples without one are returned clean.

Backend ``"art"``: ART 1.20.1 ``BoundaryAttack(targeted=False)`` on
:class:`~seradv.attacks._art.GradientFreeClassifier`. ART 1.20.1 quirks handled here:

* its candidate queries are float64 under NumPy 2 promotion rules (``np.sqrt(1 + delta**2)``
  in ``_orthogonal_perturb`` is a float64 scalar that upcasts the float32 arrays); ART's
  ``PyTorchClassifier`` passes them straight to the float32 model, which fails (seen:
  "RuntimeError: mixed dtype (CPU): all inputs must share same datatype" from batch norm; a
  conv or linear layer fails likewise). The predict function casts every query to float32.
* ART's ``targeted`` defaults to ``True``; seradv sets ``False``.
* ART draws its starting points from an unseeded ``np.random.RandomState()``; seradv draws them
  with ``seed`` (:func:`~seradv.attacks._art.random_adversarial_init`) and passes them as
  ``x_adv_init``; the orthogonal steps use NumPy's global RNG (seeded and restored).

Cost: one sample at a time; per iteration at least 2 batched queries of ``sample_size``
inputs, so roughly ``2 * sample_size * max_iter`` queries per sample at best, up to
``num_trial`` times more.

Measured speed (seradv benchmark, /tmp script, not in the repo): the study's CNN-LSTM
(3.96 M parameters, 4 classes) trained to saturation on synthetic band-offset features (loss
~0, so attacks that stop on success run their full course), ART backend, batch 16,
``torch.set_num_threads(2)`` on an otherwise idle 2-core CPU (load < 2); the same runs on the
machine loaded by other jobs (load 4-6) were 2-8x slower.
Boundary at the study's settings (8 samples): 1.5 samples/s, 1,155 queries in all. This is
fast because ART gives up early: 2 samples had no misclassified uniform starting point in
100 draws (returned clean), and for the other 6 ART stopped with "Adversarial example found
but not optimal" as soon as ``num_trial=3`` trials of orthogonal steps found no adversarial
candidate; accuracy 1.0 -> 0.25, mean |perturbation| 1.38 (the study: 0.76-1.31).

Example
-------
>>> run_attack("boundary", model, x, y, {}, clip=(-5, 7))  # the study's settings  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
from art.attacks.evasion import BoundaryAttack

from seradv.attacks._art import run_from_random_start
from seradv.attacks.base import AttackContext, AttackSpec, ParamSpec, register_attack

__all__ = ["BOUNDARY"]


def _boundary_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    return run_from_random_start(ctx, p["init_size"], lambda clf: BoundaryAttack(
        clf, batch_size=ctx.batch_size, targeted=False, delta=p["delta"], epsilon=p["epsilon"],
        step_adapt=p["step_adapt"], max_iter=p["max_iter"], num_trial=p["num_trial"],
        sample_size=p["sample_size"], init_size=p["init_size"], min_epsilon=p["min_epsilon"],
        verbose=False,
    ))


BOUNDARY = register_attack(AttackSpec(
    name="boundary", family="boundary", kind="black-box", norm="l2",
    title="Boundary attack (Brendel et al. 2018)",
    params=(
        ParamSpec("delta", float, 0.01, low=0.0, low_open=True, doc="initial orthogonal step size"),
        ParamSpec("epsilon", float, 0.01, low=0.0, low_open=True, doc="initial step towards x"),
        ParamSpec("step_adapt", float, 0.5, low=0.0, high=1.0, low_open=True, high_open=True,
                  doc="step-size adaptation factor"),
        ParamSpec("max_iter", int, 100, low=1, doc="iterations"),
        ParamSpec("num_trial", int, 3, low=1, doc="trials per iteration"),
        ParamSpec("sample_size", int, 10, low=1, doc="candidates per trial"),
        ParamSpec("init_size", int, 100, low=1, doc="random draws for the starting point"),
        ParamSpec("min_epsilon", float, 0.0, low=0.0, doc="stop when epsilon falls below it"),
    ),
    paper_grid=({"delta": 0.01, "epsilon": 0.01, "step_adapt": 0.5, "max_iter": 100,
                 "num_trial": 3, "sample_size": 10},),
    quick_grid=({"delta": 0.01, "epsilon": 0.01, "step_adapt": 0.5, "max_iter": 10,
                 "num_trial": 3, "sample_size": 5, "init_size": 20},),
    backends={"art": _boundary_art},
    notes="float64 queries cast to float32; seeded starting points",
))
