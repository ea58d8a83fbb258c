"""What a runner works with: the attack context, its work counters, the result, and the state
:func:`~seradv.attacks.run.run_attack` holds the caller's model and RNGs in while an attack runs.

State of the caller is left as found: the model's train/eval flags and device, the global
NumPy / Python / torch random states (attacks run under a seeded, forked RNG state) and the
``.grad`` of parameters that had none.

The fast-path contract: while an attack runs, the model's weights are frozen
(:func:`frozen_weights`: ``requires_grad`` off for every parameter). Attacks need input
gradients only, so a backward pass skips every weight gradient, and the model's own fast paths
(:mod:`seradv.models`: e.g. the input-only convolution backward, which applies only to frozen
weights) may apply. :func:`~seradv.attacks.run.run_attack` enters this state in one place,
inside :func:`preserve_model_state`, and leaves it before the result is returned.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from seradv.allocator import reuse_freed_memory
from seradv.attacks.threat import ThreatModel, as_numpy

__all__ = [
    "AttackContext",
    "AttackResult",
    "IterateWatch",
    "QueryCounter",
    "frozen_weights",
    "gradient_context",
    "kept_memory",
    "map_batches_watched",
    "numpy_blas_single_thread",
    "preserve_model_state",
    "seeded",
]


# --------------------------------------------------------------------------------------
# Counters, context, result
# --------------------------------------------------------------------------------------
@dataclass
class QueryCounter:
    """Work counters filled by estimators / predict functions.

    ``n_queries`` counts single-sample forward evaluations requested by the attack (model
    "queries"); ``n_grads`` counts single-sample input gradients (one backward pass per sample
    and per differentiated output / loss).

    The fast torch backends count *passes*, so that a benchmark can turn the counters into the
    algorithm's cost floor ``n_queries * t_forward + n_grads * t_forward_backward +
    n_backward * (t_forward_backward - t_forward)``: ``n_queries`` forward-only sample passes,
    ``n_grads`` forward+backward sample passes, ``n_backward`` further backward passes that
    reuse a forward (e.g. the 2nd..k-th class of a Jacobian). The ART adapters count a
    ``class_gradient`` of k classes as k ``n_grads`` (ART runs one forward per class).
    """

    n_queries: int = 0
    n_grads: int = 0
    n_backward: int = 0


@dataclass
class AttackContext:
    """Everything a runner needs; built by :func:`~seradv.attacks.run.run_attack` after validation.

    Attributes
    ----------
    model : nn.Module
        The model, on :attr:`device`, in eval mode.
    x : np.ndarray ``[shape=(n, *input_shape)]``, float32
        Clean features.
    y : np.ndarray ``[shape=(n,)]``, int64
        True labels (or the model's predictions where the caller gave none).
    clip : ThreatModel
    n_classes : int
    batch_size, seed : int
    device : torch.device
    counter : QueryCounter
    early_stop : bool
        Opt-in: iterative attacks stop iterating on samples that are already misclassified
        (AutoAttack's practice). Saves time without changing robust accuracy, but yields smaller
        perturbations than the algorithm as published, so results record it as its own setting.
    attacked : np.ndarray ``[shape=(n,)]``, bool, or None
        Filled by a runner that can fail to attack a sample at all (Boundary / HopSkipJump
        without an adversarial start): ``False`` where the returned row is the untouched clean
        sample because no attack was run on it. ``None``: every sample was attacked.
    fooled_any : np.ndarray ``[shape=(n,)]``, bool, or None
        Filled by iterative runners that watch their iterates: ``True`` where the model
        misclassified (``argmax != y``) *some* iterate inside the threat box, even if the
        returned (last) iterate is classified correctly. ``None``: only the returned examples
        are known (robustness is then judged on them alone).
    """

    model: nn.Module
    x: np.ndarray
    y: np.ndarray
    clip: ThreatModel
    n_classes: int
    batch_size: int
    seed: int
    device: torch.device
    counter: QueryCounter = field(default_factory=QueryCounter)
    early_stop: bool = False
    attacked: np.ndarray | None = None
    fooled_any: np.ndarray | None = None

    def mark_fooled(self, rows: np.ndarray | torch.Tensor | slice, fooled: np.ndarray | torch.Tensor) -> None:
        """Record that the samples ``rows`` (positions in :attr:`x`) were misclassified at an
        iterate where ``fooled`` is true; called by iterative runners after each step."""
        f = as_numpy(fooled).astype(bool).reshape(-1)
        if self.fooled_any is None:
            self.fooled_any = np.zeros(self.n, dtype=bool)
        idx = as_numpy(rows) if isinstance(rows, torch.Tensor) else rows
        if isinstance(idx, slice):
            self.fooled_any[idx] |= f
        else:  # logical_or.at: a row given twice keeps every True
            np.logical_or.at(self.fooled_any, np.asarray(idx), f)

    def mark_not_attacked(self, rows: np.ndarray | torch.Tensor | slice) -> None:
        """Record that the samples ``rows`` were not attacked (no adversarial start found)."""
        if self.attacked is None:
            self.attacked = np.ones(self.n, dtype=bool)
        idx = as_numpy(rows) if isinstance(rows, torch.Tensor) else rows
        self.attacked[idx] = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(261, 128)``."""
        return tuple(self.x.shape[1:])

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.x.shape[0])

    def batches(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """``(start, x_batch, y_batch)`` of every ``batch_size`` slice, tensors on :attr:`device`."""
        for i in range(0, self.n, self.batch_size):
            yield (i, torch.from_numpy(self.x[i : i + self.batch_size]).to(self.device),
                   torch.from_numpy(self.y[i : i + self.batch_size]).to(self.device))

    def map_batches(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> np.ndarray:
        """``fn(x_batch, y_batch) -> x_adv_batch`` on every ``batch_size`` slice (tensors on
        :attr:`device`), gathered into one array like :attr:`x`."""
        out = np.empty_like(self.x)
        for i, xb, yb in self.batches():
            out[i : i + xb.shape[0]] = fn(xb, yb).detach().cpu().numpy()
        return out


@dataclass
class AttackResult:
    """Output of :func:`~seradv.attacks.run.run_attack`.

    Attributes
    ----------
    name : str
        Registered attack name.
    x_adv : np.ndarray ``[shape=(n, *input_shape)]``, float32
        Adversarial examples, inside the clip box.
    seconds : float
        Wall time of the generation (estimator construction included, validation excluded).
    params : dict
        The full parameter set used (given values plus defaults).
    backend : str
        ``"art"`` (the study's toolbox, reference) or ``"torch"``.
    n_queries, n_grads : int or None
        Single-sample forward evaluations and input gradients requested by the attack
        (:class:`QueryCounter`); ``None`` where unknown.
    seed : int
    attacked : np.ndarray ``[shape=(n,)]``, bool, or None
        ``False`` for samples the attack could not attack (:attr:`AttackContext.attacked`);
        ``None``: all were attacked.
    fooled_any : np.ndarray ``[shape=(n,)]``, bool, or None
        ``True`` for samples misclassified at some iterate (:attr:`AttackContext.fooled_any`);
        ``None``: the runner does not watch its iterates.
    precision : str
        Of the model's forward passes (:mod:`seradv.precision`): ``"fp32"``, ``"bf16"``, ``"fp16"``.
    shards : int
        Sample shards the run was split into (:class:`seradv.grid.executors.ShardedAttack`);
        1 for an ordinary run.
    """

    name: str
    x_adv: np.ndarray
    seconds: float
    params: dict[str, Any]
    backend: str
    n_queries: int | None = None
    n_grads: int | None = None
    seed: int = 0
    n_backward: int | None = None
    early_stop: bool = False
    attacked: np.ndarray | None = None
    fooled_any: np.ndarray | None = None
    precision: str = "fp32"
    shards: int = 1


# --------------------------------------------------------------------------------------
# Watching the iterates of an attack (robust accuracy: the first fooled iterate counts)
# --------------------------------------------------------------------------------------
class IterateWatch:
    """Which samples some iterate of an attack fooled (``argmax != y``, the *true* labels).

    Attacks call the watch with the predictions they already computed for an iterate inside
    their threat model: ``watch(rows, pred)``, ``rows`` positions in the watched block (a long
    tensor, or ``None`` for all of it), ``pred`` the predicted classes of those rows. The
    flags are kept on the device (no synchronisation per step) and handed to
    :meth:`AttackContext.mark_fooled <seradv.attacks.context.AttackContext.mark_fooled>` once,
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
    """:meth:`AttackContext.map_batches` with an :class:`IterateWatch` per batch:
    ``fn(x_batch, y_batch, watch) -> x_adv_batch``; each batch's flags go to ``ctx.fooled_any``."""
    out = np.empty_like(ctx.x)
    for i, xb, yb in ctx.batches():
        watch = IterateWatch(ctx, i, yb)
        out[i : i + xb.shape[0]] = fn(xb, yb, watch).detach().cpu().numpy()
        watch.flush()
    return out


# --------------------------------------------------------------------------------------
# The caller's state while an attack runs
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def preserve_model_state(model: nn.Module) -> Iterator[None]:
    """Restore, after the block, the train/eval flag of every module of ``model``, its device
    and the empty ``.grad`` of parameters that had none."""
    flags = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    no_grad_before = [p.grad is None for p in params]
    device = params[0].device if params else None
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        for p, was_none in zip(params, no_grad_before):
            if was_none:
                p.grad = None
        if device is not None:
            model.to(device)


@contextlib.contextmanager
def frozen_weights(model: nn.Module) -> Iterator[None]:
    """The fast-path state: every parameter of ``model`` frozen (``requires_grad`` off) for the
    block, its ``requires_grad`` restored afterwards.

    Attacks need input gradients only: a backward pass then skips every weight gradient, and
    the model's own fast paths that require frozen weights may apply (see the module docstring).
    :func:`~seradv.attacks.run.run_attack` enters it right after :func:`preserve_model_state`.
    """
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, requires_grad):
            p.requires_grad_(flag)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed NumPy's global, Python's and torch's RNGs for the block; restore them after.

    ART draws from the *global* NumPy RNG (random starts, Boundary's orthogonal steps,
    HopSkipJump, Square, the differential evolution of the Pixel attack), so a seed is only
    reproducible through the global state; it is restored so the caller's stream is untouched.
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    devices = [device.index] if device.type == "cuda" and device.index is not None else []
    with torch.random.fork_rng(devices=devices):
        np.random.seed(seed % 2**32)
        random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def gradient_context(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Context for backward passes through the model in eval mode.

    cuDNN cannot run the backward pass of an RNN (the CNN-LSTM's LSTM) in eval mode
    ("cudnn RNN backward can only be called in training mode"). seradv keeps the model in eval
    mode (dropout off, batch-norm running statistics, *and* no inter-layer LSTM dropout, which
    ART's "train mode with frozen dropout/batch-norm" work-around would leave on) and instead
    disables cuDNN for gradient computations on CUDA. On CPU this is a no-op.
    """
    if device.type == "cuda":
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


def kept_memory(kind: str) -> contextlib.AbstractContextManager[Any]:
    """Where an attack of ``kind`` (``AttackSpec.kind``) runs: inside
    :func:`~seradv.allocator.reuse_freed_memory` for a white-box attack (the same numbers; its
    passes repeat the same tensor shapes, so the kept blocks are reused: input gradients
    1.4-2.4x faster, the same peak memory), as usual for a black-box one (queries of varying
    sizes fragment the heap: Pixel th 10 needed 1.9x the memory; docs/benchmarks.md). The one
    rule for feature-space (:func:`seradv.attacks.run_attack`) and waveform cells."""
    return reuse_freed_memory() if kind == "white-box" else contextlib.nullcontext()


def numpy_blas_single_thread() -> contextlib.AbstractContextManager[Any]:
    """Limit the BLAS thread pools (NumPy's OpenBLAS) to one thread (no-op without ``threadpoolctl``).

    ART's attacks run NumPy vector operations on one sample at a time (33,408 cells): BLAS
    threads gain nothing there, and next to torch's own intra-op threads they oversubscribe the
    cores (ART's Boundary attack spends most of its time in ``np.dot`` of
    ``_orthogonal_perturb``). torch's OpenMP threads are untouched.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")

