"""DeepFool (study, white-box): minimal L2 steps to the nearest linearised decision boundary.

Paper: Moosavi-Dezfooli, Fawzi, Frossard (2016), "DeepFool: a simple and accurate method to fool
deep neural networks", https://arxiv.org/abs/1511.04599.

Threat model: white-box (input gradients of the model's outputs), untargeted: each sample moves
away from the model's *prediction* (``y`` is not used). Distance: L2, minimised; no explicit
budget, inside the corpus's clip box.

Parameters:

max_iter : int, default 5
    DeepFool steps at most (the study: 1, 5 and 20).
nb_grads : int, default 5
    Top classes whose gradients are used (5 = all five emotions in the study).
overshoot : float, default 1e-5
    ART's ``epsilon``: the result is ``x + (1 + overshoot) (x_deepfool - x)``.
output : {"logits", "probabilities"}, default "logits"
    What is differentiated: the logits (the attack as designed) or the softmax output (what
    ART saw on the study's Keras model, whose head is a softmax).

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32 -> ``x_adv`` ``[shape=(n, 261, 128)]`` float32.

Backends: ``"art"``: ART 1.20.1 ``DeepFool`` on
:class:`~seradv.attacks._art.SeradvPyTorchClassifier` (eval-mode gradients, cuDNN off on CUDA).
``"torch"`` (default): :func:`deepfool_batch`, ART's algorithm for all samples of a batch at
once; it watches its iterates (``AttackResult.fooled_any``, w.r.t. the true labels): each
iterate from the step's own forward pass, the returned overshot example from one extra forward
pass per batch. ART's quirk, kept since it is what the study ran: every step is multiplied by
the clip range ``clip_max - clip_min`` (x12 for EmoDB's ``(-5, 7)``), so steps overshoot the
boundary by an order of magnitude, consistent with the study's large mean |perturbation|
(1.1-1.9) for DeepFool. ``output="logits"`` is the default for DeepFool, JSMA and both C&W
attacks: on a confident model the softmax is saturated (gradient ~0), see
:mod:`seradv.attacks.cw_l2`.

Example:

>>> run_attack("deepfool", model, x, y, {"max_iter": 5}, clip=(-5, 7))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from art.attacks.evasion import DeepFool
from torch import nn

from seradv.attacks._art import white_box_classifier
from seradv.attacks._torch import OUTPUT_PARAM, as_output, batched_outputs, forward_with_graph, refit_rows
from seradv.attacks.context import AttackContext, QueryCounter, gradient_context, map_batches_watched
from seradv.attacks.spec import AttackSpec, ParamSpec, register_attack

__all__ = ["DEEPFOOL", "deepfool_batch", "gradient_labels"]


class _DropProbabilityWarning(logging.Filter):
    """Drop ART's "model is predicting probabilities" warning when probabilities are chosen."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "predicting probabilities" not in record.getMessage()


# --------------------------------------------------------------------------------------
# Plain torch implementation
# --------------------------------------------------------------------------------------
#: ART's "small scalar to avoid division by 0" (``tol = 10e-8`` in ``DeepFool.generate``).
_TOL = 10e-8

