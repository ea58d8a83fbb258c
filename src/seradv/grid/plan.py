"""Planning a grid: which cells (attack x parameter set x backend) run on which samples.

A :class:`Cell` is one attack with one validated parameter set; :func:`plan_grid` expands the
``paper``, ``quick`` or ``standard`` grid of the chosen attacks (filtered by ``--where``, or
replaced by one ``--params`` set; an attack without the grid asked for is skipped, e.g. the
waveform attacks under ``paper``), and :func:`select_subset` picks the seeded, stratified
samples of ``--limit``.
Everything here is checked before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from seradv.attacks import GRID_NAMES, STUDY_ATTACKS, get_attack
from seradv.errors import ParameterError
from seradv.precision import check_backend, check_precision

log = logging.getLogger(__name__)

__all__ = ["Cell", "GRIDS", "check_grid_name", "plan_grid", "parse_where", "parse_params", "select_subset"]

GRIDS = GRID_NAMES
"""The grid names: the study's parameters (``paper``, the feature-space attacks), a small one
(``quick``, every attack) and ``standard`` (the waveform attacks' budgets)."""


def check_grid_name(grid: str, option: str = "grid=") -> None:
    """A one-line error unless ``grid`` is one of :data:`GRIDS`; ``option`` names it in the
    message (``"grid="`` for the API, ``"--grid "`` for the CLI)."""
    if grid not in GRIDS:
        raise ParameterError(f"{option}{grid!r} must be one of {', '.join(repr(g) for g in GRIDS)}")


@dataclass(frozen=True)
class Cell:
    """One attack with one parameter set."""

    attack: str
    params: dict
    backend: str
    early_stop: bool = False
    precision: str = "fp32"

    @property
    def label(self) -> str:
        """Short human label of the parameters, e.g. ``eps=0.25``."""
        spec = get_attack(self.attack)
        shown = {k: v for k, v in self.params.items() if k in _varying(spec)}
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()) or "default"

    def cell_id(self, subset_key: str, seed: int) -> str:
        key: list = [self.attack, self.params, self.backend, subset_key, seed]
        if self.early_stop:  # appended only when set, so ids of existing cells do not change
            key.append("early_stop")
        if self.precision != "fp32":  # likewise: fp32 cells keep the ids they had before precision
            key.append(f"precision={self.precision}")
        blob = json.dumps(key, sort_keys=True, default=str)
        return f"{self.attack}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _varying(spec) -> set[str]:
    grid = list(spec.paper_grid) + list(spec.quick_grid) + list(spec.standard_grid)
    keys = set().union(*[g.keys() for g in grid]) if grid else set()
    return {k for k in keys if len({json.dumps(g.get(k), default=str) for g in grid}) > 1}


def parse_where(where: str | None) -> dict[str, float | str]:
    """``"theta=1,th=10"`` -> ``{"theta": 1.0, "th": 10.0}`` (numbers as floats, else strings)."""
    out: dict[str, float | str] = {}
    for part in (where or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ParameterError(f"where={where!r}: {part!r} is not NAME=VALUE (e.g. 'theta=1' or 'th=1,max_iter=20')")
        try:
            out[key.strip()] = float(val)
        except ValueError:
            out[key.strip()] = val.strip()
    return out


def _matches(params: dict, where: dict) -> bool:
    for k, v in where.items():
        have = params.get(k)
        if isinstance(v, float):
            if isinstance(have, bool) or not isinstance(have, (int, float)) or float(have) != v:
                return False
        elif str(have) != v:
            return False
    return True


def parse_params(params: str | dict | None, spec) -> dict:
    """``"eps=0.3,max_iter=50"`` -> ``{"eps": 0.3, "max_iter": 50}``, typed by ``spec``'s schema.

    A dict is returned as given (validated later by the spec); a name the attack does not
    have is an error that lists its parameters.
    """
    if params is None:
        return {}
    if isinstance(params, dict):
        return dict(params)
    schema = {p.name: p for p in spec.params}
    out: dict = {}
    for key, raw in parse_where(params).items():
        if key not in schema:
            raise ParameterError(f"params={params!r}: {key} is not a parameter of {spec.name}; "
                                 f"its parameters: {', '.join(spec.param_names) or '(none)'}")
        kind = schema[key].kind
        text = raw if isinstance(raw, str) else repr(raw)
        if kind is int and isinstance(raw, float) and raw.is_integer():
            out[key] = int(raw)
        elif kind is bool:
            if str(text).lower() not in ("true", "false", "1", "0", "1.0", "0.0"):
                raise ParameterError(f"params: {spec.name} {key}={text!r} must be true or false")
            out[key] = str(text).lower() in ("true", "1", "1.0")
        elif kind is str:
            out[key] = text if isinstance(raw, str) else f"{raw:g}"
        else:
            out[key] = raw  # floats (and bad ints) go to the spec's check, which names the range
    return out


def _grid_values(cells: list[Cell], names: list[str]) -> str:
    """``"jsma: theta in {-1, -0.5, 0.5, 1}, gamma in {1}"``: what ``--where`` can select."""
    parts = []
    for name in names:
        mine = [c.params for c in cells if c.attack == name]
        if not mine:
            continue
        keys = sorted(set().union(*mine))
        vals = []
        for k in keys:
            seen = {p.get(k) for p in mine}
            nums = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen)
            shown = [f"{v:g}" if nums else str(v) for v in sorted(seen, key=lambda v: v if nums else str(v))]
            vals.append(f"{k} in {{{', '.join(shown)}}}")
        parts.append(f"{name}: {', '.join(vals)}")
    return "; ".join(parts)


