"""Boundary attack (study, black-box, decision-based): random walk along the decision boundary.

Paper: Brendel, Rauber, Bethge (2018), "Decision-based adversarial attacks: reliable attacks
against black-box machine learning models", https://arxiv.org/abs/1712.04248.

Threat model: decision-based black-box: only the predicted class of queries is used (a predict
function, no gradients). Untargeted: a sample is adversarial when its predicted class differs
from the clean *prediction*. Distance: L2, minimised, inside the clip box. Each sample starts
from a misclassified point (:mod:`seradv.attacks._starts`: seeded uniform draws, then the
nearest sample of another predicted class, then noise blends), then ``max_iter`` times: up to
``num_trial`` trials of ``sample_size`` orthogonal steps (size ``delta``, adapted by
``step_adapt``) and up to ``num_trial`` steps towards the clean sample (size ``epsilon``). The
result is adversarial where a start was found; samples without one come back clean, marked not
attacked (``AttackResult.attacked``); the others are marked fooled where the clean prediction is
the true label (``AttackResult.fooled_any``).

Parameters:

delta : float, default 0.01
    First orthogonal step size (the study: 0.01).
epsilon : float, default 0.01
    First step size towards ``x`` (the study: 0.01).
step_adapt : float, default 0.5
    Step-size adaptation factor (the study: 0.5).
max_iter : int, default 100
    Iterations (the study: 100).
num_trial : int, default 3
    Trials per iteration (the study: 3).
sample_size : int, default 10
    Candidates per trial (the study: 10); about ``2 * sample_size * max_iter`` queries per
    sample at best, up to ``num_trial`` times more.
init_size : int, default 100
    Uniform draws for the starting point.
min_epsilon : float, default 0.0
    Stop when ``epsilon`` falls below it.

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32 -> ``x_adv`` ``[shape=(n, 261, 128)]`` float32.

Backends: ``"art"``: ART 1.20.1 ``BoundaryAttack(targeted=False)`` (ART's default is targeted)
on :class:`~seradv.attacks._art.GradientFreeClassifier`, from seradv's seeded starts passed as
``x_adv_init``; its orthogonal steps use NumPy's global RNG (seeded and restored). Its candidate
queries are float64 under NumPy 2 promotion rules, which a float32 model rejects: the predict
function casts every query to float32. ``"torch"`` (default): :func:`boundary_attack_torch`,
ART's loop for all samples of a batch in lockstep.

Example:

>>> run_attack("boundary", model, x, y, {}, clip=(-5, 7))  # the study's settings  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.attacks.evasion import BoundaryAttack
from torch import nn

from seradv.attacks._starts import run_from_random_start, run_from_random_start_torch
from seradv.attacks._torch import QUERY_ROWS, predict_classes
from seradv.attacks.context import AttackContext, QueryCounter
from seradv.attacks.spec import AttackSpec, ParamSpec, register_attack

__all__ = ["BOUNDARY", "boundary_attack_torch"]


# --------------------------------------------------------------------------------------
# Plain torch implementation
# --------------------------------------------------------------------------------------
def _take(t: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """``t[idx]``, without a copy where ``idx`` is all of ``range(n)`` (kept in order)."""
    return t if idx.numel() == n else t[idx]


def _adapt(step: torch.Tensor, ratio: torch.Tensor, step_adapt: float) -> torch.Tensor:
    """ART's trust-region rule: ``* step_adapt`` below 20 % success, ``/ step_adapt`` above 50 %."""
    step = torch.where(ratio < 0.2, step * step_adapt, step)
    return torch.where(ratio > 0.5, step / step_adapt, step)


