"""Carlini & Wagner attacks (study): C&W L2 and C&W L-inf.

Paper: Carlini, Wagner (2017), "Towards evaluating the robustness of neural networks",
https://arxiv.org/abs/1608.04644.

* ``cw_l2``: minimise ``||delta||_2^2 + c * max(Z_y - max_{k!=y} Z_k + confidence, 0)`` in tanh
  space (so the box is never left), ``max_iter`` gradient steps per binary-search step on the
  constant ``c`` (``binary_search_steps`` steps from ``initial_const``). ``optimizer=
  "line_search"`` (default, ART's and so the study's): each step's size is found by halving /
  doubling; ``"adam"`` (torch backend only): Adam steps of size ``learning_rate``, the
  formulation of Carlini and Wagner's own code. On the EmoDB paper model (16 segments, the
  study's settings) the line search gives ART's examples exactly (mean |delta| 0.0095) and
  Adam 3.7x larger ones (0.036), both at adversarial accuracy 0.000 (docs/benchmarks.md).
* ``cw_linf``: per sample, decreasing L-inf bound ``tau`` (x ``decrease_factor``) and, for each
  ``tau``, constants ``initial_const * const_factor^k < largest_const``, ``max_iter`` Adam steps
  each.

Distance: L2 / L-inf. Untargeted (away from ``y``).

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` -> ``x_adv`` like ``x``.

Backend ``"art"``: ART 1.20.1 ``CarliniL2Method`` / ``CarliniLInfMethod`` on
:class:`~seradv.attacks._art.SeradvPyTorchClassifier` (eval-mode gradients, cuDNN off on CUDA).
``output="logits"`` (default) is the attack as designed; ``"probabilities"`` attacks the
softmax output as a Keras model with a softmax head exposes it. ``cw_linf`` handles one sample at a time in ART (no batching): it is by far the
slowest white-box attack (study: 4231 s for EmoDB's 837 test segments on a TITAN V).

What the study's settings do. ART's C&W L2 returns the *clean* sample wherever it found no
adversarial example (``best_x_adv_batch`` starts as a copy of ``x``). With ``initial_const 0.01``,
``lr 0.01`` and 10 iterations per binary-search step nothing flips at first; a failing sample's
constant doubles per step (``0.01 * 2^k``), so the attack only bites once ``c`` is large:

* tiny test model (tests/test_attacks.py, 8 samples): 10 binary-search steps (``c`` <= 5.1)
  changed no sample; the study's 20 steps (``c`` up to ~5,200) took accuracy 1.0 -> 0.125
  (probabilities) / 0.0 (logits); 1 step changes nothing (a test checks it);
* the study's CNN-LSTM trained to saturation on synthetic features (16 samples): the study's
  settings with ``output="probabilities"`` changed **no sample at all** (softmax saturated, its
  gradient ~0), with ``output="logits"`` accuracy went 1.0 -> 0.0 (mean |perturbation| 0.10).

So on a confident model the study's C&W L2 on probabilities can be inert, although the study
reports it reduced EmoDB accuracy to 0.188: seradv therefore defaults to ``output="logits"``,
and logs a warning from :func:`_warn_if_inert` whenever an attack changed nothing.

Measured speed (``bash benchmarks/emodb_attack_speed.sh``, docs/benchmarks.md): the EmoDB
paper-split model, 16 test segments, the study's settings, one thread beside another job.
C&W L2: ART 363.5 s, torch (line search) 61.7 s, the same examples (mean |delta| 0.009538);
with early stop 29.0 s. C&W L-inf: ART 131.3 s (one sample at a time), torch 3.0 s, the same
examples (mean |delta| 0.0711).

Robust accuracy: the torch backends watch every point they evaluate
(``AttackResult.fooled_any``, misclassification w.r.t. the true labels): C&W L2's Adam
iterates and line-search iterates *and trials*, C&W L-inf's Adam iterates; all lie in the clip
box (tanh space), the only bound of these minimum-distance attacks, and their outputs are
computed anyway (no extra pass). The ART backends do not (``fooled_any`` None: robustness is
judged on the returned examples).

Example
-------
>>> run_attack("cw_l2", model, x, y, {}, clip=(-5, 7))  # the study's settings  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from art.attacks.evasion import CarliniL2Method, CarliniLInfMethod

import torch
from torch import nn

from seradv.attacks._art import white_box_classifier
from seradv.attacks.base import (
    AttackContext,
    AttackSpec,
    ParamSpec,
    QueryCounter,
    gradient_context,
    register_attack,
)
from seradv.attacks.deepfool import OUTPUT_PARAM
from seradv.attacks.metrics import map_batches_watched
from seradv.errors import AttackError

logger = logging.getLogger(__name__)

__all__ = ["CW_L2", "CW_LINF", "art_l2_const_update", "cw_l2_batch", "cw_l2_line_search_batch",
           "cw_linf_batch"]


def _warn_if_inert(name: str, ctx: AttackContext, x_adv: np.ndarray) -> None:
    changed = np.abs(x_adv - ctx.x).reshape(ctx.n, -1).max(axis=1) > 0
    if not changed.any():
        logger.warning(
            "%s changed no sample at all (ART returns the clean input where it found no adversarial "
            "example): raise binary_search_steps / max_iter / initial_const / learning_rate",
            name,
        )


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
    _warn_if_inert("cw_l2", ctx, x_adv)
    return x_adv


def _cw_linf_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    clf = white_box_classifier(ctx, output=p["output"])
    atk = CarliniLInfMethod(
        clf, confidence=p["confidence"], targeted=False, learning_rate=p["learning_rate"],
        max_iter=p["max_iter"], decrease_factor=p["decrease_factor"],
        initial_const=p["initial_const"], largest_const=p["largest_const"],
        const_factor=p["const_factor"], batch_size=ctx.batch_size, verbose=False,
    )
    x_adv = atk.generate(ctx.x, y=ctx.y)
    _warn_if_inert("cw_linf", ctx, x_adv)
    return x_adv


# --------------------------------------------------------------------------------------
# Plain torch implementation
# --------------------------------------------------------------------------------------
#: ART's ``_tanh_smoother``: ``arctanh`` of ``(2u - 1) * 0.999999`` so the box edges stay finite.
TANH_SMOOTHER = 0.999999
#: ART's ``_c_upper_bound`` of C&W L2 (samples whose constant reaches it stop).
C_UPPER_BOUND = 10e10
#: ART's C&W L-inf: Adam stops once the objective drops below this (``loss_converged``).
LINF_LOSS_CONVERGED = 0.001
#: ART's C&W L-inf: the tau loop ends once tau is at most this.
LINF_TAU_MIN = 1.0 / 256.0
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


def to_tanh(x: torch.Tensor, clip: tuple[float, float]) -> torch.Tensor:
    """ART's ``original_to_tanh``: ``arctanh((2 (x - lo) / (hi - lo) - 1) * 0.999999)``."""
    lo, hi = clip
    u = (x.clamp(lo, hi) - lo) / (hi - lo)
    return torch.atanh((u * 2 - 1) * TANH_SMOOTHER)