def plan_grid(attacks: Iterable[str] | None, grid: str = "paper", backend: str | None = None,
              early_stop: bool = False, where: str | None = None,
              params: str | dict | None = None, precision: str = "fp32") -> list[Cell]:
    """The cells of ``grid`` ("paper", "quick" or "standard") for ``attacks`` (default: the
    study's eight). An attack without that grid (:attr:`AttackSpec.grid_names`) is skipped with
    a log line; none left is an error naming the attacks' grids.

    ``backend=None`` takes each attack's ``default_backend``; a named backend that an attack
    lacks is an error. ``where="theta=1"`` keeps only the parameter sets with those values
    (each name must be a parameter of some chosen attack; no cell left is an error that lists
    the grid's values). ``params="eps=0.3,max_iter=50"`` replaces the grid: one cell per
    attack with exactly these parameters (the others at their defaults). Every parameter set
    is validated before any work starts. ``precision`` other than ``"fp32"``
    (:mod:`seradv.precision`) needs every cell's backend to be torch.
    """
    check_grid_name(grid, "grid=")
    check_precision(precision)
    if params is not None and where:
        raise ParameterError("give either params (one parameter set outside the grid) or where "
                             "(a filter of the grid), not both")
    names = list(attacks) if attacks else list(STUDY_ATTACKS)
    cells = []
    skipped = []
    for name in names:
        spec = get_attack(name)
        if params is None and grid not in spec.grid_names:
            skipped.append(spec)
            continue
        be = backend or spec.default_backend
        if be not in spec.backends:
            raise ParameterError(f"{name}: backend={backend!r} not available; choose one of {', '.join(spec.backends)}")
        check_backend(precision, be, spec.name)
        if precision != "fp32" and spec.input != "features":
            raise ParameterError(f"{spec.name}: precision={precision!r} applies to the feature-space attacks only "
                                 f"({spec.name} attacks the {spec.input}); leave it out or use precision fp32")
        sets = [parse_params(params, spec)] if params is not None else spec.grid(grid)
        stops = bool(early_stop) and spec.input == "features"  # the waveform attacks have no early stop
        for ps in sets:
            cells.append(Cell(attack=spec.name, params=spec.validate(ps), backend=be, early_stop=stops,
                              precision=precision))
    if skipped:
        have = "; ".join(f"{s.name} ({', '.join(s.grid_names)})" for s in skipped)
        if not cells:
            raise ParameterError(f"grid={grid!r}: no chosen attack has this grid; their grids: {have}")
        log.info("grid %r: skipped %s (no such grid; their grids: %s)", grid,
                 ", ".join(s.name for s in skipped), have)
    cond = parse_where(where)
    if cond:
        names = [get_attack(n).name for n in names]
        known = set().union(*(get_attack(c.attack).param_names for c in cells)) if cells else set()
        unknown = sorted(set(cond) - known)
        if unknown:
            raise ParameterError(f"where: {', '.join(unknown)} is not a parameter of {', '.join(names)}; "
                                 f"parameters: {', '.join(sorted(known))}")
        kept = [c for c in cells if _matches(c.params, cond)]
        if not kept:
            raise ParameterError(f"where={where!r} selects no cell of the {grid} grid of {', '.join(names)}; "
                                 f"the grid has {_grid_values(cells, names)}")
        cells = kept
    return cells


def select_subset(meta: pd.DataFrame, limit: int | None, seed: int, *, per_speaker: int | None = None) -> np.ndarray:
    """Row positions of a seeded subset of ``limit`` segments, stratified by gender x emotion.

    ``per_speaker``: instead, ``per_speaker`` segments of every speaker (stratified by emotion
    within the speaker; all of a speaker's segments where there are fewer), so that group
    comparisons rest on every test speaker rather than on the segments of a few.
    """
    if per_speaker is not None:
        if limit is not None:
            raise ParameterError("give either limit (segments in all) or per_speaker (segments per speaker), not both")
        if isinstance(per_speaker, bool) or not isinstance(per_speaker, (int, np.integer)) or per_speaker < 1:
            raise ParameterError(f"per_speaker={per_speaker!r} must be a positive integer")
        speakers = meta["speaker"].astype(str).to_numpy()
        picked = []
        for k, spk in enumerate(sorted(set(speakers))):
            rows = np.flatnonzero(speakers == spk)
            sub = _stratified(meta.iloc[rows].reset_index(drop=True), per_speaker, np.random.default_rng([seed, k]))
            picked.append(rows[sub])
        return np.sort(np.concatenate(picked)) if picked else np.arange(0)
    n = len(meta)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ParameterError(f"limit={limit} must be >= 1")
    return _stratified(meta, limit, np.random.default_rng(seed))


def _stratified(meta: pd.DataFrame, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row positions of ``min(limit, len(meta))`` rows: proportional quotas per gender x
    emotion in ``rng``'s random order, the remainder filled in that order."""
    n = len(meta)
    if limit >= n:
        return np.arange(n)
    strata = (meta["gender"].astype(str) + "/" + meta["emotion"].astype(str)).to_numpy()
    order = rng.permutation(n)
    # round-robin over strata in a random order: proportional and deterministic
    picked: list[int] = []
    by = {s: [i for i in order if strata[i] == s] for s in sorted(set(strata))}
    quotas = {s: int(round(limit * len(v) / n)) for s, v in by.items()}
    for s, v in by.items():
        picked += v[: quotas[s]]
    rest = [i for i in order if i not in set(picked)]
    picked = (picked + rest)[:limit]
    return np.sort(np.array(picked, dtype=int))