def _closest(x0: torch.Tensor, cand: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Per sample, the candidate with ``ok`` nearest to ``x0`` in L2 (first on ties).

    ``x0`` ``[shape=(k, d)]``, ``cand`` ``[shape=(k, s, d)]``, ``ok`` ``[shape=(k, s)]``.
    """
    dist = (cand - x0[:, None]).norm(dim=2)
    dist = torch.where(ok, dist, torch.full_like(dist, float("inf")))
    return cand[torch.arange(cand.shape[0], device=cand.device), dist.argmin(1)]


def _orthogonal_candidates(x0: torch.Tensor, cur: torch.Tensor, delta: torch.Tensor, s: int,
                           generator: torch.Generator) -> torch.Tensor:
    """``s`` candidates ``cur + perturb`` per sample, ART's ``_orthogonal_perturb`` (unclipped).

    ART, per candidate: ``p = randn``, ``p *= delta ||x0 - cur|| / ||p||``, remove its component
    along ``u = (x0 - cur) / ||x0 - cur||``, ``h = sqrt(1 + delta^2)``,
    ``perturb = ((1 - h) (cur - x0) + p) / h``. Here the same in fused form:
    ``cur + (1 - h) / h (cur - x0) + c (p - (p.u) u)`` with ``c = delta ||x0 - cur|| / (||p|| h)``.

    ``x0``, ``cur`` ``[shape=(k, d)]``, ``delta`` ``[shape=(k,)]`` -> ``[shape=(k, s, d)]`` float32.
    """
    k, d = x0.shape
    diff = x0 - cur
    dist = diff.norm(dim=1)
    u = diff / dist[:, None]
    # 1 / h and delta / h in float64: ART's delta may double hundreds of times (it grows while
    # more than half the candidates stay adversarial), and h = sqrt(1 + delta^2) overflows
    # float32 from delta ~ 1.8e19 on (inf / inf = NaN); the ratios stay in (0, 1].
    dl = delta.to(torch.float64).clamp(max=1e150)  # delta / h == 1 in float32 long before
    inv_h = torch.rsqrt(1 + dl * dl)
    dl_h = (dl * inv_h).to(torch.float32)
    pert = torch.randn((k, s, d), generator=generator).to(x0.device)
    c = (dl_h * dist)[:, None] / pert.norm(dim=2)
    pu = torch.bmm(pert, u[:, :, None])[..., 0]
    base = cur - (inv_h - 1).to(torch.float32)[:, None] * diff
    out = torch.addcmul(base[:, None], pert, c[..., None])
    return out.addcmul_(u[:, None], (c * pu)[..., None], value=-1.0)


@torch.inference_mode()
def boundary_attack_torch(
    model: nn.Module,
    x: torch.Tensor,
    x_init: torch.Tensor,
    preds: torch.Tensor,
    *,
    delta: float,
    epsilon: float,
    step_adapt: float,
    max_iter: int,
    num_trial: int,
    sample_size: int,
    min_epsilon: float,
    clip: tuple[float, float],
    generator: torch.Generator,
    counter: QueryCounter | None = None,
    max_rows: int = QUERY_ROWS,
) -> torch.Tensor:
    """ART 1.20.1's untargeted ``BoundaryAttack._attack``, all samples of a batch in lockstep.

    Every sample runs ART's loop from its misclassified start ``x_init``: per iteration up to
    ``num_trial`` trials of ``sample_size`` orthogonal candidates from the current point
    (step ``delta``, adapted after each trial), then, from the adversarial ones, up to
    ``num_trial`` trials of the step ``epsilon`` towards ``x`` (adapted likewise); the new
    point is the adversarial candidate nearest to ``x``. A sample stops where ART returns:
    no adversarial orthogonal candidate in ``num_trial`` trials (keeps its point), no
    adversarial step towards ``x`` in ``num_trial`` trials (takes the nearest orthogonal
    candidate), ``epsilon < min_epsilon``, or ``max_iter`` iterations. Each trial is one
    forward pass over the candidates of every sample still in that trial.

    Parameters
    ----------
    model : nn.Module
        In eval mode on ``x``'s device.
    x, x_init : Tensor ``[shape=(b, 261, 128)]`` float32
        Clean samples and misclassified starting points.
    preds : Tensor ``[shape=(b,)]`` int64
        Clean predictions (adversarial = predicted class differs).
    delta, epsilon, step_adapt, max_iter, num_trial, sample_size, min_epsilon
        ART's parameters.
    clip : (float, float)
    generator : torch.Generator
        CPU generator of the orthogonal directions (drawn on the CPU, moved to the device).
    counter : QueryCounter or None
        ``n_queries`` += rows of each forward pass.
    max_rows : int
        Most candidates per forward pass.

    Returns
    -------
    Tensor ``[shape=(b, 261, 128)]`` float32
    """
    lo, hi = clip
    dev, b, shape = x.device, x.shape[0], tuple(x.shape[1:])
    x0_all = x.reshape(b, -1)
    x_adv = x_init.reshape(b, -1).clone()
    n_cells = x0_all.shape[1]
    cur_delta = torch.full((b,), float(delta), dtype=torch.float64, device=dev)
    cur_eps = torch.full((b,), float(epsilon), dtype=torch.float64, device=dev)
    running = torch.arange(b, device=dev)
    s = sample_size
    for _ in range(max_iter):
        r = running.numel()
        if r == 0:
            break
        x0_r, cur_r, preds_r = _take(x0_all, running, b), _take(x_adv, running, b), preds[running]
        delta_r, eps_r = cur_delta[running], cur_eps[running]
        # 1. orthogonal steps: trials until one candidate of the sample is adversarial
        todo = torch.arange(r, device=dev)  # positions in ``running``
        cands = torch.empty(0, device=dev)  # [r, s, d] once a trial succeeds
        sat = torch.zeros((r, s), dtype=torch.bool, device=dev)
        for _ in range(num_trial):
            k = todo.numel()
            if k == 0:
                break
            cand = _orthogonal_candidates(_take(x0_r, todo, r), _take(cur_r, todo, r), delta_r[todo], s,
                                          generator).clamp_(lo, hi)
            ok = predict_classes(model, cand.view(k * s, *shape), counter, max_rows).view(k, s) != preds_r[todo, None]
            delta_r[todo] = _adapt(delta_r[todo], ok.to(torch.float64).mean(1), step_adapt)
            hit = ok.any(1)
            if k == r and bool(hit.all()):
                cands = cand
            else:
                if cands.numel() == 0:
                    cands = torch.zeros((r, s, cand.shape[2]), dtype=torch.float32, device=dev)
                cands[todo[hit]] = cand[hit]
            sat[todo[hit]] = ok[hit]
            todo = todo[~hit]
        cur_delta[running] = delta_r
        # samples without an adversarial orthogonal candidate stop here, at x_adv (ART's return)
        stepped = sat.any(1)
        # 2. steps towards x: trials until one stepped candidate stays adversarial
        todo = stepped.nonzero()[:, 0]
        moved = torch.zeros(r, dtype=torch.bool, device=dev)
        for _ in range(num_trial):
            k = todo.numel()
            if k == 0:
                break
            m = sat[todo]  # [k, s]: the adversarial orthogonal candidates of each sample
            e = eps_r[todo].to(torch.float32)[:, None, None]
            x0_k = _take(x0_r, todo, r)
            pot = torch.lerp(_take(cands, todo, r), x0_k[:, None], e).clamp_(lo, hi)  # xs + eps (x - xs)
            queries = pot.view(k * s, *shape) if bool(m.all()) else pot[m].view(-1, *shape)
            ok = torch.zeros_like(m)
            ok[m] = predict_classes(model, queries, counter, max_rows) != preds_r[todo].repeat_interleave(m.sum(1))
            ratio = ok.sum(1).to(torch.float64) / m.sum(1).to(torch.float64)
            eps_r[todo] = _adapt(eps_r[todo], ratio, step_adapt)
            hit = ok.any(1)
            if bool(hit.any()):
                x_adv[running[todo[hit]]] = _closest(_take(x0_k, hit.nonzero()[:, 0], k),
                                                     _take(pot, hit.nonzero()[:, 0], k), ok[hit])
                moved[todo[hit]] = True
            todo = todo[~hit]
        cur_eps[running] = eps_r
        # no adversarial step towards x: the nearest orthogonal candidate, and stop (ART's return)
        if todo.numel():
            x_adv[running[todo]] = _closest(x0_r[todo], cands[todo], sat[todo])
        running = running[moved & (eps_r >= min_epsilon)]
    return x_adv.view(b, *shape)


def _boundary_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    return run_from_random_start_torch(ctx, p["init_size"], lambda x, x_init, preds, **kw: boundary_attack_torch(
        ctx.model, x, x_init, preds, delta=p["delta"], epsilon=p["epsilon"], step_adapt=p["step_adapt"],
        max_iter=p["max_iter"], num_trial=p["num_trial"], sample_size=p["sample_size"],
        min_epsilon=p["min_epsilon"], clip=ctx.clip.as_tuple(), counter=ctx.counter, **kw,
    ))


# --------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------
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
    backends={"art": _boundary_art, "torch": _boundary_torch},
    default_backend="torch",
    notes="float64 queries cast to float32; seeded starting points",
))
