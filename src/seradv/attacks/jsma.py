"""Jacobian-based Saliency Map Attack, JSMA (study, white-box): a few cells pushed by ``theta`` each.

Paper: Papernot, McDaniel, Jha, Fredrikson, Celik, Swami (2016), "The limitations of deep
learning in adversarial settings", https://arxiv.org/abs/1511.07528.

Threat model: white-box (the target class's input gradient), *targeted*: seradv draws one target
per sample with ``seed`` among the classes other than ``y`` (ART draws them unseeded among the
classes other than the prediction when it gets no labels, which is what the study's call did;
passing the true labels as targets would attack nothing). Distance: L0 (changed cells): each
step adds ``theta`` to the two cells with the largest target-class gradient, until the target
class is predicted or a fraction ``gamma`` of the cells has been used; inside the clip box.

Parameters:

theta : float, default 1.0
    Change added to each chosen cell, standardized units, non-zero (the study: -1, -0.5, 0.5, 1).
gamma : float, default 1.0
    Largest fraction of the cells that may be changed (the study: 1). Up to
    ``gamma * 33408 / 2`` steps, each one class gradient: use a small ``gamma`` for quick runs.
output : {"logits", "probabilities"}, default "logits"
    What is differentiated (see :mod:`seradv.attacks.deepfool`).

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` int64 -> ``x_adv``
``[shape=(n, 261, 128)]`` float32.

Backends: ``"art"``: ART 1.20.1 ``SaliencyMapMethod`` on
:class:`~seradv.attacks._art.SeradvPyTorchClassifier` (eval-mode gradients, cuDNN off on CUDA;
only the target-class gradient per step). ``"torch"`` (default): :func:`jsma_batch`, ART's
algorithm for all samples at once in a rolling window of ``batch_size`` rows; it watches its
iterates (``AttackResult.fooled_any``, w.r.t. the true labels, not the targets): each step's
iterate from the step's own forward pass, the last iterate of samples that ran out of budget
from one forward pass at the end.

Example:

>>> run_attack("jsma", model, x, y, {"theta": 1.0, "gamma": 1.0}, clip=(-5, 7))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from art.attacks.evasion import SaliencyMapMethod
from torch import nn

from seradv.attacks._art import white_box_classifier
from seradv.attacks._torch import OUTPUT_PARAM, forward_with_graph, refit_rows
from seradv.attacks.context import AttackContext, IterateWatch, QueryCounter, gradient_context
from seradv.attacks.spec import AttackSpec, ParamSpec, register_attack
from seradv.errors import ParameterError

__all__ = ["JSMA", "jsma_batch", "random_targets"]


def random_targets(y: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """One target class per sample, uniform among the classes other than ``y`` ``[shape=(n,)]``."""
    rng = np.random.default_rng(seed)
    shift = rng.integers(1, n_classes, size=y.shape[0])
    return ((y + shift) % n_classes).astype(np.int64)


def jsma_batch(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    theta: float,
    gamma: float,
    clip: tuple[float, float],
    output: str = "logits",
    counter: QueryCounter | None = None,
    y: torch.Tensor | None = None,
    max_rows: int | None = None,
    watch: Callable[[torch.Tensor | None, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """ART 1.20.1's ``SaliencyMapMethod`` on one batch, all samples in parallel (module docstring).

    With ``max_rows``, at most that many unfinished samples take a step at once, and a sample
    that finishes hands its slot to the next one waiting (a rolling window): the batch stays
    full until the last samples, instead of running each fixed batch's long tail (JSMA's steps
    per sample range from a few to over a thousand) at a batch of one or two.

    Parameters
    ----------
    model : nn.Module
        In eval mode, on ``x``'s device.
    x : Tensor ``[shape=(b, 261, 128)]`` float32, inside ``clip``
    target : int Tensor ``[shape=(b,)]``
        Target class of each sample.
    theta : float
        Added to each chosen cell (standardized units, not scaled by the clip range); non-zero.
    gamma : float
        A sample stops once more than a fraction ``gamma`` of its cells has been chosen.
    clip : (float, float)
    output : {"logits", "probabilities"}
    counter : QueryCounter or None
        Work counters to add to.
    y : int Tensor ``[shape=(b,)]`` or None
        ``early_stop``: a sample also stops once it is no longer predicted as ``y``.
    max_rows : int or None
        Rolling window size (above).
    watch : callable or None
        ``watch(rows, pred)`` (:class:`~seradv.attacks.context.IterateWatch`, rows = positions
        in ``x``) gets the prediction of every iterate from the step's own forward pass; the
        last iterate of a sample that stopped on its budget (not on a prediction) takes one
        forward pass without a graph at the end (``n_queries``).

    Returns
    -------
    Tensor ``[shape=(b, 261, 128)]`` float32, detached, inside ``clip``.
    """
    counter = counter if counter is not None else QueryCounter()
    lo, hi = clip
    b, dev = x.shape[0], x.device
    n_feat = x[0].numel()
    xf = x.detach().reshape(b, n_feat).clone()
    # ART's search domain: the cells that can still move in theta's direction
    search = xf < hi if theta > 0 else xf > lo
    clip_value = hi if theta > 0 else lo
    used = torch.zeros_like(search)  # ART's all_feat: cells chosen at least once
    unseen = torch.zeros(b, dtype=torch.bool, device=dev)  # changed since its last forward pass
    active = torch.arange(b, device=dev)
    with gradient_context(dev):
        while active.numel() > 0:
            win, rest = (active, active[:0]) if max_rows is None else (active[:max_rows], active[max_rows:])
            xa = xf[win].view(-1, *x.shape[1:])
            m = xa.shape[0]
            xg, f = forward_with_graph(model, xa, output)
            pred = f.detach().argmax(1)
            if watch is not None:  # the iterates xf[win], inside the clip box
                watch(win, pred)
                unseen[win] = False
            keep = pred != target[win]  # ART: stop once the target class is predicted
            if y is not None:
                keep &= pred == y[win]
            m_keep = int(keep.sum())
            if m_keep == 0:
                counter.n_queries += m
                active = rest
                continue
            graph_rows, trim = win, None
            if m_keep < m:
                win = win[keep]
                if refit_rows(m, m_keep, 1):  # a fresh graph of the kept rows only
                    counter.n_queries += m
                    xg, f = forward_with_graph(model, xa[keep], output)
                    graph_rows = win
                else:  # back-propagate the finished rows too, drop them afterwards
                    trim = keep
            with torch.enable_grad():  # ART: class_gradient(x, label=target)
                sel = f.gather(1, target[graph_rows].unsqueeze(1)).sum()
                (grad,) = torch.autograd.grad(sel, xg)
            counter.n_grads += xg.shape[0]
            with torch.no_grad():
                grad = grad.reshape(xg.shape[0], n_feat)
                if trim is not None:
                    grad = grad[trim]
                # ART: the two cells of the search domain with the largest (theta > 0) or
                # smallest (theta < 0) target-class gradient
                score = grad if theta > 0 else -grad
                score = score.masked_fill(~search[win], -torch.inf)
                idx = score.topk(2, dim=1).indices
                rows = win.unsqueeze(1)
                new = xf[rows, idx] + theta
                new = new.clamp(max=hi) if theta > 0 else new.clamp(min=lo)
                xf[rows, idx] = new
                used[rows, idx] = True
                unseen[win] = True
                search[rows, idx] &= new != clip_value
                # ART: go on while at most gamma of the cells were used and some can still move
                budget = used[win].sum(1).double() / n_feat <= gamma
                active = torch.cat([win[budget & search[win].any(1)], rest])
    if watch is not None and bool(unseen.any()):  # last iterates of the rows that ran out of budget
        left = unseen.nonzero()[:, 0]
        step = left.numel() if max_rows is None else max_rows
        with torch.inference_mode():
            for s in range(0, left.numel(), step):
                r = left[s : s + step]
                watch(r, model(xf[r].view(-1, *x.shape[1:])).argmax(1))
        counter.n_queries += int(left.numel())
    return xf.view_as(x)


def _jsma_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    targets = torch.from_numpy(random_targets(ctx.y, ctx.n_classes, ctx.seed)).to(ctx.device)
    y_true = torch.from_numpy(ctx.y).to(ctx.device)
    y = y_true if ctx.early_stop else None
    watch = IterateWatch(ctx, 0, y_true)
    # every sample in one rolling window of batch_size rows (jsma_batch's max_rows)
    adv = jsma_batch(ctx.model, torch.from_numpy(ctx.x).to(ctx.device), targets, theta=p["theta"],
                     gamma=p["gamma"], clip=ctx.clip.as_tuple(), output=p["output"], counter=ctx.counter,
                     y=y, max_rows=ctx.batch_size, watch=watch)
    watch.flush()
    return adv.cpu().numpy()


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
    backends={"art": _jsma_art, "torch": _jsma_torch},
    default_backend="torch",
    check=_check,
))
