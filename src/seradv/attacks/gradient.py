"""Gradient-sign family (white-box): FGSM, BIM (study), PGD with random start, L-inf and L2 (beyond it).

Papers:

* FGSM: Goodfellow, Shlens, Szegedy (2015), "Explaining and harnessing adversarial examples",
  https://arxiv.org/abs/1412.6572. ``x_adv = clip(x + eps * sign(grad_x CE(f(x), y)))``.
* BIM: Kurakin, Goodfellow, Bengio (2017), "Adversarial examples in the physical world",
  https://arxiv.org/abs/1607.02533. ``max_iter`` steps of size ``eps_step``, each followed by
  clipping to the box and projection on the L-inf ``eps`` ball around ``x``.
* PGD: Madry et al. (2018), "Towards deep learning models resistant to adversarial attacks",
  https://arxiv.org/abs/1706.06083. BIM from a uniform random start in the ``eps`` ball;
  ``pgd_l2`` uses normalised gradient steps and the L2 ball.

Threat model: white-box (cross-entropy input gradient, model in eval mode; cuDNN off around the
backward pass on CUDA, :func:`~seradv.attacks.context.gradient_context`), untargeted (away from
``y``). Distance: L-inf (``fgsm``, ``bim``, ``pgd``) or L2 (``pgd_l2``) ball of radius ``eps``
in standardized log-Mel units, inside the corpus's clip box.

Parameters:

eps : float, default 0.25 (``pgd_l2``: 10.0)
    Ball radius (the study's FGSM / BIM: 0.25, 0.5, 0.75, 1.0, 1.25).
eps_step : float, default 0.1 (``pgd_l2``: 1.0)
    Step size per iteration (BIM, PGD; the study's BIM: 0.1).
max_iter : int, default 100
    Iterations (BIM, PGD; the study's BIM: 100).
num_random_init : int, default 1
    Random starts, the best kept (PGD).

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` int64 -> ``x_adv``
``[shape=(n, 261, 128)]`` float32.

Backends: ``"art"`` (reference, the study's toolbox): ART 1.20.1 ``FastGradientMethod``,
``BasicIterativeMethod`` and ``ProjectedGradientDescent`` on
:class:`~seradv.attacks._art.SeradvPyTorchClassifier`. ``"torch"`` (default):
:func:`iterative_gradient_attack`, the same update rule in plain batched torch (ART's FGSM
examples to float tolerance, BIM/PGD accuracy; PGD's random starts are ART's own draws from
NumPy's global RNG, seeded by ``run_attack``). It watches its iterates
(``AttackResult.fooled_any``, w.r.t. the true labels): the start, every step's iterate (from the
next step's forward pass) and the last one (one forward pass per batch and restart), all in the
clip box and the ``eps`` ball.

Example:

>>> from seradv.attacks import run_attack
>>> res = run_attack("bim", model, x, y, {"eps": 0.5}, clip=(-5, 7))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from art.attacks.evasion import (
    BasicIterativeMethod,
    FastGradientMethod,
    ProjectedGradientDescent,
)
from art.utils import random_sphere
from torch import nn

from seradv.attacks._art import white_box_classifier
from seradv.attacks.context import AttackContext, IterateWatch, gradient_context, map_batches_watched
from seradv.attacks.spec import STUDY_EPS, AttackSpec, ParamSpec, register_attack

logger = logging.getLogger(__name__)

__all__ = ["iterative_gradient_attack", "random_start_noise"]


# --------------------------------------------------------------------------------------
# Plain torch implementation
# --------------------------------------------------------------------------------------
def random_start_noise(shape: tuple[int, ...], eps: float, norm: str) -> torch.Tensor:
    """Uniform sample of the L-inf cube or L2 ball of radius ``eps`` ``[shape=shape]``, float32.

    Drawn with ART's ``random_sphere`` from NumPy's *global* RNG (seeded by
    :func:`~seradv.attacks.run.run_attack`), in the same order as ART's PGD, so that the
    torch backend reproduces ART's random starts draw by draw.
    """
    n, d = shape[0], int(np.prod(shape[1:]))
    noise = random_sphere(n, d, eps, np.inf if norm == "linf" else 2)
    return torch.from_numpy(noise.reshape(shape).astype(np.float32))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1)
    nrm = flat.norm(dim=1, keepdim=True)
    factor = torch.where(nrm > eps, eps / nrm.clamp_min(1e-30), torch.ones_like(nrm))
    return (flat * factor).view_as(delta)


def _step_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    grad = torch.nan_to_num(grad, nan=0.0)
    if norm == "linf":
        return grad.sign()
    flat = grad.flatten(1)
    nrm = flat.norm(dim=1, keepdim=True)
    return torch.where(nrm > 0, flat / nrm.clamp_min(1e-30), torch.zeros_like(flat)).view_as(grad)


def iterative_gradient_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    eps_step: float,
    max_iter: int,
    norm: str = "linf",
    start: torch.Tensor | None = None,
    clip: tuple[float, float],
    early_stop: bool = False,
    counter: Any = None,
    watch: Callable[[torch.Tensor | None, torch.Tensor], None] | None = None,
    return_fooled: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Batched FGSM / BIM / PGD in torch, ART's update rule.

    Each step: ``x_adv <- clip(x_adv + eps_step * dir(grad))`` then project ``x_adv - x`` on the
    ``eps`` ball, where ``dir`` is ``sign`` (L-inf) or ``grad / ||grad||_2`` (L2) of the
    cross-entropy gradient. FGSM is ``max_iter=1, eps_step=eps``.

    Parameters
    ----------
    model : nn.Module
        In eval mode, on ``x``'s device; returns logits ``[shape=(b, n_classes)]``.
    x : Tensor ``[shape=(b, 261, 128)]`` float32
    y : Tensor ``[shape=(b,)]`` int64
    eps, eps_step : float
        Ball radius and step size (standardized units; L2 radius for ``norm="l2"``).
    max_iter : int
    norm : {"linf", "l2"}
    start : Tensor ``[shape=(b, 261, 128)]`` or None
        Offset of the starting point (PGD's random start, e.g. :func:`random_start_noise`);
        ``None`` starts at ``x`` (FGSM, BIM).
    clip : (float, float)
    early_stop : bool
        Stop updating a sample once the model misclassifies it (checked on the forward pass of
        each step, so it costs nothing extra; the still-correct samples go on alone). Same
        robust accuracy, smaller perturbations than the algorithm as published.
    counter : QueryCounter or None
        Incremented by the forward+backward passes actually run (``n_grads``) and by the
        forward pass of the last iterate (``n_queries``, only with ``watch`` or
        ``return_fooled``).
    watch : callable or None
        ``watch(rows, pred)`` (:class:`~seradv.attacks.context.IterateWatch`) is told the
        prediction of every iterate: the start and each step's iterate come from the logits of
        the next step's forward pass (no extra cost); the last iterate takes one forward pass
        without a graph. Every iterate lies in the clip box and the ``eps`` ball.
    return_fooled : bool
        Also return whether the model misclassifies each row's last iterate (``argmax != y``).

    Returns
    -------
    Tensor ``[shape=(b, 261, 128)]`` float32, detached; with ``return_fooled`` also a bool
    Tensor ``[shape=(b,)]``.
    """
    lo, hi = clip
    x = x.detach()
    if start is not None:
        x_adv = (x + start.to(x.device)).clamp(lo, hi)
    else:
        x_adv = x.clone()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    active = torch.arange(x.shape[0], device=x.device)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # at the last iterate
    with gradient_context(x.device):
        for _ in range(max_iter):
            xa = x_adv[active].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xa)
                loss = loss_fn(logits, y[active])
                (grad,) = torch.autograd.grad(loss, xa)
            if counter is not None:
                counter.n_grads += int(active.numel())
            with torch.no_grad():
                pred = logits.argmax(1)
                if watch is not None:  # the iterate x_adv[active]: logits of this step's pass
                    watch(active, pred)
                if early_stop:
                    keep = pred == y[active]
                    fooled[active[~keep]] = True
                    active, xa, grad = active[keep], xa[keep], grad[keep]
                    if active.numel() == 0:
                        break
                step = (xa.detach() + eps_step * _step_direction(grad, norm)).clamp(lo, hi)
                x_adv[active] = x[active] + _project(step - x[active], eps, norm)
    x_adv = x_adv.detach()
    if watch is None and not return_fooled:
        return x_adv
    if active.numel():  # the last iterate: one forward pass without a graph (rows still moving)
        with torch.inference_mode():
            pred = model(x_adv[active]).argmax(1)
        if counter is not None:
            counter.n_queries += int(active.numel())
        fooled[active] = pred != y[active]
        if watch is not None:
            watch(active, pred)
    return (x_adv, fooled) if return_fooled else x_adv


