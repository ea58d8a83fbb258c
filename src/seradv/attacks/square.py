"""Square attack, L-inf (beyond the study, black-box, score-based): random square updates.

Paper: Andriushchenko, Croce, Flammarion, Hein (2020), "Square Attack: a query-efficient
black-box adversarial attack via random search", https://arxiv.org/abs/1912.00049.

Threat model: score-based black-box: only the softmax scores of queries are used (no gradients);
untargeted. Distance: L-inf, an ``eps`` ball in standardized units, inside the clip box. The
margin between the true class's score and the best other score is minimised by accepting random
``±2 eps`` squares (time x Mel patches) that lower it; the square size shrinks with the
iterations from a fraction ``p_init`` of the cells. About 3 queries per still-robust sample and
iteration.

Parameters:

eps : float, default 0.25
    L-inf radius, standardized units (the "paper" grid: the study's FGSM/BIM values
    0.25-1.25).
max_iter : int, default 1000
    Iterations (random squares).
p_init : float, default 0.05
    First fraction of the cells per square (the paper's L-inf value). ART 1.20.1 draws the first
    square's position in ``[0, cols - side)``: on a 261 x 128 input ART's default 0.8 fails, so
    ``p_init >= 0.487`` is rejected with a :class:`~seradv.errors.ParameterError` before the
    attack starts.
nb_restarts : int, default 1
    Restarts.

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` int64 -> ``x_adv``
``[shape=(n, 261, 128)]`` float32.

Backends: ``"art"`` only: ART 1.20.1 ``SquareAttack(norm=inf)`` on
:class:`~seradv.attacks._art.GradientFreeClassifier` with the 3-D shape ``(1, 261, 128)`` (ART's
Square attack only accepts 4-D image batches); queries are reshaped back to ``(261, 128)``.
ART's L2 variant assumes square images and is not offered.

Example:

>>> run_attack("square", model, x, y, {"eps": 0.5, "max_iter": 1000}, clip=(-5, 7))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from art.attacks.evasion import SquareAttack

from seradv.attacks._art import black_box_classifier
from seradv.attacks.context import AttackContext
from seradv.attacks.spec import AttackSpec, ParamSpec, register_attack
from seradv.errors import ParameterError

__all__ = ["SQUARE"]


def _check_input(p: dict[str, Any], input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 2:
        raise ParameterError(f"square: needs 2-D samples (time, mel), got shape {input_shape}")
    rows, cols = input_shape
    side = max(round(math.sqrt(p["p_init"] * rows * cols)), 1)
    if side >= min(rows, cols):
        limit = (min(rows, cols) - 0.5) ** 2 / (rows * cols)
        raise ParameterError(
            f"square: p_init={p['p_init']!r} gives a first square of {side} cells, wider than the "
            f"{min(rows, cols)}-cell side of the {rows} x {cols} input; p_init must be < {limit:.3f}"
        )


def _square_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    shape3 = (1, *ctx.input_shape)
    clf = black_box_classifier(ctx, input_shape=shape3)
    atk = SquareAttack(clf, norm=np.inf, max_iter=p["max_iter"], eps=p["eps"], p_init=p["p_init"],
                       nb_restarts=p["nb_restarts"], batch_size=ctx.batch_size, verbose=False)
    x4 = ctx.x.reshape((ctx.n, *shape3))
    return atk.generate(x4, y=ctx.y).reshape(ctx.x.shape)


SQUARE = register_attack(AttackSpec(
    name="square", family="square", kind="black-box", norm="linf",
    title="Square attack, L-inf (Andriushchenko et al. 2020)",
    params=(
        ParamSpec("eps", float, 0.25, low=0.0, low_open=True, doc="L-inf radius (standardized units)"),
        ParamSpec("max_iter", int, 1000, low=1, doc="iterations (random squares)"),
        ParamSpec("p_init", float, 0.05, low=0.0, high=1.0, low_open=True,
                  doc="initial fraction of cells per square (< 0.487 for 261 x 128)"),
        ParamSpec("nb_restarts", int, 1, low=1, doc="restarts"),
    ),
    paper_grid=tuple({"eps": e, "max_iter": 1000, "p_init": 0.05, "nb_restarts": 1}
                     for e in (0.25, 0.5, 0.75, 1.0, 1.25)),
    quick_grid=({"eps": 1.0, "max_iter": 30, "p_init": 0.05, "nb_restarts": 1},),
    backends={"art": _square_art},
    check_input=_check_input,
    notes="not in the study; 'paper' grid uses the study's FGSM/BIM eps values",
))
