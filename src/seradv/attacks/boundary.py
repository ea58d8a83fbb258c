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

Starting points (both backends): where ``init_size`` uniform draws find none, seradv tries the
nearest other test sample predicted as a different class, then blends of the sample with
uniform noise at increasing strength (:func:`~seradv.attacks._art.fallback_starts`; seeded,
queries counted). Samples still without a start are marked not attacked
(``AttackResult.attacked``); samples with one are marked fooled where the clean prediction is
the true label (``AttackResult.fooled_any``): the start is a misclassified point of the clip
box and every later iterate stays adversarial. Tiny test model (tests/attack_helpers.py, 64
test samples, seed 0; uniform noise lands in 3 of its 4 classes): with the quick grid's
``init_size`` 20 every sample had a uniform start before and after (0 of 64 unattacked, both
backends); with ``init_size`` 1, 15 (torch) / 18 (ART) of 64 had none and all of them started
from another class's sample (0 unattacked); with 3, 1 / 0 -> 0. The blends are the last resort
where the whole set is predicted as one class (tests/test_attack_robust_flags.py).

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

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from art.attacks.evasion import BoundaryAttack
from torch import nn

from seradv.attacks._art import (
    fallback_rng,
    fallback_starts,
    mark_starts,
    run_from_random_start,
    warn_start_sources,
)
from seradv.attacks.base import AttackContext, AttackSpec, ParamSpec, QueryCounter, register_attack

logger = logging.getLogger(__name__)

__all__ = ["BOUNDARY", "CPU_QUERY_ROWS", "QUERY_ROWS", "boundary_attack_torch", "query_rows",
           "random_adversarial_start", "run_from_random_start_torch"]

# --------------------------------------------------------------------------------------
# Plain torch implementation
# --------------------------------------------------------------------------------------
#: Most query rows per forward pass of the torch backend (memory bound; see pixel.QUERY_ROWS).
QUERY_ROWS = 1024
#: The same on the CPU, where a smaller pass is cheaper per row (it stays in cache): the EmoDB
#: CNN-LSTM's forward took 3.3 / 3.5 / 3.9 / 4.2 / 5.1 ms per input at 32 / 64 / 128 / 256 /
#: 1,024 rows (one thread, 2026-11-27).
CPU_QUERY_ROWS = 64


def query_rows(device: torch.device) -> int:
    """Rows per forward pass of the decision-based attacks' queries on ``device``."""
    return CPU_QUERY_ROWS if torch.device(device).type == "cpu" else QUERY_ROWS
#: Uniform draws per sample and round of the random start (as random_adversarial_init).
INIT_CHUNK = 10


def _predict(model: nn.Module, xs: torch.Tensor, counter: QueryCounter | None, max_rows: int) -> torch.Tensor:
    """Predicted class (argmax of the softmax, as ART's predict function) of ``xs``, chunked."""
    out = torch.empty(xs.shape[0], dtype=torch.int64, device=xs.device)
    for s in range(0, xs.shape[0], max_rows):
        e = min(s + max_rows, xs.shape[0])
        out[s:e] = torch.softmax(model(xs[s:e]), -1).argmax(1)
        if counter is not None:
            counter.n_queries += e - s
    return out


