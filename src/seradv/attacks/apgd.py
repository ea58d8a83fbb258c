"""Auto-PGD (white-box): APGD-CE and APGD-DLR, AutoAttack's step-size-free attacks (beyond the study).

Paper: Croce, Hein (2020), "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML, https://arxiv.org/abs/2003.01690; reference code
``autoattack/autopgd_base.py`` (also in torchattacks as ``APGD``). PGD with momentum 0.75 whose
step size starts at ``2 eps`` and is halved, per sample, at checkpoints where the loss rose on
fewer than ``rho`` of the steps since the last one, or where neither the step size nor the best
loss changed; after a halving the iterate restarts from the best point found. The first
checkpoint is at ``ceil-less 0.22 n_iter`` steps, then ever shorter periods (``- 0.03 n_iter``,
at least ``0.06 n_iter``), as the reference code. APGD-DLR maximises the Difference of Logits
Ratio ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``, invariant to shifts and scale of the
logits, so it is not fooled by a model whose softmax saturates (a masking signature); it needs
three classes or more.

Threat model: white-box (input gradient of the per-sample loss, model in eval mode), untargeted
(away from ``y``). Distance: L-inf ball of radius ``eps`` in standardized log-Mel units, inside
the clip box; the random start is uniform in the ball (scaled so its largest cell is ``eps``, the
reference's rule), drawn from torch's RNG (seeded by ``run_attack``).

Parameters:

eps : float, default 0.25
    L-inf radius (the paper grid: the study's FGSM / BIM radii 0.25 ... 1.25).
n_iter : int, default 100
    Iterations per restart (AutoAttack's standard: 100).
restarts : int, default 1
    Runs from new random starts on the samples not fooled yet.
rho : float, default 0.75
    Share of loss-increasing steps below which a checkpoint halves the step.

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` int64 -> ``x_adv``
``[shape=(n, 261, 128)]`` float32: for a fooled sample its last fooling iterate, else the
highest-loss iterate (both in the ball and the box).

Backends: ``"torch"`` (default; batched, every iterate watched: ``AttackResult.fooled_any``);
``"art"`` for APGD-CE only: ART 1.20.1's ``AutoProjectedGradientDescent`` (its own
implementation of the paper, not the reference code; ART's DLR variant needs an estimator of
logits that it rebuilds itself, bypassing seradv's query counting). The torch backend is tested
against torchattacks 3.5.1's ``APGD`` (the reference's code) on the tiny model, on the same
problem rescaled to its ``[0, 1]`` box (``tests/attacks/test_apgd.py``).

Example:

>>> from seradv.attacks import run_attack
>>> res = run_attack("apgd_ce", model, x, y, {"eps": 0.25}, clip=(-5, 7))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from art.attacks.evasion import AutoProjectedGradientDescent

from seradv.attacks._art import white_box_classifier
from seradv.attacks.context import AttackContext, IterateWatch, gradient_context, map_batches_watched
from seradv.attacks.spec import STUDY_EPS, AttackSpec, ParamSpec, register_attack
from seradv.errors import ParameterError

__all__ = ["apgd", "dlr_loss"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def dlr_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample DLR loss ``[shape=(b,)]`` of logits ``z`` ``[shape=(b, k)]``, ``k >= 3``."""
    zs, ind = z.sort(dim=1)
    top_is_y = (ind[:, -1] == y).to(z.dtype)
    z_y = z.gather(1, y[:, None])[:, 0]
    return -(z_y - zs[:, -2] * top_is_y - zs[:, -1] * (1.0 - top_is_y)) / (zs[:, -1] - zs[:, -3] + 1e-12)


def _ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(z, y, reduction="none")


LOSSES: dict[str, Loss] = {"ce": _ce, "dlr": dlr_loss}


