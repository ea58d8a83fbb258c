"""Threat model, parameter schemas, the attack registry and the one call that runs any attack.

Every attack works in the standardized log-Mel feature space ``[shape=(n, 261, 128)]``
(time x Mel, float32) and is bounded by the corpus's clip values (SPEC.md, "Attacks"): the
floor of the minimum and the ceiling of the maximum of the standardized training features,
e.g. EmoDB ``(-5, 7)``. No ``[0, 1]`` range and no image budget is assumed anywhere.

An attack is described by an :class:`AttackSpec` (name, family, white- or black-box, norm,
parameter schema, the study's "paper" grid, a small "quick" grid, and one runner per backend)
and registered once in :data:`ATTACKS`; tests are parametrised over that registry.
:func:`run_attack` is the single entry point::

    from seradv.attacks import run_attack
    res = run_attack("fgsm", model, x, y, {"eps": 0.25}, clip=(-5, 7))
    res.x_adv, res.seconds, res.n_grads

Parameters are validated against the schema *before* any work starts (no model call, no
estimator construction): an unknown name, a wrong type or a value out of range raises
:class:`~seradv.errors.ParameterError` naming the parameter and its allowed range.

State of the caller is left as found: the model's train/eval flags and device, the global
NumPy / Python / torch random states (attacks run under a seeded, forked RNG state) and the
``.grad`` of parameters that had none.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from seradv.errors import AttackError, ParameterError

logger = logging.getLogger(__name__)

__all__ = [
    "ATTACKS",
    "STUDY_CLIPS",
    "AttackContext",
    "AttackResult",
    "AttackSpec",
    "ParamSpec",
    "QueryCounter",
    "ThreatModel",
    "get_attack",
    "list_attacks",
    "register_attack",
    "run_attack",
    "validate_params",
]

Kind = Literal["white-box", "black-box"]
KINDS: tuple[str, ...] = ("white-box", "black-box")
NORMS: tuple[str, ...] = ("l0", "l2", "linf")

#: The study's clip values per corpus: floor(min), ceil(max) of the standardized features.
STUDY_CLIPS: dict[str, tuple[float, float]] = {
    "emodb": (-5.0, 7.0),
    "emovo": (-3.0, 7.0),
    "ravdess": (-2.0, 8.0),
}

#: Tolerance on ``x`` lying inside the clip box (float32 rounding of standardized data).
_CLIP_TOL = 1e-5


# --------------------------------------------------------------------------------------
# Threat model
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThreatModel:
    """Box the adversarial examples must stay in (the study's clip values).

    Parameters
    ----------
    clip_min, clip_max : float
        Lower and upper bound of every feature cell, ``clip_min < clip_max``, both finite.
    """

    clip_min: float
    clip_max: float

    def __post_init__(self) -> None:
        lo, hi = self.clip_min, self.clip_max
        for nm, v in (("clip_min", lo), ("clip_max", hi)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ParameterError(f"{nm}={v!r} must be a finite number")
            if not math.isfinite(float(v)):
                raise ParameterError(f"{nm}={v!r} must be a finite number")
        if not float(lo) < float(hi):
            raise ParameterError(
                f"clip=({lo!r}, {hi!r}) is empty: clip_min must be smaller than clip_max"
            )
        object.__setattr__(self, "clip_min", float(lo))
        object.__setattr__(self, "clip_max", float(hi))

    @classmethod
    def from_data(cls, x: np.ndarray | torch.Tensor) -> ThreatModel:
        """The study's rule: ``(floor(min(x)), ceil(max(x)))`` of standardized training features.

        Parameters
        ----------
        x : array ``[shape=(n, ...)]``
            Standardized (training) features.
        """
        arr = _as_numpy(x)
        if arr.size == 0 or not np.isfinite(arr).all():
            raise ParameterError("clip values need a non-empty array of finite features")
        lo, hi = float(np.floor(arr.min())), float(np.ceil(arr.max()))
        if lo == hi:
            hi = lo + 1.0
        return cls(lo, hi)

    @classmethod
    def study(cls, corpus: str) -> ThreatModel:
        """The clip values the study used for ``corpus`` ("emodb", "emovo" or "ravdess")."""
        key = corpus.lower()
        if key not in STUDY_CLIPS:
            raise ParameterError(
                f"corpus={corpus!r} has no study clip values; known: {', '.join(STUDY_CLIPS)}"
            )
        return cls(*STUDY_CLIPS[key])

    def as_tuple(self) -> tuple[float, float]:
        """``(clip_min, clip_max)``."""
        return (self.clip_min, self.clip_max)

    @property
    def width(self) -> float:
        """``clip_max - clip_min``."""
        return self.clip_max - self.clip_min


# --------------------------------------------------------------------------------------
# Parameter schema
# --------------------------------------------------------------------------------------
_TYPE_NAMES = {int: "integer", float: "float", str: "string", bool: "boolean"}


@dataclass(frozen=True)
class ParamSpec:
    """Schema of one attack parameter.

    Parameters
    ----------
    name : str
        Parameter name as used in the params dict (seradv's name; the ART name may differ and
        is mapped by the runner, e.g. DeepFool's ``overshoot`` -> ART ``epsilon``).
    kind : type
        ``int``, ``float``, ``str`` or ``bool``. An ``int`` value is accepted for a ``float``.
    default : Any
        Value used when the parameter is not given.
    low, high : float or None
        Bounds; ``None`` for unbounded.
    low_open, high_open : bool
        Whether the bound itself is excluded.
    choices : tuple or None
        Allowed values (for ``str`` parameters).
    doc : str
        One line of documentation.
    """

    name: str
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def allowed(self) -> str:
        """Human-readable allowed range, e.g. ``"a float > 0"`` or ``"an integer in [1, 100]"``."""
        tname = _TYPE_NAMES.get(self.kind, self.kind.__name__)
        article = "an" if tname[0] in "aeiou" else "a"
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            lb = "(" if self.low_open else "["
            rb = ")" if self.high_open else "]"
            return f"{article} {tname} in {lb}{self.low:g}, {self.high:g}{rb}"
        if self.low is not None:
            return f"{article} {tname} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{article} {tname} {'<' if self.high_open else '<='} {self.high:g}"
        return f"{article} {tname}"

    def check(self, attack: str, value: Any) -> Any:
        """Return ``value`` normalised to :attr:`kind`; raise :class:`ParameterError` if invalid."""

        def bad(why: str = "") -> ParameterError:
            extra = f" ({why})" if why else ""
            return ParameterError(
                f"{attack}: {self.name}={value!r} is not allowed{extra}; "
                f"{self.name} must be {self.allowed()}"
            )

        if self.kind is bool:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise bad("wrong type")
        if self.kind is str:
            if not isinstance(value, str):
                raise bad("wrong type")
            out: Any = value
        elif self.kind is int:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise bad("wrong type")
            out = int(value)
        elif self.kind is float:
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise bad("wrong type")
            out = float(value)
            if not math.isfinite(out):
                raise bad("not finite")
        else:  # pragma: no cover - schema error
            raise AttackError(f"{attack}: parameter {self.name} has unsupported kind {self.kind}")
        if self.choices is not None and out not in self.choices:
            raise bad()
        if self.low is not None and (out < self.low or (self.low_open and out == self.low)):
            raise bad()
        if self.high is not None and (out > self.high or (self.high_open and out == self.high)):
            raise bad()
        return out


# --------------------------------------------------------------------------------------
# Context handed to runners, result, counters
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
    """Everything a runner needs; built by :func:`run_attack` after validation.

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
        f = _as_numpy(fooled).astype(bool).reshape(-1)
        if self.fooled_any is None:
            self.fooled_any = np.zeros(self.n, dtype=bool)
        idx = _as_numpy(rows) if isinstance(rows, torch.Tensor) else rows
        if isinstance(idx, slice):
            self.fooled_any[idx] |= f
        else:  # logical_or.at: a row given twice keeps every True
            np.logical_or.at(self.fooled_any, np.asarray(idx), f)

    def mark_not_attacked(self, rows: np.ndarray | torch.Tensor | slice) -> None:
        """Record that the samples ``rows`` were not attacked (no adversarial start found)."""
        if self.attacked is None:
            self.attacked = np.ones(self.n, dtype=bool)
        idx = _as_numpy(rows) if isinstance(rows, torch.Tensor) else rows
        self.attacked[idx] = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(261, 128)``."""
        return tuple(self.x.shape[1:])

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.x.shape[0])

    def map_batches(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> np.ndarray:
        """``fn(x_batch, y_batch) -> x_adv_batch`` on every ``batch_size`` slice (tensors on
        :attr:`device`), gathered into one array like :attr:`x`."""
        out = np.empty_like(self.x)
        for i in range(0, self.n, self.batch_size):
            xb = torch.from_numpy(self.x[i : i + self.batch_size]).to(self.device)
            yb = torch.from_numpy(self.y[i : i + self.batch_size]).to(self.device)
            out[i : i + xb.shape[0]] = fn(xb, yb).detach().cpu().numpy()
        return out


Runner = Callable[[AttackContext, dict[str, Any]], np.ndarray]


@dataclass
class AttackResult:
    """Output of :func:`run_attack`.

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


# --------------------------------------------------------------------------------------
# Attack spec and registry
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackSpec:
    """Registry entry of one attack.

    Parameters
    ----------
    name : str
        Registry key, lower case (e.g. ``"fgsm"``).
    family : str
        Module / family (``"gradient"``, ``"deepfool"``, ``"carlini"`` ...).
    kind : {"white-box", "black-box"}
        A black-box attack only ever gets a predict function (no gradients).
    norm : {"l0", "l2", "linf"}
        Distance the attack bounds or minimises.
    title : str
        Human name and paper, e.g. ``"FGSM (Goodfellow et al. 2015)"``.
    params : tuple of ParamSpec
        Parameter schema with defaults.
    paper_grid : tuple of dict
        The reference study's parameter sets (SPEC.md), in its order.
    quick_grid : tuple of dict
        Small settings for smoke runs and tests (about a minute on ~32 samples of a CPU model;
        fewer samples for the slow black-box attacks).
    backends : Mapping[str, Runner]
        ``{"art": runner, ...}``; ``"art"`` is the reference backend.
    default_backend : str
        Backend used when none is asked for: the fastest one that passes the equivalence
        tests against ART (``"art"`` until a faster one does).
    in_study : bool
        Whether the reference study ran this attack.
    notes : str
        Known quirks, shown by :meth:`describe`.
    check : callable or None
        Extra validation of the resolved params (e.g. "theta must not be 0"); raises
        :class:`ParameterError`.
    check_input : callable or None
        ``check_input(params, input_shape)``: validation that needs the per-sample shape (run by
        :func:`run_attack` after the input checks, still before any model call).
    """

    name: str
    family: str
    kind: str
    norm: str
    title: str
    params: tuple[ParamSpec, ...]
    paper_grid: tuple[dict[str, Any], ...]
    quick_grid: tuple[dict[str, Any], ...]
    backends: Mapping[str, Runner] = field(hash=False, compare=False)
    in_study: bool = True
    notes: str = ""
    default_backend: str = "art"
    check: Callable[[dict[str, Any]], None] | None = field(default=None, hash=False, compare=False)
    check_input: Callable[[dict[str, Any], tuple[int, ...]], None] | None = field(
        default=None, hash=False, compare=False
    )

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters, in schema order."""
        return tuple(p.name for p in self.params)

    def defaults(self) -> dict[str, Any]:
        """Default value of every parameter."""
        return {p.name: p.default for p in self.params}

    def validate(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check ``params`` against the schema and fill in defaults.

        Raises
        ------
        ParameterError
            Unknown parameter name, wrong type or value out of range; the message names the
            parameter and its allowed range.
        """
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ParameterError(
                f"{self.name}: params must be a dict of parameter values, got {type(params).__name__}"
            )
        schema = {p.name: p for p in self.params}
        unknown = [k for k in params if k not in schema]
        if unknown:
            allowed = ", ".join(self.param_names) or "(none)"
            raise ParameterError(
                f"{self.name}: unknown parameter {unknown[0]!r}; allowed parameters: {allowed}"
            )
        out = self.defaults()
        for key, value in params.items():
            out[key] = schema[key].check(self.name, value)
        if self.check is not None:
            self.check(out)
        return out

    def grid(self, which: Literal["paper", "quick"] = "paper") -> list[dict[str, Any]]:
        """Copies of the study's (``"paper"``) or the quick parameter sets."""
        if which == "paper":
            return [dict(g) for g in self.paper_grid]
        if which == "quick":
            return [dict(g) for g in self.quick_grid]
        raise ParameterError(f"grid which={which!r} must be 'paper' or 'quick'")

    def describe(self) -> str:
        """Multi-line description: title, kind, norm, parameters with defaults and ranges."""
        lines = [f"{self.name}: {self.title} [{self.kind}, {self.norm}]"]
        for p in self.params:
            lines.append(f"  {p.name} = {p.default!r}  ({p.allowed()}) {p.doc}".rstrip())
        lines.append(f"  backends: {', '.join(self.backends)}")
        if self.notes:
            lines.append(f"  notes: {self.notes}")
        return "\n".join(lines)


#: The registry: attack name -> spec. Filled when :mod:`seradv.attacks` is imported.
ATTACKS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec, *, overwrite: bool = False) -> AttackSpec:
    """Add ``spec`` to :data:`ATTACKS`; its grids are validated against its own schema.

    Raises
    ------
    AttackError
        Name taken (and ``overwrite`` false), bad kind / norm, no ``"art"`` backend, or a grid
        entry that its own schema rejects.
    """
    if not isinstance(spec, AttackSpec):
        raise AttackError(f"register_attack needs an AttackSpec, got {type(spec).__name__}")
    if spec.name in ATTACKS and not overwrite:
        raise AttackError(f"an attack named {spec.name!r} is already registered")
    if spec.kind not in KINDS:
        raise AttackError(f"{spec.name}: kind={spec.kind!r} must be one of {KINDS}")
    if spec.norm not in NORMS:
        raise AttackError(f"{spec.name}: norm={spec.norm!r} must be one of {NORMS}")
    if not spec.backends:
        raise AttackError(f"{spec.name}: at least one backend is needed")
    if spec.default_backend not in spec.backends:
        raise AttackError(
            f"{spec.name}: default_backend={spec.default_backend!r} is not one of its backends "
            f"({', '.join(spec.backends)})"
        )
    names = spec.param_names
    if len(set(names)) != len(names):
        raise AttackError(f"{spec.name}: duplicate parameter names in {names}")
    for p in spec.params:
        p.check(spec.name, p.default)
    for which, grid in (("paper", spec.paper_grid), ("quick", spec.quick_grid)):
        for entry in grid:
            try:
                spec.validate(entry)
            except ParameterError as exc:
                raise AttackError(f"{spec.name}: invalid {which} grid entry {entry}: {exc}") from None
    ATTACKS[spec.name] = spec
    return spec


def get_attack(name: str) -> AttackSpec:
    """The registered spec of ``name`` (case-insensitive).

    Raises
    ------
    AttackError
        Unknown name; the message lists the known attacks.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in ATTACKS:
        raise AttackError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[key]


def list_attacks(
    *, kind: str | None = None, in_study: bool | None = None
) -> list[str]:
    """Registered attack names, optionally filtered by ``kind`` and by ``in_study``."""
    out = []
    for nm, spec in ATTACKS.items():
        if kind is not None and spec.kind != kind:
            continue
        if in_study is not None and spec.in_study != in_study:
            continue
        out.append(nm)
    return out


def validate_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``params`` for attack ``name`` and return them with defaults filled in."""
    return get_attack(name).validate(params)


# --------------------------------------------------------------------------------------
# Input validation helpers
# --------------------------------------------------------------------------------------
def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_x(x: Any, clip: ThreatModel) -> np.ndarray:
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise ParameterError(f"x must be a numpy array or torch tensor, got {type(x).__name__}")
    arr = _as_numpy(x)
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
    if lo < clip.clip_min - _CLIP_TOL or hi > clip.clip_max + _CLIP_TOL:
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
    arr = _as_numpy(y) if isinstance(y, torch.Tensor) else np.asarray(y)
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


# --------------------------------------------------------------------------------------
# State management
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def preserve_model_state(model: nn.Module) -> Iterator[None]:
    """Freeze the parameters for the block (attacks need input gradients only: a backward pass
    then skips every weight gradient, and the model's own fast paths may apply); restore their
    ``requires_grad``, the train/eval flag of every module, the device and empty ``.grad``
    afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    no_grad_before = [p.grad is None for p in params]
    requires_grad = [p.requires_grad for p in params]
    device = params[0].device if params else None
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, requires_grad):
            p.requires_grad_(flag)
        for m, flag in flags:
            m.training = flag
        for p, was_none in zip(params, no_grad_before):
            if was_none:
                p.grad = None
        if device is not None:
            model.to(device)


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


def numpy_blas_single_thread() -> contextlib.AbstractContextManager[Any]:
    """Limit the BLAS thread pools (NumPy's OpenBLAS) to one thread (no-op without ``threadpoolctl``).

    ART's attacks run NumPy vector operations on one sample at a time (33,408 cells): BLAS
    threads gain nothing there, and next to torch's own intra-op threads they oversubscribe the
    cores. Measured on a busy 2-core machine: ART's Boundary attack (quick grid, 8 samples of a
    tiny model) took 6.9 s with 2 OpenBLAS threads and 0.9 s with 1 (``np.dot`` in
    ``_orthogonal_perturb`` went from ~3 ms to ~0.1 ms per call). torch's OpenMP threads are
    untouched.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@torch.inference_mode()
def _n_classes(model: nn.Module, x0: np.ndarray, device: torch.device) -> int:
    out = model(torch.from_numpy(x0).to(device))
    if out.ndim != 2 or out.shape[0] != x0.shape[0]:
        raise AttackError(
            f"model returns shape {tuple(out.shape)} for a batch of {x0.shape[0]}; "
            "expected logits of shape (batch, n_classes)"
        )
    return int(out.shape[1])


@torch.inference_mode()
def _predict_labels(model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model(torch.from_numpy(x[i : i + batch_size]).to(device)).argmax(1).cpu())
    return torch.cat(out).numpy().astype(np.int64)


# --------------------------------------------------------------------------------------
# The one call
# --------------------------------------------------------------------------------------
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
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    threat = clip if isinstance(clip, ThreatModel) else _threat_from_tuple(clip)
    if not isinstance(model, nn.Module):
        raise ParameterError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dev = _check_device(device)
    x_np = _check_x(x, threat)
    y_np = _check_y(y, x_np.shape[0])
    if spec.check_input is not None:
        spec.check_input(resolved, tuple(x_np.shape[1:]))
    runner = spec.backends[backend]

    # 2. the work
    # ART's PyTorchClassifier puts the model on the *current* CUDA device: make it ``dev``.
    cuda_ctx = torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()
    with preserve_model_state(model), seeded(seed, dev), numpy_blas_single_thread(), cuda_ctx:
        model.to(dev)
        model.eval()
        n_classes = _n_classes(model, x_np[:1], dev)
        if y_np is None:
            y_np = _predict_labels(model, x_np, dev, batch_size)
        elif int(y_np.max()) >= n_classes:
            raise ParameterError(
                f"y has label {int(y_np.max())} but the model has {n_classes} classes (0..{n_classes - 1})"
            )
        ctx = AttackContext(
            model=model, x=x_np, y=y_np, clip=threat, n_classes=n_classes,
            batch_size=batch_size, seed=seed, device=dev, early_stop=bool(early_stop),
        )
        logger.info("%s (%s backend) on %d samples, params %s", spec.name, backend, ctx.n, resolved)
        t0 = time.perf_counter()
        x_adv = runner(ctx, dict(resolved))
        seconds = time.perf_counter() - t0

    x_adv = _finish(spec.name, x_adv, x_np, threat)
    return AttackResult(
        name=spec.name, x_adv=x_adv, seconds=seconds, params=dict(resolved), backend=backend,
        n_queries=ctx.counter.n_queries, n_grads=ctx.counter.n_grads, seed=seed,
        n_backward=ctx.counter.n_backward, early_stop=bool(early_stop),
        attacked=None if ctx.attacked is None else ctx.attacked.copy(),
        fooled_any=None if ctx.fooled_any is None else ctx.fooled_any.copy(),
    )


def _threat_from_tuple(clip: Any) -> ThreatModel:
    if not isinstance(clip, (tuple, list)) or len(clip) != 2:
        raise ParameterError(f"clip={clip!r} must be a ThreatModel or a pair (clip_min, clip_max)")
    return ThreatModel(clip[0], clip[1])


def _finish(name: str, x_adv: Any, x: np.ndarray, clip: ThreatModel) -> np.ndarray:
    out = _as_numpy(x_adv)
    if out.shape != x.shape:
        try:
            out = out.reshape(x.shape)
        except ValueError:
            raise AttackError(f"{name}: attack returned shape {out.shape}, expected {x.shape}") from None
    out = np.ascontiguousarray(out, dtype=np.float32)
    if not np.isfinite(out).all():
        raise AttackError(f"{name}: attack returned NaN or infinite values")
    excess = max(clip.clip_min - float(out.min()), float(out.max()) - clip.clip_max, 0.0)
    if excess > _CLIP_TOL:
        logger.warning("%s: adversarial examples exceeded the clip box by %.3g; clipped", name, excess)
    return np.clip(out, clip.clip_min, clip.clip_max)
