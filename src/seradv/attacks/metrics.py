"""Per-sample perturbation measures and batched predictions.

The study's perturbation metric is the mean absolute perturbation over all cells,
``mean(|x_adv - x|)`` (SPEC.md, "Metrics"); seradv adds L2, L-inf and L0 per sample.

All functions take arrays ``[shape=(n, 261, 128)]`` (any per-sample shape works) and return one
value per sample ``[shape=(n,)]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from seradv.errors import ParameterError

if TYPE_CHECKING:  # base imports nothing from here; avoid the cycle at run time anyway
    from seradv.attacks.base import AttackContext

__all__ = [
    "L0_TOL",
    "IterateWatch",
    "Predictions",
    "accuracy",
    "l0_norm",
    "l2_norm",
    "linf_norm",
    "map_batches_watched",
    "mean_abs_perturbation",
    "perturbation_norms",
    "predict",
    "predict_proba",
]

#: A cell counts as changed for L0 when ``|x_adv - x| > L0_TOL``.
L0_TOL = 1e-7


def _delta(x: np.ndarray | torch.Tensor, x_adv: np.ndarray | torch.Tensor) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    b = x_adv.detach().cpu().numpy() if isinstance(x_adv, torch.Tensor) else np.asarray(x_adv)
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
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    dev = torch.device(device)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    outs = []
    try:
        with torch.inference_mode():
            for i in range(0, arr.shape[0], batch_size):
                logits = model(torch.from_numpy(arr[i : i + batch_size]).to(dev))
                outs.append(torch.softmax(logits.float(), dim=-1).cpu())
    finally:
        for m, flag in flags:
            m.training = flag
    if not outs:
        raise ParameterError("x is empty (n=0)")
    return torch.cat(outs).numpy()


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
    yy = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    labels = predict(model, x, batch_size=batch_size, device=device).labels
    if yy.shape != labels.shape:
        raise ParameterError(f"y has shape {yy.shape}, expected {labels.shape}")
    return float((labels == yy).mean())


# --------------------------------------------------------------------------------------
# Watching the iterates of an attack (robust accuracy: the first fooled iterate counts)
# --------------------------------------------------------------------------------------
class IterateWatch:
    """Which samples some iterate of an attack fooled (``argmax != y``, the *true* labels).

    Attacks call the watch with the predictions they already computed for an iterate inside
    their threat model: ``watch(rows, pred)``, ``rows`` positions in the watched block (a long
    tensor, or ``None`` for all of it), ``pred`` the predicted classes of those rows. The
    flags are kept on the device (no synchronisation per step) and handed to
    :meth:`AttackContext.mark_fooled <seradv.attacks.base.AttackContext.mark_fooled>` once,
    by :meth:`flush`.

    Parameters
    ----------
    ctx : AttackContext
    start : int
        Position in ``ctx.x`` of the block's first row.
    y : Tensor ``[shape=(b,)]`` int64
        True labels of the block's rows, on the attack's device.
    """

    def __init__(self, ctx: AttackContext, start: int, y: torch.Tensor) -> None:
        self.ctx, self.start, self.y = ctx, int(start), y
        self.fooled = torch.zeros(y.shape[0], dtype=torch.bool, device=y.device)

    def __call__(self, rows: torch.Tensor | None, pred: torch.Tensor) -> None:
        if rows is None:
            self.fooled |= pred != self.y
        else:
            self.fooled[rows] |= pred != self.y[rows]

    def mark(self, rows: torch.Tensor | None, fooled: torch.Tensor) -> None:
        """Like calling the watch, with the misclassification of the rows already known."""
        if rows is None:
            self.fooled |= fooled
        else:
            self.fooled[rows] |= fooled

    def flush(self) -> None:
        """Hand the flags to the context (``ctx.mark_fooled``)."""
        self.ctx.mark_fooled(slice(self.start, self.start + self.y.shape[0]), self.fooled)


def map_batches_watched(
    ctx: AttackContext, fn: Callable[[torch.Tensor, torch.Tensor, IterateWatch], torch.Tensor]
) -> np.ndarray:
    """:meth:`AttackContext.map_batches <seradv.attacks.base.AttackContext.map_batches>` with an
    :class:`IterateWatch` per batch: ``fn(x_batch, y_batch, watch) -> x_adv_batch``; each
    batch's flags go to ``ctx.fooled_any``."""
    out = np.empty_like(ctx.x)
    for i in range(0, ctx.n, ctx.batch_size):
        xb = torch.from_numpy(ctx.x[i : i + ctx.batch_size]).to(ctx.device)
        yb = torch.from_numpy(ctx.y[i : i + ctx.batch_size]).to(ctx.device)
        watch = IterateWatch(ctx, i, yb)
        out[i : i + xb.shape[0]] = fn(xb, yb, watch).detach().cpu().numpy()
        watch.flush()
    return out
