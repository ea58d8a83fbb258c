"""Waveform PGD (white-box): L-inf budget in dBFS, and an SNR budget (Armory's SNR-PGD).

Papers:

* PGD: Madry et al. (2018), "Towards deep learning models resistant to adversarial attacks",
  https://arxiv.org/abs/1706.06083. Steps on the cross-entropy input gradient, each followed by
  projection on the budget ball around ``x`` and clipping to the box.
* SNR-PGD: the L2 ball scaled to each segment's energy, as in Armory's audio scenarios
  (TwoSix Labs, https://github.com/twosixlabs/armory, ``snr_pgd``):
  ``||delta||_2 <= ||x||_2 * 10 ** (-snr_db / 20)``, i.e. ``SNR = 20 log10(||x|| / ||delta||) >= snr_db``.

Threat model: white-box (cross-entropy gradient with respect to the waveform through
:class:`~seradv.frontend.FrontEnd` and the model, in eval mode; cuDNN off around the backward
pass on CUDA, :func:`~seradv.attacks.context.gradient_context`), untargeted (away from ``y``).
Distance: L-inf on samples, ``max |delta| <= 10 ** (eps_dbfs / 20)`` (``pgd_linf_waveform``;
full scale is 1.0), or the per-segment SNR ball above (``pgd_snr_waveform``), intersected with
the sample box ``[-1, 1]`` (both up to float32 rounding of ``x + delta``, ~1e-8, far below one
16-bit step; the SNR radius is shrunk by 1e-6 relative so that the measured SNR is never below
the budget). Samples the model already gets wrong are attacked like the others
(towards any class but ``y``) and count as successes, as in the feature-space attacks, whose
robust accuracy is the accuracy on ``x_adv`` against the true labels.

Parameters:

eps_dbfs : float, default -50.0 (``pgd_linf_waveform``)
    L-inf budget in dB relative to full scale (``eps = 10 ** (eps_dbfs / 20)``; -60 / -50 / -40
    dBFS are 1e-3 / 3.2e-3 / 1e-2, i.e. 33 / 104 / 328 16-bit steps).
snr_db : float, default 30.0 (``pgd_snr_waveform``)
    Minimum signal-to-noise ratio of each segment (40 / 30 / 20 dB in the standard grid).
step_frac : float, default 0.1
    Step size as a fraction of the budget (L-inf: ``step_frac * eps`` per sample and sign step;
    SNR: an L2 step of ``step_frac * ||x|| * 10 ** (-snr_db / 20)`` along the L2-normalised gradient).
max_iter : int, default 50
    Iterations.
random_start : bool, default True
    Start at a uniform point of the L-inf cube, or of the L2 ball, around ``x`` (seeded).

Shapes: ``x`` ``[shape=(n, 48000)]`` float32 in ``[-1, 1]``, ``y`` ``[shape=(n,)]`` int64 ->
``x_adv`` ``[shape=(n, 48000)]`` float32 in ``[-1, 1]`` and ``success`` ``[shape=(n,)]`` bool.

Backends: plain batched torch only (no ART counterpart on this input). The returned waveform of
a sample is the last iterate that fooled the model (each iterate is checked on the next step's
forward pass, the last one by one extra forward pass), else the last iterate. Losses in float32.
Each step's logits and gradient come from the ``loss_gradient`` hook (:data:`LossGradient`;
default :func:`cross_entropy_gradient`, one forward/backward pass), so that an adaptive attack
on a defended model (EOT's gradient averaged over draws of a random transformation,
:mod:`seradv.attacks.waveform.adaptive`) runs this same loop.

Example:

>>> res = pgd_snr_waveform(WaveformModel(FrontEnd.from_run(run), model), x, y, snr_db=30)  # doctest: +SKIP
>>> res.x_adv.shape, res.success.mean()  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from seradv.attacks.context import gradient_context
from seradv.errors import ParameterError

__all__ = ["LossGradient", "WaveformAttackResult", "cross_entropy_gradient", "dbfs_to_amplitude", "pgd_linf_waveform",
           "pgd_snr_waveform"]


@dataclass
class WaveformAttackResult:
    """Adversarial waveforms ``x_adv [shape=(n, n_samples)]`` float32 in ``[-1, 1]`` and
    ``success [shape=(n,)]`` bool (the model's argmax on ``x_adv`` differs from ``y``)."""

    x_adv: np.ndarray
    success: np.ndarray


def dbfs_to_amplitude(dbfs: float) -> float:
    """``10 ** (dbfs / 20)``: an amplitude relative to full scale (1.0) of a level in dBFS."""
    if not math.isfinite(dbfs) or dbfs > 0:
        raise ParameterError(f"eps_dbfs={dbfs} must be a finite level <= 0 dBFS")
    return float(10.0 ** (dbfs / 20.0))


def _check(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, step_frac: float, max_iter: int,
           batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    xt = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, np.float32))
    xt = xt.to(torch.float32).cpu()
    yt = (y.detach() if isinstance(y, torch.Tensor) else torch.from_numpy(np.array(y, np.int64))).to(torch.int64).cpu()
    if xt.ndim != 2 or xt.shape[0] < 1:
        raise ParameterError(f"waveforms must have shape (n, n_samples) with n >= 1, got {tuple(xt.shape)}")
    if yt.shape != (xt.shape[0],):
        raise ParameterError(f"labels of shape {tuple(yt.shape)} do not fit {xt.shape[0]} waveforms")
    if not torch.isfinite(xt).all() or xt.abs().max() > 1.0:
        raise ParameterError("waveforms must be finite and inside [-1, 1]")
    if not (0.0 < step_frac <= 1.0):
        raise ParameterError(f"step_frac={step_frac} must be in (0, 1]")
    if int(max_iter) < 1 or int(batch_size) < 1:
        raise ParameterError(f"max_iter={max_iter} and batch_size={batch_size} must be integers >= 1")
    return xt, yt


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _project_l2(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    nrm = delta.norm(dim=1, keepdim=True)
    factor = torch.where(nrm > radius, radius / nrm.clamp_min(1e-30), torch.ones_like(nrm))
    return delta * factor


def _l2_direction(grad: torch.Tensor) -> torch.Tensor:
    nrm = grad.norm(dim=1, keepdim=True)
    return torch.where(nrm > 0, grad / nrm.clamp_min(1e-30), torch.zeros_like(grad))


LossGradient = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``loss_gradient(model, x, y) -> (logits [shape=(b, n_classes)], grad [shape=(b, n_samples)])``: the
logits that decide whether an iterate fools the model, and the gradient PGD steps along."""


def cross_entropy_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD's default :data:`LossGradient`: one forward pass and the gradient of the summed cross-entropy.

    Parameters
    ----------
    model : nn.Module, waveforms ``[shape=(b, n_samples)]`` -> logits
    x : Tensor ``[shape=(b, n_samples)]`` (detached here)
    y : Tensor ``[shape=(b,)]`` int64

    Returns
    -------
    (float32 logits ``[shape=(b, n_classes)]`` detached, ``d sum CE / d x [shape=(b, n_samples)]``)
    """
    xa = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xa).float()
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xa)
    return logits.detach(), grad


