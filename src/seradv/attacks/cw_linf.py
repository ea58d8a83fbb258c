"""Carlini & Wagner L-inf (study, white-box): the smallest L-inf change, shrinking bound ``tau``.

Paper: Carlini, Wagner (2017), "Towards evaluating the robustness of neural networks",
https://arxiv.org/abs/1608.04644.

Threat model: white-box (input gradients), untargeted (away from ``y``). Distance: L-inf,
minimised: per sample a decreasing bound ``tau`` (x ``decrease_factor``) and, for each ``tau``,
constants ``initial_const * const_factor^k < largest_const``, ``max_iter`` Adam steps each, in
tanh space (inside the clip box). Samples without an accepted example come back clean.

Parameters:

confidence : float, default 0.0
    Required logit margin (kappa).
learning_rate : float, default 0.01
    Adam step size (the study: 0.01).
max_iter : int, default 10
    Adam steps per constant (the study: 10).
initial_const : float, default 1e-4
    First constant ``c`` (the study: 1e-4).
largest_const : float, default 20.0
    Constants stop below it (the study: 20).
decrease_factor : float, default 0.8
    ``tau`` shrink factor (the study: 0.8).
const_factor : float, default 4.0
    ``c`` growth factor (the study: 4).
output : {"logits", "probabilities"}, default "logits"
    What is differentiated (see :mod:`seradv.attacks.cw_l2`).

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` int64 -> ``x_adv``
``[shape=(n, 261, 128)]`` float32.

Backends: ``"art"``: ART 1.20.1 ``CarliniLInfMethod`` on
:class:`~seradv.attacks._art.SeradvPyTorchClassifier`, one sample at a time (no batching): by
far the slowest white-box attack. ``"torch"`` (default): :func:`cw_linf_batch`, ART's loop for
all rows at once (the same examples); it watches its Adam iterates (``AttackResult.fooled_any``,
w.r.t. the true labels), all in the clip box, from outputs computed anyway.

Example:

>>> run_attack("cw_linf", model, x, y, {}, clip=(-5, 7))  # the study's settings  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from art.attacks.evasion import CarliniLInfMethod
from torch import nn

from seradv.attacks._art import white_box_classifier
from seradv.attacks._torch import (
    CW_PARAMS,
    OUTPUT_PARAM,
    Adam,
    adam_pass,
    cw_batched,
    margin,
    to_tanh,
    warn_if_inert,
)
from seradv.attacks.context import AttackContext, QueryCounter, gradient_context
from seradv.attacks.spec import AttackSpec, ParamSpec, register_attack

__all__ = ["CW_LINF", "cw_linf_batch"]

def _cw_linf_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    clf = white_box_classifier(ctx, output=p["output"])
    atk = CarliniLInfMethod(
        clf, confidence=p["confidence"], targeted=False, learning_rate=p["learning_rate"],
        max_iter=p["max_iter"], decrease_factor=p["decrease_factor"],
        initial_const=p["initial_const"], largest_const=p["largest_const"],
        const_factor=p["const_factor"], batch_size=ctx.batch_size, verbose=False,
    )
    x_adv = atk.generate(ctx.x, y=ctx.y)
    warn_if_inert("cw_linf", ctx, x_adv)
    return x_adv



#: ART's C&W L-inf: Adam stops once the objective drops below this (``loss_converged``).
LINF_LOSS_CONVERGED = 0.001
#: ART's C&W L-inf: the tau loop ends once tau is at most this.
LINF_TAU_MIN = 1.0 / 256.0


def cw_linf_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    confidence: float,
    learning_rate: float,
    max_iter: int,
    decrease_factor: float,
    initial_const: float,
    largest_const: float,
    const_factor: float,
    clip: tuple[float, float],
    output: str = "logits",
    counter: QueryCounter | None = None,
    early_stop: bool = False,
    watch: Callable[[torch.Tensor | None, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Batched C&W L-inf, ART 1.20.1's ``CarliniLInfMethod`` loop run for all rows at once.

    Per row: ``tau = 1``; per ``tau`` level, for each constant ``c = initial_const *
    const_factor^j < largest_const``, ART runs Adam (``max_iter`` steps from ``x``) on the
    gradient of ``Z_y - max_{k!=y} Z_k + sum(max(|x_adv - x| - tau, 0))`` and stops when
    ``c * max(Z_y - max_{k!=y} Z_k + confidence, 0) + sum(max(|x_adv - x| - tau, 0)) < 0.001``.
    The gradient does not depend on ``c``, so the runs of one level are prefixes of one Adam
    trajectory, which this function computes once: the run of constant ``c_j`` ends at the
    first iterate where its objective converges (else at step ``max_iter``). A run's end point
    is accepted if it is misclassified and its L-inf distance beats the row's best (initially
    1.0, ART's ``delta_i_best``), in the order of the constants. After a level, ``tau <-
    min(tau, ||best - x||_inf) * decrease_factor``; a row stops when nothing was accepted in
    the level or ``tau <= 1/256``.

    Parameters
    ----------
    model : nn.Module
    x : Tensor ``[shape=(b, 261, 128)]`` float32, inside ``clip``
    y : Tensor ``[shape=(b,)]`` int64
    confidence, learning_rate, max_iter, decrease_factor, initial_const, largest_const, const_factor
        As ART's ``CarliniLInfMethod``.
    clip : (float, float)
    output : {"logits", "probabilities"}
    counter : QueryCounter or None
        ``n_grads += rows`` per Adam step, ``n_queries += rows`` per last-iterate forward.
    early_stop : bool
        Stop a row at its first accepted example (no further steps or ``tau`` levels).
    watch : callable or None
        ``watch(rows, pred)`` (:class:`~seradv.attacks.context.IterateWatch`) gets the
        prediction of every point the model evaluates (all inside the clip box), from the
        outputs already computed: no extra pass.

    Returns
    -------
    Tensor ``[shape=(b, 261, 128)]``: the accepted example with the smallest L-inf distance,
    ``x`` where none was accepted.
    """
    counter = counter if counter is not None else QueryCounter()
    x, y = x.detach(), y.detach()
    n, dev = x.shape[0], x.device
    consts = []
    c = float(initial_const)
    while c < largest_const:
        consts.append(c)
        c *= const_factor
    best_x = x.clone()
    if not consts:  # ART runs no optimisation at all
        return best_x
    c_t = torch.tensor(consts, device=dev, dtype=x.dtype)
    n_c = len(consts)
    w0 = to_tanh(x, clip)
    best_d = torch.ones(n, device=dev, dtype=x.dtype)  # ART: delta_i_best = 1.0
    tau = torch.ones(n, device=dev, dtype=x.dtype)
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    while bool(alive.any()):
        rows = alive.nonzero()[:, 0]
        xr, yr, taur = x[rows], y[rows], tau[rows]
        w = w0[rows].clone()
        adam = Adam(w, learning_rate)
        live = torch.arange(rows.numel(), device=dev)
        next_c = torch.zeros(rows.numel(), dtype=torch.long, device=dev)  # first unfinished const
        found = torch.zeros(rows.numel(), dtype=torch.bool, device=dev)
        with gradient_context(dev):
            for k in range(max_iter + 1):
                last = k == max_iter
                xl, yl, tl = xr[live], yr[live], taur[live, None, None]

                def objective(xa: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
                    # ART's gradient: no hinge on the margin, no constant
                    return margin(z, yl) + ((xa - xl).abs() - tl).clamp_min(0).flatten(1).sum(1)

                xa, z, grad = adam_pass(model, w[live], clip, output, counter, None if last else objective)
                if watch is not None:
                    watch(rows[live], z.argmax(1))
                if k == 0:
                    adam.step(w, torch.nan_to_num(grad), live)
                    continue
                with torch.no_grad():
                    if last:
                        n_conv = torch.full_like(next_c[live], n_c)
                    else:
                        l1 = (margin(z, yl) + confidence).clamp_min(0)
                        l2 = ((xa - xl).abs() - tl).clamp_min(0).flatten(1).sum(1)
                        conv = l1[:, None] * c_t[None, :] + l2[:, None] < LINF_LOSS_CONVERGED
                        n_conv = conv.sum(1)  # a prefix of the constants (l1 >= 0)
                    ends = n_conv > next_c[live]  # some constant's run ends at this iterate
                    delta = (xa - xl).abs().flatten(1).amax(1)
                    glob = rows[live]
                    accept = ends & (z.argmax(1) != yl) & (delta < best_d[glob])
                    idx = glob[accept]
                    best_x[idx] = xa[accept]
                    best_d[idx] = delta[accept]
                    found[live[accept]] = True
                    next_c[live] = torch.maximum(next_c[live], n_conv)
                    if last:
                        break
                    keep = next_c[live] < n_c
                    if early_stop:
                        keep &= ~accept
                    if not bool(keep.all()):
                        live, grad = live[keep], grad[keep]
                        if live.numel() == 0:
                            break
                    adam.step(w, torch.nan_to_num(grad), live)
        with torch.no_grad():
            tau_actual = (best_x[rows] - xr).abs().flatten(1).amax(1)
            new_tau = torch.minimum(taur, tau_actual) * decrease_factor
            tau[rows] = new_tau
            alive[rows] = found & (new_tau > LINF_TAU_MIN)
            if early_stop:
                alive[rows] = False
    return best_x


def _cw_linf_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    x_adv = cw_batched(
        ctx, cw_linf_batch, confidence=p["confidence"], learning_rate=p["learning_rate"],
        max_iter=p["max_iter"], decrease_factor=p["decrease_factor"],
        initial_const=p["initial_const"], largest_const=p["largest_const"],
        const_factor=p["const_factor"], output=p["output"],
    )
    warn_if_inert("cw_linf", ctx, x_adv)
    return x_adv



CW_LINF = register_attack(AttackSpec(
    name="cw_linf", family="carlini", kind="white-box", norm="linf",
    title="Carlini & Wagner L-inf (Carlini and Wagner 2017)",
    params=CW_PARAMS + (
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
    backends={"art": _cw_linf_art, "torch": _cw_linf_torch},
    default_backend="torch",
    notes="one sample at a time in ART; the slowest white-box attack",
))
