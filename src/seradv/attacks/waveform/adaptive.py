"""Attacks on a transformation-defended model: the adaptive one (BPDA / EOT) and the non-adaptive one.

A defence is only as strong as the best attack that knows it (Athalye et al. 2018, "Obfuscated
gradients give a false sense of security", https://arxiv.org/abs/1802.00420; Tramer et al.
2020, "On adaptive attacks to adversarial example defenses", https://arxiv.org/abs/2002.08347).
Two attacks on a :class:`~seradv.defences.transforms.DefendedModel` (``transform -> WaveformModel``):

* **non-adaptive** (:func:`non_adaptive_attack`): waveform PGD on the *undefended*
  ``WaveformModel``; its adversarial waveform is then passed through the defence. This is what a
  defence usually reports and what makes a transformation look strong.
* **adaptive** (:func:`adaptive_attack`): the same waveform PGD loop
  (:mod:`seradv.attacks.waveform.pgd`) on the defended model's attacker view: through the exact
  torch version of a differentiable transformation, through BPDA (real transformation forward,
  identity backward) for the others, and, for a random transformation, with EOT: every step's
  gradient is the mean of the cross-entropy gradients over ``eot_samples`` draws of the
  randomness (:func:`eot_gradient`), and the iterate's fooling check uses the mean logits.

BPDA's identity backward is an approximation: on the tests' toy model, BPDA-PGD through 6-bit
quantization (SNR 23 dB, 10 steps) left 12 of 24 tones correct where the non-adaptive attack
left 10. An adaptive evaluation therefore reports the worst case of both attacks per segment
(as ``benchmarks/transforms.py`` does), never the adaptive attack alone.

Both return the attack's waveforms; the defended accuracy is then measured on the *real*
transformation (:meth:`~seradv.defences.transforms.DefendedModel.predict`, :func:`defended_accuracy`).
Budgets and parameters are those of :func:`~seradv.attacks.waveform.pgd.pgd_snr_waveform` /
:func:`~seradv.attacks.waveform.pgd.pgd_linf_waveform` (``norm="snr"`` / ``"linf"``).

Shapes: waveforms ``[shape=(n, n_samples)]`` float in ``[-1, 1]``, labels ``[shape=(n,)]`` int.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from seradv.attacks.waveform.pgd import (
    LossGradient,
    WaveformAttackResult,
    cross_entropy_gradient,
    pgd_linf_waveform,
    pgd_snr_waveform,
)
from seradv.defences.transforms import DefendedModel
from seradv.errors import ParameterError, check_int

__all__ = ["DEFAULT_EOT_SAMPLES", "adaptive_attack", "defended_accuracy", "eot_gradient", "non_adaptive_attack"]

DEFAULT_EOT_SAMPLES = 8
"""EOT draws per step for a random transformation when none is given."""

_PGD = {"snr": pgd_snr_waveform, "linf": pgd_linf_waveform}


def eot_gradient(n_samples: int) -> LossGradient:
    """A :data:`~seradv.attacks.waveform.pgd.LossGradient` averaging ``n_samples`` forward/backward passes.

    Each pass is a new draw of the model's randomness (a :class:`DefendedModel` draws on every
    forward); returns the mean logits ``[shape=(b, n_classes)]`` and the mean gradient
    ``[shape=(b, n_samples)]`` of the summed cross-entropy (EOT, Athalye et al. 2018).
    """
    n = check_int("eot_samples", n_samples, 1)

    def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, grad = cross_entropy_gradient(model, x, y)
        for _ in range(n - 1):
            lg, g = cross_entropy_gradient(model, x, y)
            logits, grad = logits + lg, grad + g
        return logits / n, grad / n

    return loss_gradient


def _attack(norm: str) -> Any:
    if norm not in _PGD:
        raise ParameterError(f"norm={norm!r} must be one of {', '.join(_PGD)}")
    return _PGD[norm]


def non_adaptive_attack(defended: DefendedModel, x: np.ndarray, y: np.ndarray, *, norm: str = "snr",
                        **pgd: Any) -> WaveformAttackResult:
    """Waveform PGD on the undefended model ``defended.model`` (the defence is applied only afterwards).

    ``pgd``: the keyword parameters of the PGD function of ``norm`` (``snr_db`` or ``eps_dbfs``,
    ``step_frac``, ``max_iter``, ``seed``, ...). ``success`` is the undefended model's verdict.
    """
    return _attack(norm)(defended.model, x, y, **pgd)


def adaptive_attack(defended: DefendedModel, x: np.ndarray, y: np.ndarray, *, norm: str = "snr",
                    eot_samples: int | None = None, **pgd: Any) -> WaveformAttackResult:
    """Waveform PGD through the defence: exact gradient or BPDA, and EOT for a random transformation.

    Parameters
    ----------
    defended : DefendedModel
    x, y : waveforms ``[shape=(n, n_samples)]`` and labels ``[shape=(n,)]``
    norm : {"snr", "linf"}
    eot_samples : int or None
        Gradient draws per step; ``None``: :data:`DEFAULT_EOT_SAMPLES` for a random
        transformation, 1 for a deterministic one.
    **pgd : the PGD function's keyword parameters

    Returns
    -------
    WaveformAttackResult; ``success`` is the attacker's view (mean logits over the EOT draws in
    the loop, one draw on the last iterate), not the deployed defence's: use :func:`defended_accuracy`.
    """
    if eot_samples is None:
        eot_samples = DEFAULT_EOT_SAMPLES if defended.transform.random else 1
    return _attack(norm)(defended, x, y, loss_gradient=eot_gradient(eot_samples), **pgd)


def defended_accuracy(defended: DefendedModel, x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> float:
    """Accuracy of the deployed defence (real transformation, then the model) on ``x`` against ``y``."""
    y = np.asarray(y, np.int64)
    pred = defended.predict(np.asarray(x), seed=seed)
    if pred.shape != y.shape:
        raise ParameterError(f"labels of shape {y.shape} do not fit {pred.shape[0]} waveforms")
    return float(np.mean(pred == y))
