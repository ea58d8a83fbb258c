"""HopSkipJump (beyond the study, black-box, decision-based): boundary search with gradient estimates.

Paper: Chen, Jordan, Wainwright (2020), "HopSkipJumpAttack: a query-efficient decision-based
attack", https://arxiv.org/abs/1904.02144.

Distance: L2 (minimised). Decision-based: only predicted classes are used; untargeted (away
from the clean prediction).

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32 -> ``x_adv`` like ``x``.

Each of ``max_iter`` iterations: binary search to the boundary, a Monte-Carlo estimate of the
boundary's normal from ``min(init_eval * sqrt(i), max_eval)`` queries, and a geometric step
search. About ``init_eval * (2/3) * max_iter^1.5`` queries per sample plus the searches; the
"paper" grid (``max_iter 20, max_eval 1000, init_eval 100``: ~6,000 queries per sample) is
chosen to match the query budget of the study's Boundary attack, not taken from the study.

Backend ``"art"``: ART 1.20.1 ``HopSkipJump`` on
:class:`~seradv.attacks._art.GradientFreeClassifier` (predict function only, float32 queries).
Like ART's Boundary attack it draws starting points from an unseeded RNG; seradv passes seeded
ones (:func:`~seradv.attacks._art.random_adversarial_init`) as ``x_adv_init``.

Example
-------
>>> run_attack("hopskipjump", model, x, y, {"max_iter": 20}, clip=(-5, 7))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
from art.attacks.evasion import HopSkipJump

from seradv.attacks._art import run_from_random_start
from seradv.attacks.base import AttackContext, AttackSpec, ParamSpec, register_attack

__all__ = ["HOPSKIPJUMP"]


def _hsj_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    return run_from_random_start(ctx, p["init_size"], lambda clf: HopSkipJump(
        clf, batch_size=ctx.batch_size, targeted=False, norm=2, max_iter=p["max_iter"],
        max_eval=p["max_eval"], init_eval=p["init_eval"], init_size=p["init_size"],
        verbose=False,
    ))


HOPSKIPJUMP = register_attack(AttackSpec(
    name="hopskipjump", family="hopskipjump", kind="black-box", norm="l2",
    title="HopSkipJump (Chen et al. 2020)",
    params=(
        ParamSpec("max_iter", int, 20, low=1, doc="iterations"),
        ParamSpec("max_eval", int, 1000, low=1, doc="most queries per gradient estimate"),
        ParamSpec("init_eval", int, 100, low=1, doc="queries of the first gradient estimate"),
        ParamSpec("init_size", int, 100, low=1, doc="random draws for the starting point"),
    ),
    paper_grid=({"max_iter": 20, "max_eval": 1000, "init_eval": 100},),
    quick_grid=({"max_iter": 3, "max_eval": 50, "init_eval": 10, "init_size": 20},),
    backends={"art": _hsj_art},
    in_study=False,
    notes="not in the study; 'paper' grid matches the Boundary attack's query budget",
))