def _pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, radius: torch.Tensor,
         step: torch.Tensor, max_iter: int, start: torch.Tensor | None,
         loss_gradient: LossGradient = cross_entropy_gradient) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of PGD: ``radius``, ``step [shape=(b, 1)]`` (per-sample budgets)."""

    def project(x_new: torch.Tensor) -> torch.Tensor:
        d = x_new - x
        d = d.clamp(-radius, radius) if norm == "linf" else _project_l2(d, radius)
        return (x + d).clamp(-1.0, 1.0)  # clipping to the box only shrinks |delta| coordinate-wise

    x_adv = project(x + start) if start is not None else x.clone()
    best = x_adv.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with gradient_context(x.device):
        for _ in range(max_iter):
            logits, grad = loss_gradient(model, x_adv, y)
            with torch.no_grad():
                hit = logits.argmax(1) != y  # this iterate fools the model
                best[hit] = x_adv[hit]
                fooled |= hit
                grad = torch.nan_to_num(grad.float(), nan=0.0)
                direction = grad.sign() if norm == "linf" else _l2_direction(grad)
                x_adv = project(x_adv + step * direction)
    with torch.inference_mode():
        hit = model(x_adv).float().argmax(1) != y
    best[hit] = x_adv[hit]
    best[~fooled & ~hit] = x_adv[~fooled & ~hit]
    return best.detach(), fooled | hit


def _run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, radius: torch.Tensor,
         step_frac: float, max_iter: int, random_start: bool, seed: int, batch_size: int,
         loss_gradient: LossGradient | None = None) -> WaveformAttackResult:
    device = _model_device(model)
    gen = torch.Generator().manual_seed(int(seed))
    was_training = model.training
    model.eval()
    outs, oks = [], []
    try:
        for i in range(0, x.shape[0], batch_size):
            xb, yb, rb = x[i:i + batch_size], y[i:i + batch_size], radius[i:i + batch_size, None]
            start = None
            if random_start:  # drawn on the CPU from the seeded generator: same starts on any device
                if norm == "linf":
                    start = (torch.rand(xb.shape, generator=gen) * 2.0 - 1.0) * rb
                else:
                    g = torch.randn(xb.shape, generator=gen)
                    u = torch.rand((xb.shape[0], 1), generator=gen) ** (1.0 / xb.shape[1])
                    start = _l2_direction(g) * u * rb
                start = start.to(device)
            adv, ok = _pgd(model, xb.to(device), yb.to(device), norm=norm, radius=rb.to(device),
                           step=(step_frac * rb).to(device), max_iter=int(max_iter), start=start,
                           loss_gradient=loss_gradient or cross_entropy_gradient)
            outs.append(adv.cpu())
            oks.append(ok.cpu())
    finally:
        model.train(was_training)
    x_adv = torch.cat(outs).clamp(-1.0, 1.0).numpy().astype(np.float32)
    return WaveformAttackResult(x_adv=x_adv, success=torch.cat(oks).numpy())


def pgd_linf_waveform(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *,
                      eps_dbfs: float = -50.0, step_frac: float = 0.1, max_iter: int = 50,
                      random_start: bool = True, seed: int = 0, batch_size: int = 16,
                      loss_gradient: LossGradient | None = None) -> WaveformAttackResult:
    """PGD in the L-inf ball ``max |delta| <= 10 ** (eps_dbfs / 20)`` around each waveform, in ``[-1, 1]``.

    Parameters
    ----------
    model : nn.Module
        A :class:`~seradv.frontend.WaveformModel` (waveforms ``[shape=(b, n_samples)]`` -> logits);
        its device is used, it runs in eval mode and its train flag is restored.
    x : array or Tensor ``[shape=(n, n_samples)]`` float in ``[-1, 1]``
    y : array or Tensor ``[shape=(n,)]`` int, the true labels
    eps_dbfs, step_frac, max_iter, random_start : see the module docstring
    seed : int
        Seed of the random starts (a CPU generator, so the same on every device).
    batch_size : int
        Waveforms per forward/backward pass.
    loss_gradient : LossGradient or None
        The hook that gives each step's logits and gradient (default :func:`cross_entropy_gradient`;
        :mod:`seradv.attacks.waveform.adaptive` passes EOT's averaged gradient).

    Returns
    -------
    WaveformAttackResult: ``x_adv [shape=(n, n_samples)]`` float32, ``success [shape=(n,)]`` bool.
    """
    eps = dbfs_to_amplitude(eps_dbfs)
    xt, yt = _check(x, y, step_frac, max_iter, batch_size)
    radius = torch.full((xt.shape[0],), eps, dtype=torch.float32)
    return _run(model, xt, yt, norm="linf", radius=radius, step_frac=step_frac, max_iter=max_iter,
                random_start=random_start, seed=seed, batch_size=int(batch_size), loss_gradient=loss_gradient)


def pgd_snr_waveform(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *,
                     snr_db: float = 30.0, step_frac: float = 0.1, max_iter: int = 50,
                     random_start: bool = True, seed: int = 0, batch_size: int = 16,
                     loss_gradient: LossGradient | None = None) -> WaveformAttackResult:
    """PGD in the per-segment L2 ball ``||delta||_2 <= ||x||_2 * 10 ** (-snr_db / 20)``, in ``[-1, 1]``.

    Parameters
    ----------
    model : nn.Module
        A :class:`~seradv.frontend.WaveformModel`; its device is used, eval mode, flag restored.
    x : array or Tensor ``[shape=(n, n_samples)]`` float in ``[-1, 1]``, not all-silent
    y : array or Tensor ``[shape=(n,)]`` int, the true labels
    snr_db, step_frac, max_iter, random_start : see the module docstring
    seed : int
        Seed of the random starts (CPU generator).
    batch_size : int
    loss_gradient : LossGradient or None
        As :func:`pgd_linf_waveform`.

    Returns
    -------
    WaveformAttackResult: ``x_adv [shape=(n, n_samples)]`` float32, ``success [shape=(n,)]`` bool.
    """
    if not math.isfinite(snr_db):
        raise ParameterError(f"snr_db={snr_db} must be finite")
    xt, yt = _check(x, y, step_frac, max_iter, batch_size)
    energy = xt.double().norm(dim=1)
    if (energy == 0).any():
        raise ParameterError("an all-silent waveform has no SNR budget (its energy is 0)")
    # float32 rounding of the projected delta could overshoot the ball by ~1e-7 relative: shrink by 1e-6
    radius = (energy * 10.0 ** (-snr_db / 20.0) * (1.0 - 1e-6)).to(torch.float32)
    return _run(model, xt, yt, norm="l2", radius=radius, step_frac=step_frac, max_iter=max_iter,
                random_start=random_start, seed=seed, batch_size=int(batch_size), loss_gradient=loss_gradient)
