"""Per-sample perturbation measures and batched predictions (softmax, top class, accuracy).

The study's perturbation metric is the mean absolute perturbation over all cells,
``mean(|x_adv - x|)`` (SPEC.md, "Metrics"); seradv adds L2, L-inf and L0 per sample.

All functions take arrays ``[shape=(n, 261, 128)]`` (any per-sample shape works) and return one
value per sample ``[shape=(n,)]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from seradv.attacks._torch import batched_outputs
from seradv.attacks.threat import as_numpy
from seradv.errors import ParameterError

__all__ = [
    "L0_TOL",
    "Predictions",
    "accuracy",
    "l0_norm",
    "l2_norm",
    "linf_norm",
    "mean_abs_perturbation",
    "perturbation_norms",
    "predict",
    "predict_proba",
]

#: A cell counts as changed for L0 when ``|x_adv - x| > L0_TOL``.
L0_TOL = 1e-7


def _delta(x: np.ndarray | torch.Tensor, x_adv: np.ndarray | torch.Tensor) -> np.ndarray:
    a, b = as_numpy(x), as_numpy(x_adv)
    if a.shape != b.shape:
        raise ParameterError(f"x {a.shape} and x_adv {b.shape} must have the same shape")
    if a.ndim < 2:
        raise ParameterError(f"x must be a batch (n, ...), got shape {a.shape}")
    return (b.astype(np.float64) - a.astype(np.float64)).reshape(a.shape[0], -1)


def mean_abs_perturbation(x: np.ndarray | torch.Tensor, x_adv: np.ndarray | torch.Tensor) -> np.ndarray:
    """The study's metric: ``mean(|x_adv - x|)`` over all cells of each sample ``[shape=(n,)]``."""
    return np.abs(_delta(x, x_adv)).mean(axis=1)


def l2_norm(x: np.ndarray | torch.Tensor, x_adv: np.ndarray | torch.Tensor) -> np.ndarray:
    """``||x_adv - x||_2`` per sample ``[shape=(n,)]``."""
    return np.sqrt((_delta(x, x_adv) ** 2).sum(axis=1))


def linf_norm(x: np.ndarray | torch.Tensor, x_adv: np.ndarray | torch.Tensor) -> np.ndarray:
    """``max |x_adv - x|`` per sample ``[shape=(n,)]``."""
    return np.abs(_delta(x, x_adv)).max(axis=1)


def l0_norm(
    x: np.ndarray | torch.Tensor, x_adv: np.ndarray | torch.Tensor, *, tol: float = L0_TOL
) -> np.ndarray:
    """Number of changed cells (``|x_adv - x| > tol``) per sample ``[shape=(n,)]``, int64."""
    if tol < 0:
        raise ParameterError(f"tol={tol!r} must be >= 0")
    return (np.abs(_delta(x, x_adv)) > tol).sum(axis=1).astype(np.int64)


def perturbation_norms(
    x: np.ndarray | torch.Tensor, x_adv: np.ndarray | torch.Tensor, *, tol: float = L0_TOL
) -> dict[str, np.ndarray]:
    """All measures at once: ``{"mean_abs", "l2", "linf", "l0"}``, each ``[shape=(n,)]``."""
    d = _delta(x, x_adv)
    ad = np.abs(d)
    return {
        "mean_abs": ad.mean(axis=1),
        "l2": np.sqrt((d**2).sum(axis=1)),
        "linf": ad.max(axis=1),
        "l0": (ad > tol).sum(axis=1).astype(np.int64),
    }


@dataclass
class Predictions:
    """Batched model outputs.

    Attributes
    ----------
    labels : np.ndarray ``[shape=(n,)]`` int64
        Top class.
    confidence : np.ndarray ``[shape=(n,)]`` float32
        Softmax probability of the top class (the study's "confidence").
    proba : np.ndarray ``[shape=(n, n_classes)]`` float32
    """

    labels: np.ndarray
    confidence: np.ndarray
    proba: np.ndarray


def predict_proba(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Softmax probabilities ``[shape=(n, n_classes)]`` float32, in batches, eval mode, inference mode.

    The model's train/eval flags are restored afterwards.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batch_size={batch_size!r} must be an integer >= 1")
    arr = np.ascontiguousarray(as_numpy(x), dtype=np.float32)
    dev = torch.device(device)
    if arr.shape[0] == 0:
        raise ParameterError("x is empty (n=0)")
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        proba = batched_outputs(model, arr, dev, batch_size, lambda z: torch.softmax(z.float(), dim=-1))
    finally:
        for m, flag in flags:
            m.training = flag
    return proba.numpy()


def predict(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> Predictions:
    """Top class, its softmax confidence and all probabilities, see :class:`Predictions`."""
    proba = predict_proba(model, x, batch_size=batch_size, device=device)
    labels = proba.argmax(axis=1).astype(np.int64)
    return Predictions(labels=labels, confidence=proba.max(axis=1), proba=proba)


def accuracy(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> float:
    """Fraction of samples whose top class equals ``y`` ``[shape=(n,)]``."""
    yy = as_numpy(y)
    labels = predict(model, x, batch_size=batch_size, device=device).labels
    if yy.shape != labels.shape:
        raise ParameterError(f"y has shape {yy.shape}, expected {labels.shape}")
    return float((labels == yy).mean())
