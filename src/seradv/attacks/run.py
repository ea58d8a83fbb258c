"""The one call that runs any registered attack: input checks, then the run in a held state.

:func:`run_attack` validates the parameters, the arguments and the input *before* touching the
model (no model call, no estimator construction), then runs the attack's runner with the
model frozen (:func:`~seradv.attacks.context.frozen_weights`, the fast-path state), seeded
RNGs and one BLAS thread, and leaves the caller's state as found
(:mod:`seradv.attacks.context`)::

    from seradv.attacks import run_attack
    res = run_attack("fgsm", model, x, y, {"eps": 0.25}, clip=(-5, 7))
    res.x_adv, res.seconds, res.n_grads
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from seradv.attacks._torch import predict_labels
from seradv.attacks.context import (
    AttackContext,
    AttackResult,
    frozen_weights,
    kept_memory,
    numpy_blas_single_thread,
    preserve_model_state,
    seeded,
)
from seradv.attacks.spec import get_attack
from seradv.attacks.threat import CLIP_TOL, ThreatModel, as_numpy
from seradv.errors import AttackError, ParameterError
from seradv.precision import check_backend, precision_dtype, with_precision

logger = logging.getLogger(__name__)

__all__ = ["run_attack"]


def run_attack(
    name: str,
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor | Sequence[int] | None,
    params: Mapping[str, Any] | None = None,
    *,
    clip: ThreatModel | tuple[float, float],
    backend: str | None = None,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    early_stop: bool = False,
    precision: str = "fp32",
) -> AttackResult:
    """Run the registered attack ``name`` on ``model``.

    Parameters
    ----------
    name : str
        Registered attack (see :func:`list_attacks`).
    model : nn.Module
        Maps features ``[shape=(batch, 261, 128)]`` to logits ``[shape=(batch, n_classes)]``.
        It is moved to ``device`` and put in eval mode for the run; its flags, device and empty
        ``.grad`` are restored afterwards.
    x : array ``[shape=(n, 261, 128)]``, float
        Standardized log-Mel features inside ``clip``.
    y : int array ``[shape=(n,)]`` or None
        True labels; ``None`` uses the model's predictions. (Targeted JSMA draws its targets
        at random among the classes other than ``y``.)
    params : dict or None
        Attack parameters; missing ones take the schema's defaults (``get_attack(name)``).
    clip : ThreatModel or (float, float)
        Clip values ``(clip_min, clip_max)`` of the corpus, e.g. ``(-5, 7)`` for EmoDB.
    backend : str or None
        ``"art"`` (ART 1.20.1, the study's toolbox; all attacks) or ``"torch"`` (seradv's fast
        batched implementations); ``None`` takes the attack's ``default_backend``.
    batch_size : int
        Samples per forward/backward pass.
    seed : int
        Seed of every random choice of the attack (random starts, JSMA targets, Boundary /
        HopSkipJump / Square / Pixel sampling).
    device : str or torch.device
        ``"cpu"`` or ``"cuda[:i]"``.
    early_stop : bool
        Opt-in AutoAttack-style early stopping of iterative attacks on samples that are already
        misclassified (only backends that support it; others ignore it). Smaller perturbations,
        same or nearly the same robust accuracy; recorded in the result.
    precision : str
        ``"fp32"`` (default, the study's), ``"bf16"`` or ``"fp16"``: the model's forward passes
        run under autocast, everything after them in float32 (:mod:`seradv.precision`); torch
        backends only (an ART backend with another precision is a :class:`ParameterError`).

    Returns
    -------
    AttackResult
        ``x_adv`` float32 ``[shape=(n, 261, 128)]`` inside ``clip``, timing and counters.

    Raises
    ------
    AttackError
        Unknown attack name (lists the known ones) or a model that breaks the contract.
    ParameterError
        Bad parameter / argument, raised before any model call.
    """
    # 1. everything that can be checked without the model
    spec = get_attack(name)
    resolved = spec.validate(params)
    if backend is None:
        backend = spec.default_backend
    if not isinstance(backend, str) or backend not in spec.backends:
        raise ParameterError(
            f"{spec.name}: backend={backend!r} is not available; choose one of {', '.join(spec.backends)}"
        )
    check_backend(precision, backend, spec.name)
    if spec.input != "features":
        raise AttackError(f"{spec.name} attacks the {spec.input}, not log-Mel features: run it through the grid "
                          f"(`seradv attack RUN --attacks {spec.name}`, seradv.grid.run.run_grid)")
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    threat = clip if isinstance(clip, ThreatModel) else _threat_from_tuple(clip)
    if not isinstance(model, nn.Module):
        raise ParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dev = _check_device(device)
    precision_dtype(precision, dev)  # e.g. fp16 on the CPU: an error before any model call
    x_np = _check_x(x, threat)
    y_np = _check_y(y, x_np.shape[0])
    if spec.check_input is not None:
        spec.check_input(resolved, tuple(x_np.shape[1:]))
    runner = spec.backends[backend]

    # 2. the work, with the weights frozen: the fast-path state (context.frozen_weights)
    # ART's PyTorchClassifier puts the model on the *current* CUDA device: make it ``dev``.
    cuda_ctx = torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()
    with (preserve_model_state(model), frozen_weights(model), seeded(seed, dev),
          numpy_blas_single_thread(), cuda_ctx, kept_memory(spec.kind)):
        model.to(dev)
        model.eval()
        net = with_precision(model, precision, dev)  # the model itself for fp32
        n_classes = _n_classes(net, x_np[:1], dev)
        if y_np is None:
            y_np = predict_labels(net, x_np, dev, batch_size)
        elif int(y_np.max()) >= n_classes:
            raise ParameterError(
                f"y has label {int(y_np.max())} but the model has {n_classes} classes (0..{n_classes - 1})"
            )
        ctx = AttackContext(
            model=net, x=x_np, y=y_np, clip=threat, n_classes=n_classes,
            batch_size=batch_size, seed=seed, device=dev, early_stop=bool(early_stop),
        )
        logger.info("%s (%s backend, %s) on %d samples, params %s", spec.name, backend, precision, ctx.n, resolved)
        t0 = time.perf_counter()
        x_adv = runner(ctx, dict(resolved))
        seconds = time.perf_counter() - t0

    x_adv = _finish(spec.name, x_adv, x_np, threat)
    return AttackResult(
        name=spec.name, x_adv=x_adv, seconds=seconds, params=dict(resolved), backend=backend,
        n_queries=ctx.counter.n_queries, n_grads=ctx.counter.n_grads, seed=seed,
        n_backward=ctx.counter.n_backward, early_stop=bool(early_stop), precision=precision,
        attacked=None if ctx.attacked is None else ctx.attacked.copy(),
        fooled_any=None if ctx.fooled_any is None else ctx.fooled_any.copy(),
    )


def _threat_from_tuple(clip: Any) -> ThreatModel:
    if not isinstance(clip, (tuple, list)) or len(clip) != 2:
        raise ParameterError(f"clip={clip!r} must be a ThreatModel or a pair (clip_min, clip_max)")
    return ThreatModel(clip[0], clip[1])


def _finish(name: str, x_adv: Any, x: np.ndarray, clip: ThreatModel) -> np.ndarray:
    out = as_numpy(x_adv)
    if out.shape != x.shape:
        try:
            out = out.reshape(x.shape)
        except ValueError:
            raise AttackError(f"{name}: attack returned shape {out.shape}, expected {x.shape}") from None
    out = np.ascontiguousarray(out, dtype=np.float32)
    if not np.isfinite(out).all():
        raise AttackError(f"{name}: attack returned NaN or infinite values")
    excess = max(clip.clip_min - float(out.min()), float(out.max()) - clip.clip_max, 0.0)
    if excess > CLIP_TOL:
        logger.warning("%s: adversarial examples exceeded the clip box by %.3g; clipped", name, excess)
    return np.clip(out, clip.clip_min, clip.clip_max)


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------
def _check_x(x: Any, clip: ThreatModel) -> np.ndarray:
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise ParameterError(f"x must be a numpy array or torch tensor, got {type(x).__name__}")
    arr = as_numpy(x)
    if arr.ndim < 2:
        raise ParameterError(f"x must have shape (n, 261, 128) (a batch), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ParameterError("x is empty (n=0): nothing to attack")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ParameterError(f"x must be a float array (standardized features), got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ParameterError("x contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < clip.clip_min - CLIP_TOL or hi > clip.clip_max + CLIP_TOL:
        raise ParameterError(
            f"x has values in [{lo:.4g}, {hi:.4g}], outside clip=({clip.clip_min:g}, "
            f"{clip.clip_max:g}); use the corpus's clip values (ThreatModel.from_data on the "
            "standardized training features)"
        )
    return np.clip(arr, clip.clip_min, clip.clip_max)


def _check_y(y: Any, n: int) -> np.ndarray | None:
    if y is None:
        return None
    if not isinstance(y, (np.ndarray, torch.Tensor, list, tuple)):
        raise ParameterError(f"y must be an integer array of labels, got {type(y).__name__}")
    arr = as_numpy(y) if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] > 1:
        raise ParameterError(f"y must hold class indices of shape ({n},), not one-hot {arr.shape}")
    arr = arr.reshape(-1) if arr.ndim == 2 else arr
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ParameterError(f"y must have shape ({n},) to match x, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.round(arr) == arr):
            arr = arr.astype(np.int64)
        else:
            raise ParameterError(f"y must hold integer class indices, got dtype {arr.dtype}")
    if (arr < 0).any():
        raise ParameterError(f"y has negative labels (min {int(arr.min())})")
    return arr.astype(np.int64)


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError(f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda:0')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device={device!r}: CUDA is not available on this machine; use 'cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ParameterError(f"device={device!r}: only 'cpu' and 'cuda' devices are supported")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name}={value!r} must be an integer >= {low}")
    if value < low:
        raise ParameterError(f"{name}={value!r} must be an integer >= {low}")
    return int(value)


@torch.inference_mode()
def _n_classes(model: nn.Module, x0: np.ndarray, device: torch.device) -> int:
    out = model(torch.from_numpy(x0).to(device))
    if out.ndim != 2 or out.shape[0] != x0.shape[0]:
        raise AttackError(
            f"model returns shape {tuple(out.shape)} for a batch of {x0.shape[0]}; "
            "expected logits of shape (batch, n_classes)"
        )
    return int(out.shape[1])

