"""Carlini & Wagner L2 (study, white-box): the smallest L2 change with a logit margin, in tanh space.

Paper: Carlini, Wagner (2017), "Towards evaluating the robustness of neural networks",
https://arxiv.org/abs/1608.04644.

Threat model: white-box (input gradients), untargeted (away from ``y``). Distance: L2,
minimised: ``||delta||_2^2 + c * max(Z_y - max_{k!=y} Z_k + confidence, 0)`` in tanh space (so
the clip box is never left), ``max_iter`` gradient steps per binary-search step on the constant
``c``. Samples for which no adversarial example was found come back clean (ART's
``best_x_adv_batch`` starts as ``x``).

Parameters:

confidence : float, default 0.0
    Required logit margin (kappa).
learning_rate : float, default 0.01
    First step size (the study: 0.01).
max_iter : int, default 10
    Gradient steps per constant (the study: 10).
binary_search_steps : int, default 20
    Binary-search steps on ``c`` (the study: 20). With ``initial_const 0.01`` a failing
    sample's constant doubles per step (``0.01 * 2^k``): the attack only bites once ``c`` is
    large, so few steps may change no sample at all (a warning says so).
initial_const : float, default 0.01
    First constant ``c`` (the study: 0.01).
optimizer : {"line_search", "adam"}, default "line_search"
    ``"line_search"``: ART's (and so the study's) gradient steps whose size is found by
    halving / doubling; ``"adam"`` (torch backend only): Adam steps of size ``learning_rate``,
    the formulation of Carlini and Wagner's own code (larger examples; docs/benchmarks.md).
max_halving, max_doubling : int, default 5 (the paper grid: 10, as the study's code)
    Line search: step halvings / doublings per iteration.
output : {"logits", "probabilities"}, default "logits"
    ``Z``: the logits (the attack as designed) or the softmax output as a Keras model with a
    softmax head exposes it. On a confident model the softmax is saturated (gradient ~0) and the
    study's settings on probabilities changed no sample, although the study reports C&W L2
    took EmoDB to 0.188: only the logit formulation reproduces an attack that bites.

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` int64 -> ``x_adv``
``[shape=(n, 261, 128)]`` float32.

Backends: ``"art"``: ART 1.20.1 ``CarliniL2Method`` on
:class:`~seradv.attacks._art.SeradvPyTorchClassifier` (eval-mode gradients, cuDNN off on CUDA).
``"torch"`` (default): :func:`cw_l2_line_search_batch` (ART's examples, batched) or
:func:`cw_l2_batch` (Adam); both watch every point they evaluate (``AttackResult.fooled_any``,
w.r.t. the true labels): iterates and line-search trials, all in the clip box, from outputs
computed anyway.

Example:

>>> run_attack("cw_l2", model, x, y, {}, clip=(-5, 7))  # the study's settings  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from art.attacks.evasion import CarliniL2Method
from torch import nn

from seradv.attacks._art import white_box_classifier
from seradv.attacks._torch import (
    CW_PARAMS,
    OUTPUT_PARAM,
    TANH_SMOOTHER,
    Adam,
    adam_pass,
    cw_batched,
    from_tanh,
    margin,
    model_output,
    to_tanh,
    warn_if_inert,
)
from seradv.attacks.context import AttackContext, QueryCounter, gradient_context
from seradv.attacks.spec import AttackSpec, ParamSpec, register_attack
from seradv.errors import AttackError

__all__ = ["CW_L2", "art_l2_const_update", "cw_l2_batch", "cw_l2_line_search_batch"]

def _cw_l2_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    if p["optimizer"] != "line_search":
        raise AttackError(f"cw_l2 optimizer={p['optimizer']!r} runs on the torch backend only; ART's "
                          "CarliniL2Method is the line search (optimizer='line_search')")
    clf = white_box_classifier(ctx, output=p["output"])
    atk = CarliniL2Method(
        clf, confidence=p["confidence"], targeted=False, learning_rate=p["learning_rate"],
        binary_search_steps=p["binary_search_steps"], max_iter=p["max_iter"],
        initial_const=p["initial_const"], max_halving=p["max_halving"],
        max_doubling=p["max_doubling"], batch_size=ctx.batch_size, verbose=False,
    )
    x_adv = atk.generate(ctx.x, y=ctx.y)
    warn_if_inert("cw_l2", ctx, x_adv)
    return x_adv



#: ART's ``_c_upper_bound`` of C&W L2 (samples whose constant reaches it stop).
C_UPPER_BOUND = 10e10


def art_l2_const_update(
    c: torch.Tensor, c_lower: torch.Tensor, c_double: torch.Tensor, success: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ART 1.20.1's update of C&W L2's constant after a binary-search step (new tensors).

    Success: ``c_double = False``, ``c = (c_lower + c) / 2``. Failure: ``c *= 2`` while the row
    never succeeded (``c_double``), else ``c += (c - c_lower) / 2``; then ``c_lower = c``.
    ART writes ``c_old = c_current`` (an alias, not a copy) before updating ``c_current`` in
    place, so ``c_lower`` takes the *new* constant: once a row has failed and then succeeded
    (or succeeded and then failed), ``c_lower == c`` and the constant never changes again.

    Parameters
    ----------
    c, c_lower : Tensor ``[shape=(b,)]`` float
    c_double : Tensor ``[shape=(b,)]`` bool
    success : Tensor ``[shape=(b,)]`` bool
        Whether any iterate of the step was adversarial.

    Returns
    -------
    (c, c_lower, c_double)
    """
    fail = ~success
    dbl = c_double & fail
    c = torch.where(success, (c_lower + c) / 2, c)
    c = torch.where(fail & dbl, c * 2, c)
    c = torch.where(fail & ~dbl, c + (c - c_lower) / 2, c)
    c_lower = torch.where(fail, c, c_lower)
    return c, c_lower, dbl