def _class_jacobian(xg: torch.Tensor, f: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """Gradients of ``f[:, c]`` for ``c`` in ``labels`` ``[shape=(m, k, *xg.shape[1:])]``.

    One backward pass per label through the retained graph; a row's gradient is that of its own
    output (eval mode: rows are independent), as ART's ``class_gradient``.
    """
    k = len(labels)
    grads = []
    with torch.enable_grad():
        for j, c in enumerate(labels):
            (g,) = torch.autograd.grad(f[:, c].sum(), xg, retain_graph=j < k - 1)
            grads.append(g)
    return torch.stack(grads, 1)


def deepfool_batch(
    model: nn.Module,
    x: torch.Tensor,
    *,
    labels: list[int],
    max_iter: int,
    overshoot: float,
    clip: tuple[float, float],
    output: str = "logits",
    counter: QueryCounter | None = None,
    y: torch.Tensor | None = None,
    watch: Callable[[torch.Tensor | None, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """ART 1.20.1's DeepFool on one batch, all samples in parallel (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        In eval mode, on ``x``'s device.
    x : Tensor ``[shape=(b, 261, 128)]`` float32
    labels : list of int
        Sorted classes whose gradients are used (ART's ``labels_set``); must hold every
        sample's predicted class.
    max_iter : int
    overshoot : float
        ART's ``epsilon``: the result is ``clip(x + (1 + overshoot) * (x_deepfool - x))``.
    clip : (float, float)
        Box; every step is also multiplied by ``clip[1] - clip[0]`` (ART quirk).
    output : {"logits", "probabilities"}
    counter : QueryCounter or None
        Work counters to add to.
    y : int Tensor ``[shape=(b,)]`` or None
        ``early_stop``: samples not predicted as ``y`` are not attacked (None: all are).
    watch : callable or None
        ``watch(rows, pred)`` (:class:`~seradv.attacks.context.IterateWatch`) gets the
        prediction of every iterate from the step's own forward pass, and that of the returned
        example (``x + (1 + overshoot) (x_k - x)``, not an iterate) from one extra forward
        pass without a graph (``n_queries``).

    Returns
    -------
    Tensor ``[shape=(b, 261, 128)]`` float32, detached, inside ``clip``.
    """
    counter = counter if counter is not None else QueryCounter()
    lo, hi = clip
    scale = hi - lo
    k = len(labels)
    x = x.detach()
    dev = x.device
    labels_t = torch.tensor(labels, dtype=torch.long, device=dev)
    pos = torch.full((max(labels) + 1,), -1, dtype=torch.long, device=dev)  # class -> column
    pos[labels_t] = torch.arange(k, device=dev)
    x_cur = x.clone()
    active = torch.arange(x.shape[0], device=dev)
    fk_hat = torch.zeros(x.shape[0], dtype=torch.long, device=dev)
    with gradient_context(dev):
        for step in range(max_iter):
            xa = x_cur[active]
            m = xa.shape[0]
            xg, f = forward_with_graph(model, xa, output)
            pred = f.detach().argmax(1)
            if watch is not None:  # the iterate x_cur[active], inside the clip box
                watch(active, pred)
            if step == 0:
                fk_hat[active] = pred  # ART: the prediction on the clean input
                keep = torch.ones_like(pred, dtype=torch.bool)
            else:  # ART: stop on the samples whose prediction changed
                keep = pred == fk_hat[active]
            if y is not None:
                keep &= pred == y[active]
            m_keep = int(keep.sum())
            if m_keep == 0:
                counter.n_queries += m
                break
            trim = None
            if m_keep < m:
                active = active[keep]
                if refit_rows(m, m_keep, k):  # a fresh graph of the kept rows only
                    counter.n_queries += m
                    xg, f = forward_with_graph(model, xa[keep], output)
                else:  # back-propagate the finished rows too, drop them afterwards
                    trim = keep
            grd = _class_jacobian(xg, f, labels)
            counter.n_grads += xg.shape[0]
            counter.n_backward += xg.shape[0] * (k - 1)
            f = f.detach()
            if trim is not None:
                f, grd = f[trim], grd[trim]
            with torch.no_grad():  # ART's update, line by line
                ar = torch.arange(active.shape[0], device=dev)
                own = pos[fk_hat[active]]
                grad_diff = grd - grd[ar, own].unsqueeze(1)
                f_diff = f[:, labels_t] - f[ar, fk_hat[active]].unsqueeze(1)
                norm = grad_diff.flatten(2).norm(dim=2) + _TOL
                value = f_diff.abs() / norm
                value[ar, own] = torch.inf
                l_var = value.argmin(1)
                absolute1 = f_diff[ar, l_var].abs()
                draddiff = grad_diff[ar, l_var]
                pow1 = draddiff.flatten(1).norm(dim=1) ** 2 + _TOL
                r_var = (absolute1 / pow1).view(-1, *([1] * (x.ndim - 1))) * draddiff
                x_cur[active] = (x_cur[active] + r_var * scale).clamp(lo, hi)
    with torch.no_grad():
        out = (x + (1 + overshoot) * (x_cur - x)).clamp(lo, hi)
    if watch is not None:  # the returned example: one forward pass without a graph
        with torch.inference_mode():
            watch(None, model(out).argmax(1))
        counter.n_queries += x.shape[0]
    return out


def gradient_labels(ctx: AttackContext, nb_grads: int, output: str) -> list[int]:
    """ART's ``labels_set``: all classes, or the union over *all* of ``ctx.x`` of each sample's
    ``nb_grads`` top classes (one forward pass of every sample when ``nb_grads < n_classes``)."""
    if nb_grads >= ctx.n_classes:
        return list(range(ctx.n_classes))
    def top(z: torch.Tensor) -> torch.Tensor:
        f = as_output(z, output)
        # np.argsort(-preds) on <= 16 classes is an insertion sort: stable on ties
        return torch.sort(-f, dim=1, stable=True).indices[:, :nb_grads]

    tops = batched_outputs(ctx.model, ctx.x, ctx.device, ctx.batch_size, top)
    ctx.counter.n_queries += ctx.n
    return sorted(int(c) for c in tops.unique().tolist())


def _deepfool_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    labels = gradient_labels(ctx, p["nb_grads"], p["output"])
    return map_batches_watched(ctx, lambda xb, yb, watch: deepfool_batch(
        ctx.model, xb, labels=labels, max_iter=p["max_iter"], overshoot=p["overshoot"],
        clip=ctx.clip.as_tuple(), output=p["output"], counter=ctx.counter,
        y=yb if ctx.early_stop else None, watch=watch,
    ))


def _deepfool_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    clf = white_box_classifier(ctx, output=p["output"])
    atk = DeepFool(clf, max_iter=p["max_iter"], epsilon=p["overshoot"], nb_grads=p["nb_grads"],
                   batch_size=ctx.batch_size, verbose=False)
    art_logger = logging.getLogger("art.attacks.evasion.deepfool")
    filt = _DropProbabilityWarning()
    if p["output"] == "probabilities":  # a deliberate choice (the study's model), not a mistake
        art_logger.addFilter(filt)
    try:
        return atk.generate(ctx.x)
    finally:
        art_logger.removeFilter(filt)


DEEPFOOL = register_attack(AttackSpec(
    name="deepfool", family="deepfool", kind="white-box", norm="l2",
    title="DeepFool (Moosavi-Dezfooli et al. 2016)",
    params=(
        ParamSpec("max_iter", int, 5, low=1, doc="maximum number of DeepFool steps"),
        ParamSpec("nb_grads", int, 5, low=1, doc="number of top classes whose gradients are used"),
        ParamSpec("overshoot", float, 1e-5, low=0.0, doc="overshoot factor (ART's epsilon)"),
        OUTPUT_PARAM,
    ),
    paper_grid=tuple({"max_iter": m, "nb_grads": 5, "overshoot": 1e-5} for m in (1, 5, 20)),
    quick_grid=({"max_iter": 5, "nb_grads": 5, "overshoot": 1e-5},),
    backends={"art": _deepfool_art, "torch": _deepfool_torch},
    default_backend="torch",
    notes="ART scales every step by (clip_max - clip_min); see module docstring",
))