def _torch_runner(ctx: AttackContext, *, eps: float, eps_step: float, max_iter: int, norm: str,
                  num_random_init: int) -> np.ndarray:
    model = ctx.model
    kw: dict[str, Any] = {"eps": eps, "eps_step": eps_step, "max_iter": max_iter, "norm": norm,
                          "clip": ctx.clip.as_tuple(), "early_stop": ctx.early_stop, "counter": ctx.counter}

    def one_batch(xb: torch.Tensor, yb: torch.Tensor, watch: IterateWatch) -> torch.Tensor:
        shape = tuple(xb.shape)
        start = random_start_noise(shape, eps, norm) if num_random_init > 0 else None
        best, _ = iterative_gradient_attack(model, xb, yb, start=start, watch=watch, return_fooled=True, **kw)
        for _ in range(1, num_random_init):  # ART: keep a restart's example where it succeeds
            cand, ok = iterative_gradient_attack(model, xb, yb, start=random_start_noise(shape, eps, norm),
                                                 watch=watch, return_fooled=True, **kw)
            best[ok] = cand[ok]
        return best

    return map_batches_watched(ctx, one_batch)


# --------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------
def _fgsm_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    clf = white_box_classifier(ctx)
    atk = FastGradientMethod(clf, norm=np.inf, eps=p["eps"], eps_step=p["eps"], targeted=False,
                             num_random_init=0, batch_size=ctx.batch_size, minimal=False)
    return atk.generate(ctx.x, y=ctx.y)


