"""HopSkipJump (beyond the study, black-box, decision-based): boundary search with gradient estimates.

Paper: Chen, Jordan, Wainwright (2020), "HopSkipJumpAttack: a query-efficient decision-based
attack", https://arxiv.org/abs/1904.02144.

Threat model: decision-based black-box: only predicted classes are used (no gradients);
untargeted (away from the clean prediction). Distance: L2, minimised, inside the clip box. Each
of ``max_iter`` iterations: a binary search to the boundary, a Monte-Carlo estimate of the
boundary's normal from ``min(init_eval * sqrt(i), max_eval)`` queries, and a geometric step
search. Starts and robust-accuracy flags as the Boundary attack's
(:mod:`seradv.attacks._starts`).

Parameters:

max_iter : int, default 20
    Iterations.
max_eval : int, default 1000
    Most queries per gradient estimate.
init_eval : int, default 100
    Queries of the first gradient estimate. About ``init_eval * (2/3) * max_iter^1.5`` queries
    per sample plus the searches: the "paper" grid (~6,000 queries per sample) matches the query
    budget of the study's Boundary attack; it is not taken from the study.
init_size : int, default 100
    Uniform draws for the starting point.

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32 -> ``x_adv`` ``[shape=(n, 261, 128)]`` float32.

Backends: ``"art"``: ART 1.20.1 ``HopSkipJump`` on
:class:`~seradv.attacks._art.GradientFreeClassifier` (predict function only, float32 queries),
from seradv's seeded starts. ``"torch"`` (default): :func:`hopskipjump_torch`, ART's algorithm
for all samples of a batch at once (every search step one forward pass of the batch, the
estimates' noise and queries in blocks of :func:`~seradv.attacks._torch.query_rows` rows across
samples); the same iteration schedule and query counts per sample, its own seeded noise, so
examples differ from ART's by the randomness only.

Example:

>>> run_attack("hopskipjump", model, x, y, {"max_iter": 20}, clip=(-5, 7))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from art.attacks.evasion import HopSkipJump
from torch import nn

from seradv.attacks._starts import run_from_random_start, run_from_random_start_torch
from seradv.attacks._torch import QUERY_ROWS, predict_classes
from seradv.attacks.context import AttackContext, QueryCounter
from seradv.attacks.spec import AttackSpec, ParamSpec, register_attack

__all__ = ["HOPSKIPJUMP", "hopskipjump_torch"]

#: ART's ``theta`` for L2 is ``THETA_L2 / sqrt(d)`` (``d`` = input size): the binary search's
#: stopping width, and ``delta = sqrt(d) theta ||x_adv - x||`` after the first iteration.
THETA_L2 = 0.01
#: Halvings of the geometric step search at most (ART loops until a step is adversarial; the
#: current iterate is, so after ~60 halvings the step is below float64 resolution anyway).
MAX_STEP_HALVINGS = 64


@torch.inference_mode()
def hopskipjump_torch(
    model: nn.Module,
    x: torch.Tensor,
    x_init: torch.Tensor,
    preds: torch.Tensor,
    *,
    max_iter: int,
    max_eval: int,
    init_eval: int,
    clip: tuple[float, float],
    generator: torch.Generator,
    counter: QueryCounter | None = None,
    max_rows: int = QUERY_ROWS,
) -> torch.Tensor:
    """ART 1.20.1's untargeted L2 ``HopSkipJump`` from adversarial starts, all rows at once.

    Per iteration ``i`` (from 0) and row: ``delta = 0.1 (hi - lo)`` at ``i = 0``, else ``0.01
    ||x_adv - x||``; a binary search on the segment from ``x`` to ``x_adv`` (bounds 1 and 0,
    until they are ``0.01 / sqrt(d)`` apart) moves ``x_adv`` to the boundary; the boundary's
    normal is estimated from ``min(int(init_eval sqrt(i + 1)), max_eval)`` queries at
    ``clip(x_adv + delta u)``, ``u`` uniform on the unit sphere (ART's baseline-corrected
    mean); the step ``x_adv + eps g``, ``eps = 2 ||x_adv - x|| / sqrt(i + 1)``, is halved until
    it is adversarial, then clipped into the box. Iterates in float64 as ART's, queries float32.

    Parameters
    ----------
    model : nn.Module
        Queried for predicted classes only (no gradients).
    x, x_init : Tensor ``[shape=(b, *input_shape)]``
        Clean inputs and adversarial starting points (``preds`` differs from their prediction).
    preds : Tensor ``[shape=(b,)]`` int64
        Predicted class of ``x``; adversarial = any other predicted class.
    max_iter, max_eval, init_eval
        As ART's ``HopSkipJump``.
    clip : (float, float)
    generator : torch.Generator
        CPU generator of the estimates' noise.
    counter : QueryCounter or None
        ``n_queries += rows`` per forward pass.
    max_rows : int
        Most rows per forward pass (and per noise block).

    Returns
    -------
    Tensor like ``x`` (float32): the last iterate of every row.
    """
    lo, hi = clip
    b, shape = x.shape[0], x.shape[1:]
    d = math.prod(shape)
    theta = THETA_L2 / math.sqrt(d)
    f64 = torch.float64
    x0 = x.reshape(b, d).to(f64)
    cur = x_init.reshape(b, d).to(f64)
    rows_all = torch.arange(b, device=x.device)

    def adversarial(samples: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Whether rows of ``samples`` (inside the box) are misclassified w.r.t. ``preds[rows]``."""
        return predict_classes(model, samples.to(torch.float32).view(-1, *shape), counter, max_rows) != preds[rows]

    def binary_search() -> torch.Tensor:
        upper = torch.ones(b, dtype=f64, device=x.device)
        lower = torch.zeros_like(upper)
        while bool((upper - lower > theta).any()):  # the same number of halvings for every row
            alpha = (upper + lower) / 2
            ok = adversarial(((1 - alpha[:, None]) * x0 + alpha[:, None] * cur).clamp_(lo, hi), rows_all)
            lower = torch.where(ok, lower, alpha)
            upper = torch.where(ok, alpha, upper)
        return (1 - upper[:, None]) * x0 + upper[:, None] * cur

    def normal_estimate(delta: torch.Tensor, num_eval: int) -> torch.Tensor:
        """ART's ``_compute_update``: ``mean((f - mean f) u)`` (``mean(u)`` / ``-mean(u)`` where
        every / no query was adversarial), normalised; in float32 blocks of whole rows, or of
        part of one row's queries where ``num_eval > max_rows``."""
        sums = torch.zeros(b, 2, d, dtype=torch.float32, device=x.device)  # sum f u, sum u
        f_sum = torch.zeros(b, dtype=torch.float32, device=x.device)
        base_all = cur.to(torch.float32)
        per = min(num_eval, max_rows)
        k = max(1, max_rows // num_eval)  # rows per block
        for r0 in range(0, b, k):
            rows = rows_all[r0 : r0 + k]
            base, dl = base_all[rows, None, :], delta[rows, None, None].to(torch.float32)
            for e0 in range(0, num_eval, per):
                e = min(per, num_eval - e0)
                noise = torch.randn((rows.numel(), e, d), generator=generator).to(x.device)
                noise /= noise.norm(dim=2, keepdim=True)
                evals = noise.mul_(dl).add_(base).clamp_(lo, hi)  # in place: the noise is spent
                f = adversarial(evals, rows.repeat_interleave(e)).view(rows.numel(), e).to(torch.float32) * 2 - 1
                u = evals.sub_(base).div_(dl)
                weights = torch.stack([f, torch.ones_like(f)], dim=1)  # [rows, 2, e]
                sums[rows] += torch.bmm(weights, u)
                f_sum[rows] += f.sum(1)
        f_mean = f_sum / num_eval
        s1, s0 = sums[:, 0], sums[:, 1]
        grad = torch.where((f_mean == 1.0)[:, None], s0, torch.where((f_mean == -1.0)[:, None], -s0,
                                                                     s1 - f_mean[:, None] * s0)) / num_eval
        grad = grad.to(f64)
        return grad / grad.norm(dim=1, keepdim=True)

    for it in range(max_iter):
        if it == 0:
            delta = torch.full((b,), 0.1 * (hi - lo), dtype=f64, device=x.device)
        else:
            delta = math.sqrt(d) * theta * (cur - x0).norm(dim=1)
        cur = binary_search()
        update = normal_estimate(delta, min(int(init_eval * math.sqrt(it + 1)), max_eval))
        eps = 2.0 * (cur - x0).norm(dim=1) / math.sqrt(it + 1)
        new = cur.clone()
        todo = rows_all
        for _ in range(MAX_STEP_HALVINGS):
            eps[todo] /= 2.0
            cand = cur[todo] + eps[todo, None] * update[todo]
            ok = adversarial(cand.clamp(lo, hi), todo)
            new[todo[ok]] = cand[ok]
            todo = todo[~ok]
            if todo.numel() == 0:
                break
        cur = new.clamp(lo, hi)
        if bool(torch.isnan(cur).any()):  # ART returns the clean sample then
            bad = torch.isnan(cur).any(1)
            cur[bad] = x0[bad]
    return cur.to(torch.float32).view_as(x)


def _hsj_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    return run_from_random_start_torch(ctx, p["init_size"], lambda x, x_init, preds, **kw: hopskipjump_torch(
        ctx.model, x, x_init, preds, max_iter=p["max_iter"], max_eval=p["max_eval"],
        init_eval=p["init_eval"], clip=ctx.clip.as_tuple(), counter=ctx.counter, **kw,
    ))


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
    backends={"art": _hsj_art, "torch": _hsj_torch},
    default_backend="torch",
    notes="not in the study; 'paper' grid matches the Boundary attack's query budget",
))
