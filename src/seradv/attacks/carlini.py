"""Carlini & Wagner attacks (study): C&W L2 and C&W L-inf.

Paper: Carlini, Wagner (2017), "Towards evaluating the robustness of neural networks",
https://arxiv.org/abs/1608.04644.

* ``cw_l2``: minimise ``||delta||_2^2 + c * max(Z_y - max_{k!=y} Z_k + confidence, 0)`` in tanh
  space (so the box is never left), ``max_iter`` Adam-like steps with line search per binary
  search step on the constant ``c`` (``binary_search_steps`` steps from ``initial_const``).
* ``cw_linf``: per sample, decreasing L-inf bound ``tau`` (x ``decrease_factor``) and, for each
  ``tau``, constants ``initial_const * const_factor^k < largest_const``, ``max_iter`` Adam steps
  each.

Distance: L2 / L-inf. Untargeted (away from ``y``).

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` -> ``x_adv`` like ``x``.

Backend ``"art"``: ART 1.20.1 ``CarliniL2Method`` / ``CarliniLInfMethod`` on
:class:`~seradv.attacks._art.SeradvPyTorchClassifier` (eval-mode gradients, cuDNN off on CUDA).
``output="logits"`` (default) is the attack as designed; ``"probabilities"`` attacks the
softmax output as a Keras model with a softmax head exposes it. ``cw_linf`` handles one sample at a time in ART (no batching): it is by far the
slowest white-box attack (study: 4231 s for EmoDB's 837 test segments on a TITAN V).

What the study's settings do. ART's C&W L2 returns the *clean* sample wherever it found no
adversarial example (``best_x_adv_batch`` starts as a copy of ``x``). With ``initial_const 0.01``,
``lr 0.01`` and 10 iterations per binary-search step nothing flips at first; a failing sample's
constant doubles per step (``0.01 * 2^k``), so the attack only bites once ``c`` is large:

* tiny test model (tests/test_attacks.py, 8 samples): 10 binary-search steps (``c`` <= 5.1)
  changed no sample; the study's 20 steps (``c`` up to ~5,200) took accuracy 1.0 -> 0.125
  (probabilities) / 0.0 (logits); 1 step changes nothing (a test checks it);
* the study's CNN-LSTM trained to saturation on synthetic features (16 samples): the study's
  settings with ``output="probabilities"`` changed **no sample at all** (softmax saturated, its
  gradient ~0), with ``output="logits"`` accuracy went 1.0 -> 0.0 (mean |perturbation| 0.10).

So on a confident model the study's C&W L2 on probabilities can be inert, although the study
reports it reduced EmoDB accuracy to 0.188: seradv therefore defaults to ``output="logits"``,
and logs a warning from :func:`_warn_if_inert` whenever an attack changed nothing.

Measured speed (seradv benchmark, /tmp script, not in the repo): the study's CNN-LSTM
(3.96 M parameters, 4 classes) trained to saturation on synthetic band-offset features (loss
~0, so attacks that stop on success run their full course), ART backend, batch 16,
``torch.set_num_threads(2)`` on an otherwise idle 2-core CPU (load < 2); the same runs on the
machine loaded by other jobs (load 4-6) were 2-8x slower.
C&W L2 at the study's settings: 0.066 samples/s (244 s for 16 samples, logits; 11,445 queries
and 6,400 class gradients); with probabilities it did the same work (12,618 queries, 6,400
gradients) in 1,306 s on the loaded machine. C&W L-inf was not timed (one sample at a time,
9 constants x 10 Adam steps per ``tau`` level).

Example
-------
>>> run_attack("cw_l2", model, x, y, {}, clip=(-5, 7))  # the study's settings  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from art.attacks.evasion import CarliniL2Method, CarliniLInfMethod

from seradv.attacks._art import white_box_classifier
from seradv.attacks.base import AttackContext, AttackSpec, ParamSpec, register_attack
from seradv.attacks.deepfool import OUTPUT_PARAM

logger = logging.getLogger(__name__)

__all__ = ["CW_L2", "CW_LINF"]


def _warn_if_inert(name: str, ctx: AttackContext, x_adv: np.ndarray) -> None:
    changed = np.abs(x_adv - ctx.x).reshape(ctx.n, -1).max(axis=1) > 0
    if not changed.any():
        logger.warning(
            "%s changed no sample at all (ART returns the clean input where it found no adversarial "
            "example): raise binary_search_steps / max_iter / initial_const / learning_rate",
            name,
        )


def _cw_l2_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    clf = white_box_classifier(ctx, output=p["output"])
    atk = CarliniL2Method(
        clf, confidence=p["confidence"], targeted=False, learning_rate=p["learning_rate"],
        binary_search_steps=p["binary_search_steps"], max_iter=p["max_iter"],
        initial_const=p["initial_const"], max_halving=p["max_halving"],
        max_doubling=p["max_doubling"], batch_size=ctx.batch_size, verbose=False,
    )
    x_adv = atk.generate(ctx.x, y=ctx.y)
    _warn_if_inert("cw_l2", ctx, x_adv)
    return x_adv


def _cw_linf_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    clf = white_box_classifier(ctx, output=p["output"])
    atk = CarliniLInfMethod(
        clf, confidence=p["confidence"], targeted=False, learning_rate=p["learning_rate"],
        max_iter=p["max_iter"], decrease_factor=p["decrease_factor"],
        initial_const=p["initial_const"], largest_const=p["largest_const"],
        const_factor=p["const_factor"], batch_size=ctx.batch_size, verbose=False,
    )
    x_adv = atk.generate(ctx.x, y=ctx.y)
    _warn_if_inert("cw_linf", ctx, x_adv)
    return x_adv


_COMMON = (
    ParamSpec("confidence", float, 0.0, low=0.0, doc="required logit margin (kappa)"),
    ParamSpec("learning_rate", float, 0.01, low=0.0, low_open=True, doc="initial step size"),
    ParamSpec("max_iter", int, 10, low=1, doc="optimisation steps per constant"),
)

CW_L2 = register_attack(AttackSpec(
    name="cw_l2", family="carlini", kind="white-box", norm="l2",
    title="Carlini & Wagner L2 (Carlini and Wagner 2017)",
    params=_COMMON + (
        ParamSpec("binary_search_steps", int, 20, low=1, doc="binary search steps on the constant c"),
        ParamSpec("initial_const", float, 0.01, low=0.0, low_open=True, doc="first constant c"),
        ParamSpec("max_halving", int, 5, low=1, doc="line search: learning-rate halvings"),
        ParamSpec("max_doubling", int, 5, low=1, doc="line search: learning-rate doublings"),
        OUTPUT_PARAM,
    ),
    paper_grid=({"max_iter": 10, "learning_rate": 0.01, "binary_search_steps": 20,
                 "initial_const": 0.01},),
    quick_grid=({"max_iter": 10, "learning_rate": 0.01, "binary_search_steps": 4,
                 "initial_const": 500.0},),
    backends={"art": _cw_l2_art},
    notes="unsuccessful samples are returned unchanged by ART",
))

CW_LINF = register_attack(AttackSpec(
    name="cw_linf", family="carlini", kind="white-box", norm="linf",
    title="Carlini & Wagner L-inf (Carlini and Wagner 2017)",
    params=_COMMON + (
        ParamSpec("initial_const", float, 1e-4, low=0.0, low_open=True, doc="first constant c"),
        ParamSpec("largest_const", float, 20.0, low=0.0, low_open=True, doc="stop when c reaches it"),
        ParamSpec("decrease_factor", float, 0.8, low=0.0, high=1.0, low_open=True, high_open=True,
                  doc="tau shrink factor"),
        ParamSpec("const_factor", float, 4.0, low=1.0, low_open=True, doc="c growth factor"),
        OUTPUT_PARAM,
    ),
    paper_grid=({"max_iter": 10, "learning_rate": 0.01, "initial_const": 1e-4,
                 "largest_const": 20.0, "decrease_factor": 0.8, "const_factor": 4.0},),
    quick_grid=({"max_iter": 5, "learning_rate": 0.05, "initial_const": 0.1,
                 "largest_const": 20.0, "decrease_factor": 0.5, "const_factor": 10.0},),
    backends={"art": _cw_linf_art},
    notes="one sample at a time in ART; the slowest white-box attack",
))
