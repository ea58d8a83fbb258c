"""Jacobian-based Saliency Map Attack, JSMA (study): a few cells pushed by ``theta`` each.

Paper: Papernot et al. (2016), "The limitations of deep learning in adversarial settings",
https://arxiv.org/abs/1511.07528.

Distance: L0 (number of changed cells); each step adds ``theta`` (standardized units, may be
negative) to the two cells with the largest target-class gradient, until the target class is
predicted or a fraction ``gamma`` of the cells has been used.

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` -> ``x_adv`` like ``x``.

JSMA is a *targeted* attack. ART draws random targets among the classes other than the
prediction when it gets no labels (what the study's call did); seradv draws them with
``seed`` among the classes other than ``y`` (the true labels) so that runs are reproducible.
Passing the true labels to ART as targets would attack nothing, since ART stops on samples
already predicted as their target.

Backend ``"art"``: ART 1.20.1 ``SaliencyMapMethod`` on
:class:`~seradv.attacks._art.SeradvPyTorchClassifier` (eval-mode gradients, cuDNN off on
CUDA). ART's version uses only the target-class gradient (``class_gradient(x, label=target)``)
per step. ``output="logits"`` (default, see :mod:`seradv.attacks.deepfool`) differentiates
the logits; ``"probabilities"`` the softmax output of a Keras-style softmax head.

Cost: one class gradient and one forward pass of the still-active samples per step, and up to
``gamma * 33408 / 2`` steps: use a small ``gamma`` for quick runs.

Measured speed (seradv benchmark, /tmp script, not in the repo): the study's CNN-LSTM
(3.96 M parameters, 4 classes) trained to saturation on synthetic band-offset features (loss
~0, so attacks that stop on success run their full course), ART backend, batch 16,
``torch.set_num_threads(2)`` on an otherwise idle 2-core CPU (load < 2); the same runs on the
machine loaded by other jobs (load 4-6) were 2-8x slower.
JSMA ``theta 1, gamma 0.01`` (at most 334 distinct cells, but ART may raise a cell again, so
the step count is not bounded by ``gamma``): 0.056 samples/s (285 s for 16 samples, ~480 steps,
7,649 class gradients; accuracy 1.0 -> 0.19, mean |perturbation| 0.027); 0.019 samples/s on the
loaded machine. About 0.6 s per step for a batch of 16. The cost grows with the number of
changed cells; the study's mean |perturbation| 0.0015-0.0074 at ``|theta|`` 0.5-1 means
roughly 50-500 cell changes, i.e. 25-250 steps.

Example
-------
>>> run_attack("jsma", model, x, y, {"theta": 1.0, "gamma": 1.0}, clip=(-5, 7))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
from art.attacks.evasion import SaliencyMapMethod

from seradv.attacks._art import white_box_classifier
from seradv.attacks.base import AttackContext, AttackSpec, ParamSpec, register_attack
from seradv.attacks.deepfool import OUTPUT_PARAM
from seradv.errors import ParameterError

__all__ = ["JSMA", "random_targets"]


def random_targets(y: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """One target class per sample, uniform among the classes other than ``y`` ``[shape=(n,)]``."""
    rng = np.random.default_rng(seed)
    shift = rng.integers(1, n_classes, size=y.shape[0])
    return ((y + shift) % n_classes).astype(np.int64)


def _jsma_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    clf = white_box_classifier(ctx, output=p["output"])
    targets = random_targets(ctx.y, ctx.n_classes, ctx.seed)
    atk = SaliencyMapMethod(clf, theta=p["theta"], gamma=p["gamma"], batch_size=ctx.batch_size,
                            verbose=False)
    return atk.generate(ctx.x, y=targets)


def _check(p: dict[str, Any]) -> None:
    if p["theta"] == 0:
        raise ParameterError("jsma: theta=0 is not allowed; theta must be a non-zero float in [-100, 100]")


JSMA = register_attack(AttackSpec(
    name="jsma", family="jsma", kind="white-box", norm="l0",
    title="Jacobian-based Saliency Map Attack (Papernot et al. 2016)",
    params=(
        ParamSpec("theta", float, 1.0, low=-100.0, high=100.0,
                  doc="change added to each chosen cell (non-zero; negative lowers cells)"),
        ParamSpec("gamma", float, 1.0, low=0.0, high=1.0, low_open=True,
                  doc="maximum fraction of cells that may be changed"),
        OUTPUT_PARAM,
    ),
    paper_grid=tuple({"theta": t, "gamma": 1.0} for t in (-1.0, -0.5, 0.5, 1.0)),
    quick_grid=({"theta": 1.0, "gamma": 0.02},),
    backends={"art": _jsma_art},
    check=_check,
))
