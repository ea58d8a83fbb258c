"""Attack descriptions and the registry: parameter schemas, specs, grids, look-up.

An attack is described by an :class:`AttackSpec` (name, family, white- or black-box, norm,
parameter schema, the study's "paper" grid, a small "quick" grid, optionally a "standard" grid,
what it perturbs (``input``: the log-Mel ``"features"`` or the ``"waveform"``), and one runner
per backend) and registered once in :data:`ATTACKS`; tests are parametrised over that registry.
Its grids are checked against its own schema at registration. An attack has a grid when that
grid has parameter sets: the feature-space attacks have ``paper`` and ``quick``, the waveform
attacks ``quick`` and ``standard`` (the study never attacked the waveform: no ``paper`` grid).

Parameters are validated against the schema *before* any work starts (no model call, no
estimator construction): an unknown name, a wrong type or a value out of range raises
:class:`~seradv.errors.ParameterError` naming the parameter and its allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from seradv.attacks.context import AttackContext
from seradv.errors import AttackError, ParameterError

__all__ = [
    "ATTACKS",
    "GRID_NAMES",
    "INPUTS",
    "AttackSpec",
    "ParamSpec",
    "STUDY_ATTACKS",
    "STUDY_EPS",
    "Runner",
    "get_attack",
    "list_attacks",
    "register_attack",
    "validate_params",
]

Kind = Literal["white-box", "black-box"]
KINDS: tuple[str, ...] = ("white-box", "black-box")
NORMS: tuple[str, ...] = ("l0", "l2", "linf")

#: What an attack perturbs: the standardized log-Mel matrix, or the 16 kHz waveform.
INPUTS: tuple[str, ...] = ("features", "waveform")

#: The grids an attack can declare (:meth:`AttackSpec.grid`), in this order.
GRID_NAMES: tuple[str, ...] = ("paper", "quick", "standard")

#: The study's eight attacks, in SPEC.md order (:attr:`AttackSpec.in_study` is read from it).
STUDY_ATTACKS: tuple[str, ...] = (
    "fgsm", "bim", "deepfool", "jsma", "cw_l2", "cw_linf", "pixel", "boundary",
)

#: The study's L-inf budgets (standardized feature units) of FGSM and BIM (SPEC.md), reused by the
#: paper grids of the other L-inf attacks (PGD, APGD) so that they are compared at the same eps.
STUDY_EPS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25)

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



Runner = Callable[[AttackContext, dict[str, Any]], np.ndarray]
"""A feature-space backend: ``runner(ctx, params) -> x_adv``. The backends of a waveform attack
(``input="waveform"``) are instead ``fn(wave_model, x, y, *, seed, batch_size, **params)`` ->
:class:`~seradv.attacks.waveform.pgd.WaveformAttackResult` (see :mod:`seradv.attacks.waveform`)."""


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
    notes : str
        Known quirks, shown by :meth:`describe`.
    check : callable or None
        Extra validation of the resolved params (e.g. "theta must not be 0"); raises
        :class:`ParameterError`.
    check_input : callable or None
        ``check_input(params, input_shape)``: validation that needs the per-sample shape (run by
        :func:`~seradv.attacks.run.run_attack` after the input checks, still before any model call).
    standard_grid : tuple of dict
        A further named grid (``--grid standard``), empty for attacks without one.
    input : {"features", "waveform"}
        What the attack perturbs. Feature attacks run through
        :func:`~seradv.attacks.run.run_attack`; waveform attacks through the grid
        (:func:`seradv.attacks.waveform.cell.waveform_attack_cell`), their backends being
        waveform attack functions (:data:`Runner`).
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
    notes: str = ""
    default_backend: str = "art"
    check: Callable[[dict[str, Any]], None] | None = field(default=None, hash=False, compare=False)
    check_input: Callable[[dict[str, Any], tuple[int, ...]], None] | None = field(
        default=None, hash=False, compare=False
    )
    standard_grid: tuple[dict[str, Any], ...] = ()
    input: str = "features"

    @property
    def in_study(self) -> bool:
        """Whether the reference study ran this attack (its name is in :data:`STUDY_ATTACKS`)."""
        return self.name in STUDY_ATTACKS

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

    def _grids(self) -> dict[str, tuple[dict[str, Any], ...]]:
        return {"paper": self.paper_grid, "quick": self.quick_grid, "standard": self.standard_grid}

    @property
    def grid_names(self) -> tuple[str, ...]:
        """The grids this attack has (those of :data:`GRID_NAMES` with parameter sets)."""
        return tuple(w for w, g in self._grids().items() if g)

    def grid(self, which: Literal["paper", "quick", "standard"] = "paper") -> list[dict[str, Any]]:
        """Copies of the study's (``"paper"``), the quick or the standard parameter sets
        (``[]`` when the attack has no such grid)."""
        grids = self._grids()
        if which not in grids:
            raise ParameterError(f"grid which={which!r} must be one of {', '.join(repr(g) for g in GRID_NAMES)}")
        return [dict(g) for g in grids[which]]

    def describe(self) -> str:
        """Multi-line description: title, kind, norm, parameters with defaults and ranges."""
        on = "" if self.input == "features" else f", on the {self.input}"
        lines = [f"{self.name}: {self.title} [{self.kind}, {self.norm}{on}]"]
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
    if spec.input not in INPUTS:
        raise AttackError(f"{spec.name}: input={spec.input!r} must be one of {INPUTS}")
    if not spec.quick_grid:
        raise AttackError(f"{spec.name}: a quick grid (at least one parameter set) is needed")
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
    for which, grid in spec._grids().items():
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
    *, kind: str | None = None, in_study: bool | None = None, input: str | None = None
) -> list[str]:
    """Registered attack names, optionally filtered by ``kind``, ``in_study`` and ``input``."""
    out = []
    for nm, spec in ATTACKS.items():
        if kind is not None and spec.kind != kind:
            continue
        if in_study is not None and spec.in_study != in_study:
            continue
        if input is not None and spec.input != input:
            continue
        out.append(nm)
    return out


def validate_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``params`` for attack ``name`` and return them with defaults filled in."""
    return get_attack(name).validate(params)