def _fgsm_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    return _torch_runner(ctx, eps=p["eps"], eps_step=p["eps"], max_iter=1, norm="linf", num_random_init=0)


def _bim_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    clf = white_box_classifier(ctx)
    atk = BasicIterativeMethod(clf, eps=p["eps"], eps_step=p["eps_step"], max_iter=p["max_iter"],
                               targeted=False, batch_size=ctx.batch_size, verbose=False)
    return atk.generate(ctx.x, y=ctx.y)


def _bim_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    return _torch_runner(ctx, eps=p["eps"], eps_step=p["eps_step"], max_iter=p["max_iter"],
                         norm="linf", num_random_init=0)


def _pgd_art(norm: str):
    def run(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
        clf = white_box_classifier(ctx)
        atk = ProjectedGradientDescent(
            clf, norm=np.inf if norm == "linf" else 2, eps=p["eps"], eps_step=p["eps_step"],
            max_iter=p["max_iter"], targeted=False, num_random_init=p["num_random_init"],
            batch_size=ctx.batch_size, random_eps=False, verbose=False,
        )
        return atk.generate(ctx.x, y=ctx.y)

    return run


def _pgd_torch(norm: str):
    def run(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
        return _torch_runner(ctx, eps=p["eps"], eps_step=p["eps_step"], max_iter=p["max_iter"],
                             norm=norm, num_random_init=p["num_random_init"])

    return run


# --------------------------------------------------------------------------------------
# Registry entries
# --------------------------------------------------------------------------------------


def _eps(default: float, doc: str = "L-inf radius (standardized units)") -> ParamSpec:
    return ParamSpec("eps", float, default, low=0.0, low_open=True, doc=doc)


def _eps_step(default: float) -> ParamSpec:
    return ParamSpec("eps_step", float, default, low=0.0, low_open=True, doc="step size per iteration")


def _max_iter(default: int) -> ParamSpec:
    return ParamSpec("max_iter", int, default, low=1, doc="number of iterations")


def _restarts(default: int = 1) -> ParamSpec:
    return ParamSpec("num_random_init", int, default, low=1, high=100,
                     doc="random starts (the best of them is kept)")


FGSM = register_attack(AttackSpec(
    name="fgsm", family="gradient", kind="white-box", norm="linf",
    title="Fast Gradient Sign Method (Goodfellow et al. 2015)",
    params=(_eps(0.25),),
    paper_grid=tuple({"eps": e} for e in STUDY_EPS),
    quick_grid=({"eps": 0.25}, {"eps": 1.0}),
    backends={"art": _fgsm_art, "torch": _fgsm_torch},
    default_backend="torch",  # benchmarks/results/emodb-paper: as fast as ART or faster, same output
))

BIM = register_attack(AttackSpec(
    name="bim", family="gradient", kind="white-box", norm="linf",
    title="Basic Iterative Method (Kurakin et al. 2017)",
    params=(_eps(0.25), _eps_step(0.1), _max_iter(100)),
    paper_grid=tuple({"eps": e, "eps_step": 0.1, "max_iter": 100} for e in STUDY_EPS),
    quick_grid=({"eps": 0.25, "eps_step": 0.1, "max_iter": 10},),
    backends={"art": _bim_art, "torch": _bim_torch},
    default_backend="torch",  # 1.1x faster than ART on EmoDB (ART adds two forwards per call)
))

PGD = register_attack(AttackSpec(
    name="pgd", family="gradient", kind="white-box", norm="linf",
    title="Projected Gradient Descent, L-inf, random start (Madry et al. 2018)",
    params=(_eps(0.25), _eps_step(0.1), _max_iter(100), _restarts(1)),
    paper_grid=tuple({"eps": e, "eps_step": 0.1, "max_iter": 100, "num_random_init": 1}
                     for e in STUDY_EPS),
    quick_grid=({"eps": 0.25, "eps_step": 0.1, "max_iter": 10, "num_random_init": 1},),
    backends={"art": _pgd_art("linf"), "torch": _pgd_torch("linf")},
    default_backend="torch",
    notes="not in the study; its 'paper' grid mirrors the study's BIM grid with a random start",
))

PGD_L2 = register_attack(AttackSpec(
    name="pgd_l2", family="gradient", kind="white-box", norm="l2",
    title="Projected Gradient Descent, L2, random start (Madry et al. 2018)",
    params=(_eps(10.0, "L2 radius over all 261 x 128 cells (standardized units)"),
            _eps_step(1.0), _max_iter(100), _restarts(1)),
    paper_grid=tuple({"eps": e, "eps_step": e / 10, "max_iter": 100, "num_random_init": 1}
                     for e in (5.0, 10.0, 20.0, 40.0)),
    quick_grid=({"eps": 10.0, "eps_step": 2.0, "max_iter": 10, "num_random_init": 1},),
    backends={"art": _pgd_art("l2"), "torch": _pgd_torch("l2")},
    default_backend="torch",
    notes=("not in the study; an L2 radius r spread evenly is r / sqrt(33408) ~ r / 183 per "
           "cell, so eps 10 ~ 0.055 rms per cell"),
))