def _advance_constants(c: torch.Tensor, c_lower: torch.Tensor, c_double: torch.Tensor, rows: torch.Tensor,
                       success: torch.Tensor) -> torch.Tensor:
    """:func:`art_l2_const_update` of rows ``rows``, in place; returns which of them kept their
    constant (a rerun with it would repeat the same deterministic run: the caller skips them)."""
    c_old = c[rows]
    c_r, lo_r, dbl_r = art_l2_const_update(c_old, c_lower[rows], c_double[rows], success)
    c[rows], c_lower[rows], c_double[rows] = c_r, lo_r, dbl_r
    return c_r == c_old


def cw_l2_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    confidence: float,
    learning_rate: float,
    max_iter: int,
    binary_search_steps: int,
    initial_const: float,
    clip: tuple[float, float],
    output: str = "logits",
    counter: QueryCounter | None = None,
    early_stop: bool = False,
    watch: Callable[[torch.Tensor | None, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Batched C&W L2 with Adam, ART 1.20.1's binary search on ``c``; all rows in parallel.

    Per binary-search step every active row restarts from ``x`` (``w = arctanh`` of it) and
    takes ``max_iter`` Adam steps on ``||x_adv - x||_2^2 + c * max(Z_y - max_{k!=y} Z_k +
    confidence, 0)``, one forward+backward of the batch per step and one forward of the last
    iterate; every iterate (the start ``x`` included) that satisfies ``Z_y - max_{k!=y} Z_k +
    confidence <= 0`` and beats the row's best L2 becomes its adversarial example.

    Parameters
    ----------
    model : nn.Module
        In eval mode, on ``x``'s device.
    x : Tensor ``[shape=(b, 261, 128)]`` float32, inside ``clip``
    y : Tensor ``[shape=(b,)]`` int64
    confidence, learning_rate, max_iter, binary_search_steps, initial_const
        As ART's ``CarliniL2Method``.
    clip : (float, float)
    output : {"logits", "probabilities"}
        ``Z``: the model's logits or its softmax probabilities.
    counter : QueryCounter or None
        ``n_grads += rows`` per Adam step, ``n_queries += rows`` per last-iterate forward.
    early_stop : bool
        Stop a row at its first adversarial iterate (no further steps or constants).
    watch : callable or None
        ``watch(rows, pred)`` (:class:`~seradv.attacks.context.IterateWatch`) gets the
        prediction of every point the model evaluates (all inside the clip box), from the
        outputs already computed: no extra pass.

    Returns
    -------
    Tensor ``[shape=(b, 261, 128)]``: the smallest-L2 adversarial iterate per row, ``x``
    itself where none was found.
    """
    counter = counter if counter is not None else QueryCounter()
    x, y = x.detach(), y.detach()
    n, dev = x.shape[0], x.device
    w0 = to_tanh(x, clip)
    best_x = x.clone()
    best_l2 = torch.full((n,), float("inf"), device=dev)
    c = torch.full((n,), float(initial_const), device=dev, dtype=torch.float64)
    c_lower = torch.zeros_like(c)
    c_double = torch.ones(n, dtype=torch.bool, device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)

    def record(rows: torch.Tensor, xa: torch.Tensor, l2: torch.Tensor, z: torch.Tensor,
               yr: torch.Tensor) -> torch.Tensor:
        ok = margin(z, yr) + confidence <= 0
        better = ok & (l2 < best_l2[rows])
        idx = rows[better]
        best_l2[idx] = l2[better]
        best_x[idx] = xa[better]
        return ok

    for _ in range(binary_search_steps):
        active = ~done & (c < C_UPPER_BOUND)
        if not bool(active.any()):
            break
        rows = active.nonzero()[:, 0]
        xr, yr, cr = x[rows], y[rows], c[rows].to(x.dtype)
        w = w0[rows].clone()
        adam = Adam(w, learning_rate)
        live = torch.arange(rows.numel(), device=dev)  # rows still optimising (early_stop)
        success = torch.zeros(rows.numel(), dtype=torch.bool, device=dev)
        with gradient_context(dev):
            for k in range(max_iter + 1):
                last = k == max_iter
                xl, yl, cl = xr[live], yr[live], cr[live]

                def loss(xa: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
                    l2 = (xa - xl).square().flatten(1).sum(1)
                    return l2 + cl * (margin(z, yl) + confidence).clamp_min(0)

                xa, z, grad = adam_pass(model, w[live], clip, output, counter, None if last else loss)
                if watch is not None:
                    watch(rows[live], z.argmax(1))
                with torch.no_grad():
                    if k == 0:  # ART's first iterate is x itself (L2 exactly 0)
                        xa = xr[live]
                        l2 = torch.zeros(live.numel(), device=dev)
                    else:
                        l2 = (xa - xr[live]).square().flatten(1).sum(1)
                    ok = record(rows[live], xa, l2, z, yr[live])
                    success[live] |= ok
                    if last:
                        break
                    if early_stop and bool(ok.any()):
                        keep = ~ok
                        live, grad = live[keep], grad[keep]
                        if live.numel() == 0:
                            break
                    adam.step(w, torch.nan_to_num(grad), live)
        done[rows] = _advance_constants(c, c_lower, c_double, rows, success)
        if early_stop:
            done[rows] |= success
    return best_x


def cw_l2_line_search_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    confidence: float,
    learning_rate: float,
    max_iter: int,
    binary_search_steps: int,
    initial_const: float,
    max_halving: int,
    max_doubling: int,
    clip: tuple[float, float],
    output: str = "logits",
    counter: QueryCounter | None = None,
    early_stop: bool = False,
    watch: Callable[[torch.Tensor | None, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """ART 1.20.1's ``CarliniL2Method`` (gradient steps with a line search), all rows at once.

    Per binary-search step every row restarts from ``x`` with step size ``learning_rate``; each
    of the ``max_iter`` iterations takes the gradient of ``c (Z_y - Z_j) + ||x_adv - x||_2^2``
    in tanh space (``j`` the best other class; ART applies it whether or not the hinge is
    active), then halves the step (up to ``max_halving`` forwards) until the objective ``c
    max(Z_y - Z_j + confidence, 0) + ||x_adv - x||_2^2`` decreases, or, where the first
    trial already decreased it, doubles it (up to ``max_doubling`` forwards) while it does;
    the best step is taken. ART's bookkeeping is kept as it is, quirks included: the loss and
    L2 of a row that found no better step keep its last trial's values (so a rejected
    adversarial trial can make ART keep the unmoved iterate as the best example), success is
    re-read only after an iteration that moved some row, and the constant follows
    :func:`art_l2_const_update`. ART makes two class-gradient passes per iteration (``Z_y``,
    then ``Z_j``); this makes one forward+backward of ``Z_y - Z_j`` for the rows still active.
    Arithmetic as ART's: trial points and losses in float64, iterates stored in float32.

    Parameters
    ----------
    model : nn.Module
        In eval mode, on ``x``'s device.
    x : Tensor ``[shape=(b, 261, 128)]`` float32, inside ``clip``
    y : Tensor ``[shape=(b,)]`` int64
    confidence, learning_rate, max_iter, binary_search_steps, initial_const, max_halving, max_doubling
        As ART's ``CarliniL2Method``.
    clip : (float, float)
    output : {"logits", "probabilities"}
    counter : QueryCounter or None
        ``n_grads += rows`` per gradient, ``n_queries += rows`` per forward.
    early_stop : bool
        A row stops at its first adversarial iterate (no further iterations or constants).
    watch : callable or None
        ``watch(rows, pred)`` (:class:`~seradv.attacks.context.IterateWatch`) gets the
        prediction of every point the model evaluates (all inside the clip box), from the
        outputs already computed: no extra pass.

    Returns
    -------
    Tensor ``[shape=(b, 261, 128)]``: the smallest-L2 adversarial iterate per row, ``x``
    itself where none was found.
    """
    counter = counter if counter is not None else QueryCounter()
    x, y = x.detach(), y.detach()
    n, dev, f64 = x.shape[0], x.device, torch.float64
    lo, hi = clip
    w0 = to_tanh(x, clip)
    x64 = x.to(f64)
    best_x = x.clone()
    best_l2 = torch.full((n,), float("inf"), device=dev, dtype=f64)
    c = torch.full((n,), float(initial_const), device=dev, dtype=f64)
    c_lower = torch.zeros_like(c)
    c_double = torch.ones(n, dtype=torch.bool, device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    l2 = torch.zeros(n, device=dev, dtype=f64)
    loss = torch.zeros(n, device=dev, dtype=f64)
    z = torch.empty(0)  # ART's z_logits: the outputs at the current iterates (not at trials)

    def evaluate(rows: torch.Tensor, xa: torch.Tensor, *, iterate: bool) -> None:
        """``l2``, ``loss`` (and, at an ``iterate``, ``z``) of rows ``rows`` at ``xa`` (ART's
        ``_loss``), in place."""
        nonlocal z
        with torch.no_grad():
            zr = model_output(model, xa.to(x.dtype), output)
            counter.n_queries += int(rows.numel())
            if watch is not None:  # iterates and line-search trials alike: points in the box
                watch(rows, zr.argmax(1))
            l2r = (x64[rows] - xa.to(f64)).square().flatten(1).sum(1)
            hinge = (margin(zr, y[rows]).to(f64) + confidence).clamp_min(0)
            l2[rows], loss[rows] = l2r, c[rows] * hinge + l2r
            if iterate:
                if z.shape[0] != n:
                    z = zr.new_empty(n, zr.shape[1])
                z[rows] = zr

    def read_success() -> torch.Tensor:
        # ART: ``loss - l2 <= 0``, where a row that did not move carries its last trial's loss and
        # L2 (so a rejected adversarial trial counts as a success). Early stop ends a row, so
        # it asks whether the row's current iterate itself is adversarial.
        if early_stop:
            return (margin(z, y) + confidence <= 0) & ~done
        return (loss - l2 <= 0) & ~done

    def keep_best(success: torch.Tensor, x_adv: torch.Tensor) -> None:
        better = success & (l2 < best_l2) & ~done
        best_l2[better] = l2[better]
        best_x[better] = x_adv[better]

    def step(rows: torch.Tensor, w: torch.Tensor, lr: torch.Tensor, pert: torch.Tensor) -> torch.Tensor:
        """``w + lr * pert`` of rows ``rows``, in float64 (ART's arithmetic)."""
        return w[rows].to(f64) + lr[rows, None, None] * pert[rows].to(f64)

    def trial(rows: torch.Tensor, w: torch.Tensor, lr: torch.Tensor, pert: torch.Tensor) -> None:
        evaluate(rows, from_tanh(step(rows, w, lr, pert), clip), iterate=False)

    for _ in range(binary_search_steps):
        if not bool((~done & (c < C_UPPER_BOUND)).any()):
            break
        lr = torch.full((n,), float(learning_rate), device=dev, dtype=f64)
        x_adv, w = x.clone(), w0.clone()
        evaluate((~done).nonzero()[:, 0], x_adv[~done], iterate=True)
        success = read_success()
        overall = success.clone()
        for _ in range(max_iter):
            keep_best(success, x_adv)
            active = (c < C_UPPER_BOUND) & (lr > 0) & ~done
            if early_stop:
                active &= ~overall
            if not bool(active.any()):
                break
            rows = active.nonzero()[:, 0]
            # ART's _loss_gradient: d/dx [c (Z_y - Z_j)] + 2 (x_adv - x), chained through tanh
            j = z[rows].scatter(1, y[rows, None], float("-inf")).argmax(1)
            xg = x_adv[rows].detach().requires_grad_(True)
            with gradient_context(dev), torch.enable_grad():
                zg = model_output(model, xg, output)
                obj = zg.gather(1, y[rows, None]) - zg.gather(1, j[:, None])
                (g,) = torch.autograd.grad(obj.sum(), xg)
            counter.n_grads += int(rows.numel())
            with torch.no_grad():
                g = (g * c[rows, None, None]).to(x.dtype) + 2 * (x_adv[rows] - x[rows])
                pert = torch.zeros_like(x)  # the tanh-space descent direction of the active rows
                pert[rows] = -(g * (hi - lo) * (1 - torch.tanh(w[rows]).square()) / (2 * TANH_SMOOTHER))
                prev_loss, best_loss = loss.clone(), loss.clone()
                best_lr = torch.zeros_like(lr)
                halving = torch.zeros_like(lr)

                def note_better() -> None:
                    better = loss < best_loss
                    best_lr[better] = lr[better]
                    best_loss[better] = loss[better]

                for _ in range(max_halving):
                    todo = active & (loss >= prev_loss)
                    if not bool(todo.any()):
                        break
                    r = todo.nonzero()[:, 0]
                    trial(r, w, lr, pert)
                    note_better()
                    lr[r] /= 2
                    halving[r] += 1
                lr[active] *= 2
                for _ in range(max_doubling):
                    todo = active & (halving == 1) & (loss <= best_loss)
                    if not bool(todo.any()):
                        break
                    r = todo.nonzero()[:, 0]
                    lr[r] *= 2
                    trial(r, w, lr, pert)
                    note_better()
                lr[halving == 1] /= 2
                moved = active & (best_lr > 0)
                if bool(moved.any()):
                    r = moved.nonzero()[:, 0]
                    w[r] = step(r, w, best_lr, pert).to(x.dtype)
                    x_adv[r] = from_tanh(w[r], clip)
                    evaluate(r, x_adv[r], iterate=True)
                    success = read_success()
                    overall |= success
        keep_best(success, x_adv)
        live = (~done).nonzero()[:, 0]
        done[live] = _advance_constants(c, c_lower, c_double, live, overall[live])
        if early_stop:
            done |= overall
    return best_x


def _cw_l2_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    kw: dict[str, Any] = {"confidence": p["confidence"], "learning_rate": p["learning_rate"],
                          "max_iter": p["max_iter"], "binary_search_steps": p["binary_search_steps"],
                          "initial_const": p["initial_const"], "output": p["output"]}
    if p["optimizer"] == "adam":
        x_adv = cw_batched(ctx, cw_l2_batch, **kw)
    else:
        x_adv = cw_batched(ctx, cw_l2_line_search_batch, max_halving=p["max_halving"],
                         max_doubling=p["max_doubling"], **kw)
    warn_if_inert("cw_l2", ctx, x_adv)
    return x_adv



CW_L2 = register_attack(AttackSpec(
    name="cw_l2", family="carlini", kind="white-box", norm="l2",
    title="Carlini & Wagner L2 (Carlini and Wagner 2017)",
    params=CW_PARAMS + (
        ParamSpec("binary_search_steps", int, 20, low=1, doc="binary search steps on the constant c"),
        ParamSpec("initial_const", float, 0.01, low=0.0, low_open=True, doc="first constant c"),
        ParamSpec("optimizer", str, "line_search", choices=("line_search", "adam"),
                  doc="'line_search': ART's (and the study's) gradient steps with step halving/"
                      "doubling; 'adam': Adam steps (torch backend only)"),
        ParamSpec("max_halving", int, 5, low=1, doc="line search: step halvings per iteration"),
        ParamSpec("max_doubling", int, 5, low=1, doc="line search: step doublings per iteration"),
        OUTPUT_PARAM,
    ),
    # the study's code also sets max_halving = max_doubling = 10 (SPEC.md; ART's default is 5)
    paper_grid=({"max_iter": 10, "learning_rate": 0.01, "binary_search_steps": 20,
                 "initial_const": 0.01, "max_halving": 10, "max_doubling": 10},),
    quick_grid=({"max_iter": 10, "learning_rate": 0.01, "binary_search_steps": 4,
                 "initial_const": 500.0},),
    backends={"art": _cw_l2_art, "torch": _cw_l2_torch},
    default_backend="torch",
    notes="unsuccessful samples are returned unchanged by ART",
))