def from_tanh(w: torch.Tensor, clip: tuple[float, float]) -> torch.Tensor:
    """ART's ``tanh_to_original``: ``(tanh(w) + 1) / 2 * (hi - lo) + lo`` (always inside the box)."""
    lo, hi = clip
    return (torch.tanh(w) + 1.0) / 2.0 * (hi - lo) + lo


def margin(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``Z_y - max_{k != y} Z_k`` per row ``[shape=(b,)]`` (ART's ``z_target - z_other``)."""
    z_y = z.gather(1, y[:, None])[:, 0]
    z_other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - z_other


def _outputs(model: nn.Module, x: torch.Tensor, output: str) -> torch.Tensor:
    z = model(x)
    return torch.softmax(z, dim=-1) if output == "probabilities" else z


def _adam_pass(model: nn.Module, wl: torch.Tensor, clip: tuple[float, float], output: str,
               counter: QueryCounter, objective: Any | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One pass of a tanh-space Adam run at ``w`` rows ``wl``: ``(x_adv, Z, grad)``, detached.

    ``objective(x_adv, Z) -> [shape=(m,)]``: forward+backward, ``grad`` = its gradient w.r.t.
    ``wl`` (``n_grads += m``). ``objective=None`` (a run's last iterate): a forward pass
    without a graph, ``grad`` None (``n_queries += m``).
    """
    m = wl.shape[0]
    if objective is None:
        with torch.inference_mode():
            xa = from_tanh(wl, clip)
            z = _outputs(model, xa, output)
        counter.n_queries += m
        return xa.clone(), z.clone(), None  # clones: normal tensors, usable outside inference mode
    wl = wl.detach().requires_grad_(True)
    with torch.enable_grad():
        xa = from_tanh(wl, clip)
        z = _outputs(model, xa, output)
        (grad,) = torch.autograd.grad(objective(xa, z).sum(), wl)
    counter.n_grads += m
    return xa.detach(), z.detach(), grad


class _Adam:
    """Adam on rows of a batch (ART's ``art.optimizers.Adam`` = torch's rule, no weight decay).

    All rows share the step count (they start together); ``rows`` selects the rows updated.
    """

    def __init__(self, w: torch.Tensor, lr: float) -> None:
        self.m = torch.zeros_like(w)
        self.v = torch.zeros_like(w)
        self.lr = lr
        self.t = 0

    def step(self, w: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> None:
        b1, b2 = _ADAM_BETAS
        self.t += 1
        m = self.m[rows].mul_(b1).add_(grad, alpha=1 - b1)
        v = self.v[rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.m[rows], self.v[rows] = m, v
        m_hat = m / (1 - b1**self.t)
        v_hat = v / (1 - b2**self.t)
        w[rows] = w[rows] - self.lr * m_hat / (v_hat.sqrt() + _ADAM_EPS)


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
        ``watch(rows, pred)`` (:class:`~seradv.attacks.metrics.IterateWatch`) gets the
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
        adam = _Adam(w, learning_rate)
        live = torch.arange(rows.numel(), device=dev)  # rows still optimising (early_stop)
        success = torch.zeros(rows.numel(), dtype=torch.bool, device=dev)
        with gradient_context(dev):
            for k in range(max_iter + 1):
                last = k == max_iter
                xl, yl, cl = xr[live], yr[live], cr[live]

                def loss(xa: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
                    l2 = (xa - xl).square().flatten(1).sum(1)
                    return l2 + cl * (margin(z, yl) + confidence).clamp_min(0)

                xa, z, grad = _adam_pass(model, w[live], clip, output, counter, None if last else loss)
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
        ``watch(rows, pred)`` (:class:`~seradv.attacks.metrics.IterateWatch`) gets the
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
            zr = _outputs(model, xa.to(x.dtype), output)
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
                zg = _outputs(model, xg, output)
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
        ``watch(rows, pred)`` (:class:`~seradv.attacks.metrics.IterateWatch`) gets the
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
        adam = _Adam(w, learning_rate)
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

                xa, z, grad = _adam_pass(model, w[live], clip, output, counter, None if last else objective)
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


def _batched(ctx: AttackContext, fn: Any, **kw: Any) -> np.ndarray:
    return map_batches_watched(ctx, lambda xb, yb, watch: fn(
        ctx.model, xb, yb, clip=ctx.clip.as_tuple(), counter=ctx.counter, early_stop=ctx.early_stop,
        watch=watch, **kw))


def _cw_l2_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    kw: dict[str, Any] = {"confidence": p["confidence"], "learning_rate": p["learning_rate"],
                          "max_iter": p["max_iter"], "binary_search_steps": p["binary_search_steps"],
                          "initial_const": p["initial_const"], "output": p["output"]}
    if p["optimizer"] == "adam":
        x_adv = _batched(ctx, cw_l2_batch, **kw)
    else:
        x_adv = _batched(ctx, cw_l2_line_search_batch, max_halving=p["max_halving"],
                         max_doubling=p["max_doubling"], **kw)
    _warn_if_inert("cw_l2", ctx, x_adv)
    return x_adv


def _cw_linf_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    x_adv = _batched(
        ctx, cw_linf_batch, confidence=p["confidence"], learning_rate=p["learning_rate"],
        max_iter=p["max_iter"], decrease_factor=p["decrease_factor"],
        initial_const=p["initial_const"], largest_const=p["largest_const"],
        const_factor=p["const_factor"], output=p["output"],
    )
    _warn_if_inert("cw_linf", ctx, x_adv)
    return x_adv


_COMMON = (
    ParamSpec("confidence", float, 0.0, low=0.0, doc="required logit margin (kappa)"),
    ParamSpec("learning_rate", float, 0.01, low=0.0, low_open=True, doc="initial step size"),
    ParamSpec("max_iter", int, 10, low=1, doc="optimisation steps per constant"),
)

CW_L2 = register_attack(AttackSpec(
    name="cw_l2", family="carlini", kind="white-box", norm="l2",
    title="Carlini & Wagner L2 (Carlini and Wagner 2017)",
    params=_COMMON + (
        ParamSpec("binary_search_steps", int, 20, low=1, doc="binary search steps on the constant c"),
        ParamSpec("initial_const", float, 0.01, low=0.0, low_open=True, doc="first constant c"),
        ParamSpec("optimizer", str, "line_search", choices=("line_search", "adam"),
                  doc="'line_search': ART's (and the study's) gradient steps with step halving/"
                      "doubling; 'adam': Adam steps (torch backend only)"),
        ParamSpec("max_halving", int, 5, low=1, doc="line search: step halvings per iteration"),
        ParamSpec("max_doubling", int, 5, low=1, doc="line search: step doublings per iteration"),
        OUTPUT_PARAM,
    ),
    paper_grid=({"max_iter": 10, "learning_rate": 0.01, "binary_search_steps": 20,
                 "initial_const": 0.01},),
    quick_grid=({"max_iter": 10, "learning_rate": 0.01, "binary_search_steps": 4,
                 "initial_const": 500.0},),
    backends={"art": _cw_l2_art, "torch": _cw_l2_torch},
    default_backend="torch",
    notes="unsuccessful samples are returned unchanged by ART",
))

CW_LINF = register_attack(AttackSpec(
    name="cw_linf", family="carlini", kind="white-box", norm="linf",
    title="Carlini & Wagner L-inf (Carlini and Wagner 2017)",
    params=_COMMON + (
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