@torch.inference_mode()
def random_adversarial_start(
    model: nn.Module,
    x: torch.Tensor,
    preds: torch.Tensor,
    *,
    init_size: int,
    clip: tuple[float, float],
    generator: torch.Generator,
    counter: QueryCounter | None = None,
    max_rows: int = QUERY_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched version of ART's (and seradv's seeded) search for a misclassified start.

    Up to ``init_size`` uniform draws in the clip box per sample, ``INIT_CHUNK`` per sample and
    round, all samples still searching in one forward pass; each keeps its first draw whose
    predicted class differs from ``preds``. Returns ``(x_init, found)``; ``x_init`` is the
    clean sample where none was found.
    """
    lo, hi = clip
    x_init, found = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    drawn = 0
    while drawn < init_size:
        todo = (~found).nonzero()[:, 0]
        if todo.numel() == 0:
            break
        k = min(INIT_CHUNK, init_size - drawn)
        u = torch.rand((todo.numel(), k, *x.shape[1:]), generator=generator).to(x.device)
        cand = (lo + (hi - lo) * u).to(torch.float32)
        hit = _predict(model, cand.flatten(0, 1), counter, max_rows).view(-1, k) != preds[todo, None]
        drawn += k
        ok = hit.any(1)
        first = hit.to(torch.int8).argmax(1)
        x_init[todo[ok]] = cand[ok, first[ok]]
        found[todo[ok]] = True
    return x_init, found


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
            ok = _predict(model, cand.view(k * s, *shape), counter, max_rows).view(k, s) != preds_r[todo, None]
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
            ok[m] = _predict(model, queries, counter, max_rows) != preds_r[todo].repeat_interleave(m.sum(1))
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


def run_from_random_start_torch(ctx: AttackContext, init_size: int, attack: Callable[..., torch.Tensor]
                                ) -> np.ndarray:
    """Run a decision-based torch attack (Boundary, HopSkipJump) from seeded misclassified starts
    (the torch twin of :func:`~seradv.attacks._art.run_from_random_start`).

    The predictions of all samples; per batch :func:`random_adversarial_start`, then, for the
    samples uniform noise gave no start, :func:`~seradv.attacks._art.fallback_starts` (the
    nearest sample of ``ctx.x`` predicted as another class, else a noise blend), then
    ``attack(x, x_init, preds, generator=, max_rows=)`` on the samples that have a start; the
    others come back unchanged, marked not attacked (one warning). Uniform noise from one
    generator seeded with ``ctx.seed`` (the fallback's blends from their own seeded stream);
    :func:`query_rows` rows per forward pass; every query counted.
    """
    gen = torch.Generator().manual_seed(ctx.seed)
    rng = fallback_rng(ctx.seed)
    rows = query_rows(ctx.device)
    clip = ctx.clip.as_tuple()
    with torch.inference_mode():
        preds_all = _predict(ctx.model, torch.from_numpy(ctx.x).to(ctx.device), ctx.counter, rows)
    preds_np = preds_all.cpu().numpy()
    found_all = np.zeros(ctx.n, dtype=bool)
    sources: list[np.ndarray] = []
    offset = 0

    def predict_labels(arr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return _predict(ctx.model, torch.from_numpy(arr).to(ctx.device), ctx.counter, rows).cpu().numpy()

    def one_batch(xb: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        nonlocal offset
        b = xb.shape[0]
        preds = preds_all[offset : offset + b]
        x_init, found = random_adversarial_start(ctx.model, xb, preds, init_size=init_size, clip=clip,
                                                 generator=gen, counter=ctx.counter, max_rows=rows)
        missing = (~found).nonzero()[:, 0]
        if missing.numel():
            starts, source = fallback_starts(ctx.x, preds_np, offset + missing.cpu().numpy(), predict_labels,
                                             clip=clip, rng=rng)
            ok = torch.from_numpy(source > 0).to(xb.device)
            x_init[missing[ok]] = torch.from_numpy(starts[source > 0]).to(xb.device)
            found[missing[ok]] = True
            sources.append(source)
        found_all[offset : offset + b] = found.cpu().numpy()
        offset += b
        adv = xb.clone()
        idx = found.nonzero()[:, 0]
        if idx.numel():
            adv[idx] = attack(xb[idx], x_init[idx], preds[idx], generator=gen, max_rows=rows)
        return adv

    with torch.inference_mode():
        out = ctx.map_batches(one_batch)
    mark_starts(ctx, preds_np, found_all)
    if sources:
        warn_start_sources(init_size, np.concatenate(sources), ctx.n)
    return out


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