def _schedule(n_iter: int) -> tuple[int, int, int]:
    """``(first period, shortest period, period decrease)`` of the checkpoints (reference code)."""
    return max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    n_iter: int = 100,
    loss: str = "ce",
    rho: float = 0.75,
    clip: tuple[float, float],
    counter: Any = None,
    watch: Callable[[torch.Tensor | None, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run (L-inf) from a random start on a batch.

    Parameters
    ----------
    model : nn.Module
        In eval mode, on ``x``'s device; logits ``[shape=(b, k)]``.
    x : Tensor ``[shape=(b, ...)]`` float32
    y : Tensor ``[shape=(b,)]`` int64
    eps, n_iter, loss, rho, clip
        See the module docstring; ``loss`` is ``"ce"`` or ``"dlr"``.
    counter : QueryCounter or None
        Incremented by the forward+backward passes (``n_grads``: ``b * (n_iter + 1)``).
    watch : callable or None
        ``watch(None, pred)`` for the start and every iterate.

    Returns
    -------
    (x_adv, fooled): Tensor ``[shape=x.shape]`` (the last fooling iterate where some iterate
    fooled the model, else the highest-loss iterate) and bool Tensor ``[shape=(b,)]``.
    """
    loss_fn = LOSSES[loss]
    lo, hi = clip
    x = x.detach()
    b = x.shape[0]
    view = (b,) + (1,) * (x.ndim - 1)
    t = (torch.rand(x.shape) * 2 - 1).to(x.device)
    x_adv = (x + eps * t / t.flatten(1).abs().amax(1).view(view)).clamp(lo, hi)
    low, high = (x - eps).clamp_min(lo), (x + eps).clamp_max(hi)

    def grad_at(xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            z = model(xa)
            li = loss_fn(z.float(), y)
            (g,) = torch.autograd.grad(li.sum(), xa)
        if counter is not None:
            counter.n_grads += b
        return g.detach(), li.detach(), z.detach().argmax(1)

    with gradient_context(x.device):
        grad, loss_i, pred = grad_at(x_adv)
        if watch is not None:
            watch(None, pred)
        fooled = pred != y
        x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss_i.clone()
        x_best_adv = x_adv.clone()
        step = torch.full(view, 2.0 * eps, device=x.device)
        x_old = x_adv.clone()
        period, shortest, decrease = _schedule(n_iter)
        since_check = 0
        loss_steps = torch.zeros(n_iter, b, device=x.device)
        loss_best_at_check = loss_best.clone()
        reduced_at_check = torch.ones(b, dtype=torch.bool, device=x.device)
        for i in range(n_iter):
            with torch.no_grad():
                momentum = x_adv - x_old
                x_old = x_adv.clone()
                a = 0.75 if i > 0 else 1.0
                z1 = torch.minimum(torch.maximum(x_adv + step * grad.sign(), low), high)
                x_adv = torch.minimum(torch.maximum(x_adv + (z1 - x_adv) * a + momentum * (1 - a), low), high)
            grad, loss_i, pred = grad_at(x_adv)
            if watch is not None:
                watch(None, pred)
            wrong = pred != y
            fooled |= wrong
            x_best_adv[wrong] = x_adv[wrong]
            better = loss_i > loss_best
            x_best[better], grad_best[better], loss_best[better] = x_adv[better], grad[better], loss_i[better]
            loss_steps[i] = loss_i
            since_check += 1
            if since_check == period:
                # loss increases over the last `period` steps (index -1 wraps, as the reference's)
                rises = sum((loss_steps[i - c] > loss_steps[i - c - 1]).float() for c in range(period))
                halve = (rises <= period * rho) | (~reduced_at_check & (loss_best_at_check >= loss_best))
                reduced_at_check, loss_best_at_check = halve.clone(), loss_best.clone()
                step[halve] /= 2.0
                x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
                since_check = 0
                period = max(period - decrease, shortest)
    x_out = torch.where(fooled.view(view), x_best_adv, x_best)
    return x_out.detach(), fooled


def apgd_restarts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, restarts: int,
                  watch: Callable[[torch.Tensor | None, torch.Tensor], None] | None = None,
                  **kw: Any) -> torch.Tensor:
    """``restarts`` APGD runs, each on the samples no earlier run fooled; ``[shape=x.shape]``."""
    out = x.detach().clone()
    todo = torch.arange(x.shape[0], device=x.device)
    for r in range(restarts):
        sub_watch = None if watch is None else (lambda rows, p, _t=todo: watch(_t, p))
        xa, ok = apgd(model, x[todo], y[todo], watch=sub_watch, **kw)
        if r == 0:
            out[todo] = xa
        else:
            out[todo[ok]] = xa[ok]
        todo = todo[~ok]
        if todo.numel() == 0:
            break
    return out


def _runner(loss: str):
    def run(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
        if loss == "dlr" and ctx.n_classes < 3:
            raise ParameterError("apgd_dlr needs a model with at least 3 classes (the DLR loss "
                                 "divides by z_pi1 - z_pi3); use apgd_ce")
        kw = {"eps": p["eps"], "n_iter": p["n_iter"], "loss": loss, "rho": p["rho"],
              "clip": ctx.clip.as_tuple(), "counter": ctx.counter}

        def one_batch(xb: torch.Tensor, yb: torch.Tensor, watch: IterateWatch) -> torch.Tensor:
            return apgd_restarts(ctx.model, xb, yb, restarts=p["restarts"], watch=watch, **kw)

        return map_batches_watched(ctx, one_batch)

    return run


def _apgd_ce_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    """ART 1.20's ``AutoProjectedGradientDescent`` with the estimator's cross-entropy (its
    ``eta`` starts at ``eps_step``: ``2 eps`` is the reference's start)."""
    clf = white_box_classifier(ctx)
    atk = AutoProjectedGradientDescent(clf, norm=np.inf, eps=p["eps"], eps_step=2 * p["eps"],
                                       max_iter=p["n_iter"], targeted=False, nb_random_init=p["restarts"],
                                       batch_size=ctx.batch_size, loss_type=None, verbose=False)
    return atk.generate(ctx.x, y=ctx.y)


_PARAMS = (
    ParamSpec("eps", float, 0.25, low=0.0, low_open=True, doc="L-inf radius (standardized units)"),
    ParamSpec("n_iter", int, 100, low=1, doc="iterations per restart"),
    ParamSpec("restarts", int, 1, low=1, high=100, doc="random restarts on the samples not fooled yet"),
    ParamSpec("rho", float, 0.75, low=0.0, high=1.0, doc="checkpoint threshold of loss-increasing steps"),
)

for _loss, _title in (("ce", "cross-entropy"), ("dlr", "Difference of Logits Ratio")):
    register_attack(AttackSpec(
        name=f"apgd_{_loss}", family="apgd", kind="white-box", norm="linf",
        title=f"Auto-PGD, {_title} loss (Croce & Hein 2020)",
        params=_PARAMS,
        paper_grid=tuple({"eps": e, "n_iter": 100, "restarts": 1, "rho": 0.75} for e in STUDY_EPS),
        quick_grid=({"eps": 0.25, "n_iter": 10, "restarts": 1, "rho": 0.75},),
        # ART's DLR variant rebuilds its own estimator from a logits model (no softmax head, no
        # query counting): APGD-DLR runs on the torch backend only
        backends={"art": _apgd_ce_art, "torch": _runner(_loss)} if _loss == "ce" else {"torch": _runner(_loss)},
        default_backend="torch",
        notes="not in the study; AutoAttack's step-size-free attacks, for defended models",
    ))
