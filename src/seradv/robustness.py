"""The attack grid runner: every (attack x parameter set) cell on a trained run, resumable.

For each cell seradv runs the attack on the run's test segments (or a seeded, stratified
subset), and records per sample: true label, clean and adversarial prediction and confidence,
loss, and the perturbation's mean |delta| (the study's metric), L2, Linf and L0. It then
summarises per corpus/language x All / Male / Female into one tidy table.

Layout inside ``RUN_DIR/attacks/``::

    cells/<cell_id>.json          summary rows of one finished cell and the fingerprint of the model,
                                  preprocessing and samples it was computed on (written atomically, last)
    cells/<cell_id>.samples.csv   per-sample results of the cell (``attacked``, ``fooled_any``, ``robust``)
    cells/<cell_id>.lock          taken while a process computes the cell
    adv/<cell_id>.npy             the perturbations delta = x_adv - x (float16), optional
    subsets/<key>.json            segment ids of a seeded subset (``--limit``)
    results.csv, results.parquet  one row per cell x group (all finished cells)
    trust.csv, trust.json         trust checks (monotonicity, unbounded attack, black vs white)
    grid.yaml                     the request of the last call

A finished cell (its JSON and per-sample file are intact and its fingerprint matches the
run's current model weights, preprocessing and attacked samples) is never recomputed, so an
interrupted grid continues where it stopped and gives the same table; a cell computed on an
earlier model or preparation is recomputed, never reused, and left out of ``results.csv``.

The headline of every row is ``robust_accuracy`` (:func:`robust_flags`: correct before the
attack, attacked, and correct at every watched iterate and at the end); ``adv_accuracy`` is the
study's "accuracy on adversarial examples", which counts a sample that was wrong before and
that an attack moved onto its true class as correct.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
import yaml

from seradv.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json, save_npy
from seradv.dataset import Subset, load_subset, read_preprocessing
from seradv.errors import AttackError, ParameterError
from seradv.rundir import run_fingerprints
from seradv.evaluation import GROUPS

log = logging.getLogger(__name__)

__all__ = ["Cell", "plan_grid", "run_grid", "attack_cell", "summarise", "trust_checks",
           "worst_case", "worst_case_frames", "load_results", "select_subset", "robust_flags",
           "parse_where", "parse_params", "read_cell"]

#: Linf gradient attacks whose accuracy must not rise with the budget.
MONOTONE = {"fgsm": "eps", "bim": "eps", "pgd": "eps", "pgd_l2": "eps"}


@dataclass(frozen=True)
class Cell:
    """One attack with one parameter set."""

    attack: str
    params: dict
    backend: str
    early_stop: bool = False

    @property
    def label(self) -> str:
        """Short human label of the parameters, e.g. ``eps=0.25``."""
        from seradv.attacks import get_attack

        spec = get_attack(self.attack)
        shown = {k: v for k, v in self.params.items() if k in _varying(spec)}
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()) or "default"

    def cell_id(self, subset_key: str, seed: int) -> str:
        key: list = [self.attack, self.params, self.backend, subset_key, seed]
        if self.early_stop:  # appended only when set, so ids of existing cells do not change
            key.append("early_stop")
        blob = json.dumps(key, sort_keys=True, default=str)
        return f"{self.attack}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _varying(spec) -> set[str]:
    grid = list(spec.paper_grid) + list(spec.quick_grid)
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
              params: str | dict | None = None) -> list[Cell]:
    """The cells of ``grid`` ("paper" or "quick") for ``attacks`` (default: the study's eight).

    ``backend=None`` takes each attack's ``default_backend``; a named backend that an attack
    lacks is an error. ``where="theta=1"`` keeps only the parameter sets with those values
    (each name must be a parameter of some chosen attack; no cell left is an error that lists
    the grid's values). ``params="eps=0.3,max_iter=50"`` replaces the grid: one cell per
    attack with exactly these parameters (the others at their defaults). Every parameter set
    is validated before any work starts.
    """
    from seradv.attacks import STUDY_ATTACKS, get_attack

    if grid not in ("paper", "quick"):
        raise ParameterError(f"grid={grid!r} must be 'paper' or 'quick'")
    if params is not None and where:
        raise ParameterError("give either params (one parameter set outside the grid) or where "
                             "(a filter of the grid), not both")
    names = list(attacks) if attacks else list(STUDY_ATTACKS)
    cells = []
    for name in names:
        spec = get_attack(name)
        be = backend or spec.default_backend
        if be not in spec.backends:
            raise ParameterError(f"{name}: backend={backend!r} not available; choose one of {', '.join(spec.backends)}")
        sets = [parse_params(params, spec)] if params is not None else (spec.grid(grid) or [{}])
        for ps in sets:
            cells.append(Cell(attack=spec.name, params=spec.validate(ps), backend=be,
                              early_stop=bool(early_stop)))
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


def select_subset(meta: pd.DataFrame, limit: int | None, seed: int) -> np.ndarray:
    """Row positions of a seeded subset of ``limit`` segments, stratified by gender x emotion."""
    n = len(meta)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ParameterError(f"limit={limit} must be >= 1")
    rng = np.random.default_rng(seed)
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


def robust_flags(samples: pd.DataFrame) -> np.ndarray:
    """Per-sample robustness ``[shape=(n,)]``, bool: the one rule every table and statistic uses.

    A sample is robust when it was classified correctly before the attack, was attacked
    (``attacked``), and was classified correctly at every iterate the attack watched
    (``fooled_any`` false) and at the returned example (``pred_adv == label``): the
    AutoAttack convention. Per-sample files written before these columns existed are read
    with ``attacked = True`` and ``fooled_any = pred_adv != label``.
    """
    label = samples["label"].to_numpy()
    clean_ok = samples["pred_clean"].to_numpy() == label
    adv_ok = samples["pred_adv"].to_numpy() == label
    attacked = samples["attacked"].astype(bool).to_numpy() if "attacked" in samples else np.ones(len(label), bool)
    fooled = samples["fooled_any"].astype(bool).to_numpy() if "fooled_any" in samples else ~adv_ok
    return clean_ok & attacked & adv_ok & ~fooled


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _logits(model: torch.nn.Module, x: np.ndarray, device: str, batch: int = 128) -> np.ndarray:
    from seradv.evaluation import predict_logits

    return predict_logits(model, x, batch_size=batch, device=device).astype(np.float64)


def attack_cell(
    model: torch.nn.Module,
    data: Subset,
    cell: Cell,
    *,
    clip: tuple[float, float],
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    clean_logits: np.ndarray | None = None,
) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Run one cell; return per-sample results, the perturbation and run facts."""
    from seradv.attacks import perturbation_norms, run_attack

    x = data.x
    t0 = time.perf_counter()
    res = run_attack(cell.attack, model, x, data.y, cell.params, clip=clip, backend=cell.backend,
                     batch_size=batch_size, seed=seed, device=device, early_stop=cell.early_stop)
    wall = time.perf_counter() - t0
    if clean_logits is None:
        clean_logits = _logits(model, x, device)
    adv_logits = _logits(model, res.x_adv, device)
    pc, pa = _softmax(clean_logits), _softmax(adv_logits)
    y = data.y
    norms = perturbation_norms(x, res.x_adv)
    samples = data.meta[["segment_id", "utterance", "speaker", "gender", "emotion", "corpus", "language"]].copy()
    samples["label"] = y
    samples["pred_clean"] = clean_logits.argmax(1)
    samples["pred_adv"] = adv_logits.argmax(1)
    samples["conf_clean"] = pc.max(1)
    samples["conf_adv"] = pa.max(1)
    samples["loss_clean"] = -np.log(np.clip(pc[np.arange(len(y)), y], 1e-12, None))
    samples["loss_adv"] = -np.log(np.clip(pa[np.arange(len(y)), y], 1e-12, None))
    for k in ("mean_abs", "l2", "linf", "l0"):
        samples[k] = norms[k]
    # robustness (robust_flags): attacked at all, and fooled at some iterate or at the end
    samples["attacked"] = np.ones(len(y), bool) if res.attacked is None else res.attacked.astype(bool)
    fooled_end = samples["pred_adv"].to_numpy() != y
    samples["fooled_any"] = fooled_end if res.fooled_any is None else (res.fooled_any.astype(bool) | fooled_end)
    samples["robust"] = robust_flags(samples)
    facts = {"seconds": res.seconds, "wall_seconds": wall, "n_queries": res.n_queries,
             "n_grads": res.n_grads, "n_backward": res.n_backward, "backend": res.backend,
             "early_stop": cell.early_stop}
    return samples.reset_index(drop=True), (res.x_adv - x), facts


def summarise(samples: pd.DataFrame, cell: Cell, facts: dict, *, cell_id: str, n_total: int) -> list[dict]:
    """Rows (corpus x language x group) of one cell's results.

    ``robust_accuracy``: share of the ``n`` samples that are robust (:func:`robust_flags`);
    ``success_rate``: share of the clean-correct samples the attack *attacked* that it fooled
    (the ``n_not_attacked`` are neither fooled nor robust, so ``robust_accuracy`` equals
    ``n_clean_correct / n * (1 - success_rate)`` only when ``n_not_attacked`` is 0);
    ``adv_accuracy``: the study's accuracy on adversarial examples."""
    rows = []
    for (corpus, language), part0 in samples.groupby(["corpus", "language"], sort=True):
        for group, g in GROUPS.items():
            part = part0 if g is None else part0[part0["gender"] == g]
            if part.empty:
                continue
            clean_ok = part["pred_clean"] == part["label"]
            adv_ok = part["pred_adv"] == part["label"]
            robust = robust_flags(part)
            attacked = part["attacked"].astype(bool) if "attacked" in part else pd.Series(True, index=part.index)
            fooled = ~robust[clean_ok.to_numpy() & attacked.to_numpy()]
            rows.append({
                "cell_id": cell_id, "attack": cell.attack, "params": cell.label,
                "params_json": json.dumps(cell.params, sort_keys=True, default=str),
                "backend": cell.backend, "early_stop": bool(cell.early_stop), "corpus": corpus, "language": language, "group": group,
                "n": int(len(part)),
                "n_clean_correct": int(clean_ok.sum()),
                "n_not_attacked": int((~attacked).sum()),
                "robust_accuracy": float(robust.mean()),
                "clean_accuracy": float(clean_ok.mean()),
                "adv_accuracy": float(adv_ok.mean()),
                "success_rate": float(fooled.mean()) if fooled.size else float("nan"),
                "mean_abs_delta": float(part["mean_abs"].mean()),
                "mean_l2": float(part["l2"].mean()),
                "mean_linf": float(part["linf"].mean()),
                "mean_l0": float(part["l0"].mean()),
                "conf_clean": float(part["conf_clean"].mean()),
                "conf_adv": float(part["conf_adv"].mean()),
                "loss_clean": float(part["loss_clean"].mean()),
                "loss_adv": float(part["loss_adv"].mean()),
                "seconds": float(facts["seconds"]),
                "samples_per_s": float(n_total / facts["seconds"]) if facts["seconds"] > 0 else float("nan"),
                "n_queries": facts["n_queries"], "n_grads": facts["n_grads"],
            })
    return rows


def _subset_fingerprint(segment_ids) -> str:
    return hashlib.sha256(json.dumps([str(i) for i in segment_ids]).encode()).hexdigest()


def read_cell(path: Path, fingerprint: dict | None, segment_ids: list | None = None) -> tuple[dict | None, str]:
    """A finished cell's JSON if it is intact, complete and computed on ``fingerprint``, else
    ``(None, why)``. With ``segment_ids`` the per-sample file must hold exactly those samples."""
    if not path.exists():
        return None, "not computed"
    try:
        cell = read_json(path)
        rows = cell["rows"]
        if not isinstance(rows, list) or not rows:
            raise ValueError("no rows")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    if fingerprint is not None:
        have = cell.get("fingerprint") or {}
        for key in ("model", "preprocessing"):
            if have.get(key) != fingerprint.get(key):
                return None, f"computed on another {key} (stale)"
        if segment_ids is not None and have.get("subset") != _subset_fingerprint(segment_ids):
            return None, "computed on other samples (stale)"
    samples = path.with_name(path.name[: -len(".json")] + ".samples.csv")
    frame = _read_samples(samples)
    if frame is None or "segment_id" not in frame:
        return None, f"per-sample file {samples.name} missing or unreadable"
    ids = frame["segment_id"].tolist()
    # a file cut inside a row leaves NaN in its last columns; n_samples: the cell's total
    n = cell.get("n_samples", sum(int(r.get("n", 0)) for r in rows if r.get("group") == "All"))
    if len(ids) != n or frame.iloc[:, -1].isna().any():
        return None, f"per-sample file {samples.name} incomplete ({len(ids)} of {n} samples)"
    if segment_ids is not None and ids != [str(i) for i in segment_ids]:
        return None, f"per-sample file {samples.name} holds other samples than the run's current subset"
    return cell, "ok"


@contextlib.contextmanager
def _cell_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold ``path`` (``cells/<id>.lock``) exclusively; yields ``False`` without waiting when
    another process holds it and ``wait`` is false. Locks vanish with their process."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError as exc:  # e.g. ENOLCK on some network file systems
            log.warning("cannot lock %s (%s): cells are not protected against a second process", path, exc)
            yield True
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_grid(
    run_dir: str | Path,
    *,
    attacks: Iterable[str] | None = None,
    grid: str = "paper",
    limit: int | None = None,
    seed: int = 0,
    backend: str | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    save_examples: bool = True,
    trust: bool = True,
    early_stop: bool = False,
    where: str | None = None,
    params: str | dict | None = None,
) -> pd.DataFrame:
    """Run the attack grid on the test set of a trained run; resumable. Returns the results table.

    ``where="theta=1"`` runs only the grid's parameter sets with those values;
    ``params="eps=0.3,max_iter=50"`` runs exactly that parameter set instead of the grid
    (:func:`plan_grid`). A cell is reused only when it is intact and was computed on the run's
    current model weights, preprocessing and samples; two processes on one run directory
    never compute the same cell twice (a lock per cell).
    """
    from seradv.rundir import load_model, run_logging
    from seradv.progress import make_progress

    run_dir = Path(run_dir)
    info = read_preprocessing(run_dir)
    cells = plan_grid(attacks, grid, backend, early_stop, where, params)  # validates every parameter first
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batch_size={batch_size!r} must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"seed={seed!r} must be an integer >= 0")
    model = load_model(run_dir, device=device)
    from seradv.models import check_model

    try:
        check_model(model, len(info["classes"]), tuple(info["input_shape"]))
    except Exception as exc:
        raise AttackError(f"{run_dir}: the model does not fit the run's inputs: {exc}") from None
    out = run_dir / "attacks"
    (out / "cells").mkdir(parents=True, exist_ok=True)
    with run_logging(run_dir):
        fingerprint = run_fingerprints(run_dir)
        test = load_subset(run_dir, "test")
        idx = select_subset(test.meta, limit, seed)
        subset_key = "all" if len(idx) == len(test) else hashlib.sha256(idx.tobytes()).hexdigest()[:10]
        segment_ids = test.meta["segment_id"].iloc[idx].tolist()
        fingerprint = {**fingerprint, "subset": _subset_fingerprint(segment_ids)}
        if subset_key != "all":
            atomic_write_json(out / "subsets" / f"{subset_key}.json",
                              {"limit": limit, "seed": seed, "segment_ids": segment_ids})
        lo, hi = info["clip_values"]
        x = test.x[idx]
        outside = float(np.mean((x < lo) | (x > hi)))
        if outside > 0:
            log.info("clean test features clipped to the threat box [%g, %g]: %.4f %% of cells", lo, hi, 100 * outside)
        data = Subset(x=np.clip(x, lo, hi).astype(np.float32), y=test.y[idx],
                      meta=test.meta.iloc[idx].reset_index(drop=True), classes=test.classes)
        atomic_write_text(out / "grid.yaml", yaml.safe_dump({
            "grid": grid, "attacks": sorted({c.attack for c in cells}), "limit": limit, "seed": seed,
            "backend": backend, "early_stop": bool(early_stop), "where": where,
            "params": params if not isinstance(params, dict) else json.dumps(params, sort_keys=True),
            "batch_size": batch_size, "device": device, "n_samples": len(data),
            "subset": subset_key, "clip_values": [lo, hi], "clean_cells_clipped_fraction": outside,
            "fingerprint": fingerprint,
        }, sort_keys=False))
        clean_logits = _logits(model, data.x, device)
        todo = [(c, c.cell_id(subset_key, seed)) for c in cells]

        def run_one(cell: Cell, cid: str, *, wait: bool) -> bool:
            """Compute the cell unless it is current; ``False`` if another process holds it."""
            path = out / "cells" / f"{cid}.json"
            with _cell_lock(out / "cells" / f"{cid}.lock", wait=wait) as mine:
                if not mine:
                    return False
                done, why = read_cell(path, fingerprint, segment_ids)
                if done is not None:
                    log.info("cell %s (%s %s) already done on this model and data; reused", cid, cell.attack, cell.label)
                    return True
                if why != "not computed":
                    log.warning("cell %s (%s %s) %s: recomputed", cid, cell.attack, cell.label, why)
                samples, delta, facts = attack_cell(model, data, cell, clip=(lo, hi), seed=seed,
                                                    batch_size=batch_size, device=device,
                                                    clean_logits=clean_logits)
                rows = [{**r, "seed": seed, "subset": subset_key}
                        for r in summarise(samples, cell, facts, cell_id=cid, n_total=len(data))]
                atomic_write_text(out / "cells" / f"{cid}.samples.csv", samples.to_csv(index=False))
                if save_examples:
                    save_npy(out / "adv" / f"{cid}.npy", delta.astype(np.float16))
                atomic_write_json(path, {"cell_id": cid, "attack": cell.attack, "params": cell.params,
                                         "label": cell.label, "backend": cell.backend, "seed": seed,
                                         "subset": subset_key, "n_samples": len(data), "fingerprint": fingerprint,
                                         "facts": facts, "rows": rows})
                allr = rows[0]
                log.info("%s %s: n %d, clean %.3f -> robust %.3f (accuracy on adversarial examples, "
                         "as the study: %.3f), %d not attacked, mean|d| %.4g, %.1f s",
                         cell.attack, cell.label, allr["n"], allr["clean_accuracy"], allr["robust_accuracy"],
                         allr["adv_accuracy"], allr["n_not_attacked"], allr["mean_abs_delta"], facts["seconds"])
                return True

        with make_progress() as prog:
            task = prog.add_task("attacks", total=len(todo), status="")
            busy = []
            for cell, cid in todo:
                prog.update(task, status=f"{cell.attack} {cell.label}")
                if run_one(cell, cid, wait=False):
                    prog.advance(task)
                else:
                    log.info("cell %s (%s %s) is being computed by another process; later", cid, cell.attack, cell.label)
                    busy.append((cell, cid))
            for cell, cid in busy:  # wait for the other process, then reuse (or compute) its cell
                prog.update(task, status=f"{cell.attack} {cell.label} (waiting)")
                run_one(cell, cid, wait=True)
                prog.advance(task)
        results = load_results(run_dir)
        if trust:
            checks = trust_checks(results, model=model, data=data, clip=(lo, hi), device=device,
                                  samples=lambda cid: _read_samples(out / "cells" / f"{cid}.samples.csv"))
            atomic_write_text(out / "trust.csv", checks.to_csv(index=False))
            atomic_write_json(out / "trust.json", checks.to_dict(orient="records"))
            for r in checks.itertuples():
                if r.status != "pass":
                    log.warning("trust check %s (%s, %s %s): %s", r.check, r.attack, r.corpus, r.group, r.detail)
    return results


def _read_samples(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, dtype={"utterance": str, "speaker": str, "segment_id": str})
    except (FileNotFoundError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """All current finished cells of a run as one table (also written to results.csv/.parquet).

    Cells computed on another model or preparation than the run's current one (stale), and
    cells whose files are truncated, are left out with a warning naming them.
    """
    run_dir = Path(run_dir)
    out = run_dir / "attacks"
    fingerprint = run_fingerprints(run_dir)
    rows, skipped = [], []
    for f in sorted((out / "cells").glob("*.json")):
        cell, why = read_cell(f, fingerprint)
        if cell is None:
            skipped.append(f"{f.name} ({why})")
            continue
        rows += cell["rows"]
    if skipped:
        log.warning("%d attack cell(s) left out of the results: %s; `seradv attack` recomputes them",
                    len(skipped), "; ".join(skipped))
    table = pd.DataFrame(rows)
    if not table.empty:
        table = pd.concat([table, worst_case(run_dir, table)], ignore_index=True)
    if table.empty:
        for name in ("results.csv", "results.parquet"):
            (out / name).unlink(missing_ok=True)  # nothing current: no stale table either
        return table
    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    try:
        import io

        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        atomic_write_bytes(out / "results.parquet", buf.getvalue())
    except Exception as exc:  # noqa: BLE001 - parquet is a convenience copy
        log.warning("could not write results.parquet: %s", exc)
    return table


#: Tolerance of a per-sample Linf against a declared budget (float32 round-off of x + eps).
def _budget_tol(eps: float) -> float:
    return 1e-5 + 1e-4 * float(eps)


def _budget_attacks() -> set[str]:
    """Attacks with a declared Linf budget ``eps`` (FGSM, BIM, PGD, Square, ...)."""
    from seradv.attacks import ATTACKS

    return {n for n, s in ATTACKS.items() if s.norm == "linf" and "eps" in s.param_names}


def worst_case_frames(run_dir: str | Path, table: pd.DataFrame) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Per-sample worst case at every declared Linf budget, per attacked subset.

    For a budget ``eps`` (each ``eps`` of a cell of an attack with a declared Linf budget) a
    sample is robust when it was classified correctly before any attack and no attack fooled
    it with a perturbation inside the budget: every cell of any attack on the same samples
    counts for the samples it attacked whose per-sample Linf is ``<= eps`` (cells of smaller
    budgets included; minimal-perturbation attacks where their Linf falls inside). A budget
    cell whose per-sample Linf exceeds its own declared eps is left out with a warning.

    Returns ``{worst_cell_id: (facts, samples)}``; ``samples`` has the columns of a cell's
    per-sample file with ``robust`` (and ``pred_adv`` -1 where some attack fooled the sample).
    """
    cells_dir = Path(run_dir) / "attacks" / "cells"
    res = table[table["attack"] != "worst_case"]
    if res.empty:
        return {}
    budget = _budget_attacks()
    first = res.drop_duplicates("cell_id")
    frames: dict[str, pd.DataFrame] = {}
    for cid in first["cell_id"]:
        f = _read_samples(cells_dir / f"{cid}.samples.csv")
        if f is not None:
            frames[cid] = f.sort_values("segment_id", kind="stable").reset_index(drop=True)
    out: dict[str, tuple[dict, pd.DataFrame]] = {}
    by_ids: dict[tuple, list[str]] = {}
    for cid, f in frames.items():
        by_ids.setdefault(tuple(f["segment_id"]), []).append(cid)
    meta = first.set_index("cell_id")
    for ids, cids in by_ids.items():
        declared = {}
        for cid in cids:
            if meta.loc[cid, "attack"] in budget:
                eps = json.loads(meta.loc[cid, "params_json"]).get("eps")
                f = frames[cid]
                over = f["linf"].to_numpy() > eps + _budget_tol(eps)
                if over.any():
                    log.warning("cell %s (%s eps=%g): %d sample(s) exceed the declared Linf budget (max %.4g); "
                                "not a budget cell of the worst case (its samples count only at budgets above "
                                "their Linf)", cid, meta.loc[cid, "attack"], eps, int(over.sum()),
                                float(f["linf"].max()))
                    continue
                declared[cid] = float(eps)
        for eps in sorted(set(declared.values())):
            base = frames[cids[0]]
            robust = (base["pred_clean"] == base["label"]).to_numpy().copy()
            members = []
            for cid in cids:
                f = frames[cid]
                attacked = f["attacked"].astype(bool).to_numpy() if "attacked" in f else np.ones(len(f), bool)
                inside = attacked & (f["linf"].to_numpy() <= eps + _budget_tol(eps))
                if not inside.any():
                    continue
                clean_ok = (f["pred_clean"] == f["label"]).to_numpy()
                if cid in declared and declared[cid] <= eps:
                    # every iterate of a budget cell lies inside its eps ball: fooled_any counts
                    fooled = ~robust_flags(f) & clean_ok
                else:
                    # other cells: only the returned example is known to lie inside the budget
                    fooled = clean_ok & (f["pred_adv"] != f["label"]).to_numpy()
                robust &= ~(inside & fooled)
                members.append(cid)
            if not any(c in declared and declared[c] <= eps for c in members):
                continue
            key = hashlib.sha256("|".join(map(str, ids)).encode()).hexdigest()[:6]
            wid = f"worst-{key}-eps{eps:g}"
            per_attack = ("attacked", "fooled_any", "pred_adv", "conf_adv", "loss_adv", "mean_abs", "l2", "linf", "l0")
            samples = base.drop(columns=[c for c in per_attack if c in base]).copy()
            samples["robust"] = robust
            samples["pred_adv"] = np.where(robust, samples["label"], -1)  # -1: fooled by some attack
            attacks = "+".join(sorted({str(meta.loc[c, "attack"]) for c in members}))
            out[wid] = ({"eps": eps, "attacks": attacks, "members": sorted(members)}, samples)
    return out


def worst_case(run_dir: str | Path, table: pd.DataFrame) -> pd.DataFrame:
    """AutoAttack-style worst case per declared Linf budget (:func:`worst_case_frames`) as
    results rows (``attack == "worst_case"``, ``robust_accuracy`` its headline)."""
    rows = []
    for wid, (facts, base) in worst_case_frames(run_dir, table).items():
        for (corpus, language), part0 in base.groupby(["corpus", "language"]):
            for group, g in GROUPS.items():
                part = part0 if g is None else part0[part0["gender"] == g]
                if part.empty:
                    continue
                clean = (part["pred_clean"] == part["label"])
                rows.append({"cell_id": wid, "attack": "worst_case",
                             "params": f"eps={facts['eps']:g} ({facts['attacks']})",
                             "params_json": json.dumps({"eps": facts["eps"], "attacks": facts["attacks"]}),
                             "members": ";".join(facts["members"]), "backend": "mixed",
                             "corpus": corpus, "language": language, "group": group, "n": int(len(part)),
                             "n_clean_correct": int(clean.sum()), "n_not_attacked": 0,
                             "robust_accuracy": float(part["robust"].mean()),
                             "clean_accuracy": float(clean.mean()),
                             "adv_accuracy": float(part["robust"].mean()),
                             "success_rate": float((~part["robust"][clean]).mean()) if clean.any() else float("nan")})
    return pd.DataFrame(rows)


def _metric(rows: pd.DataFrame) -> pd.Series:
    """Robust accuracy where every row has it (results of this version), else the study-style
    accuracy for all rows (tables built by hand or by older versions): never a mix."""
    if "robust_accuracy" in rows and rows["robust_accuracy"].notna().all():
        return rows["robust_accuracy"]
    if "adv_accuracy" in rows:
        return rows["adv_accuracy"]
    return pd.Series(np.nan, index=rows.index)


def _setting(pj: str) -> str:
    """``params_json`` without ``eps``: the settings one monotone series must share."""
    d = json.loads(pj) if isinstance(pj, str) and pj else {}
    d.pop("eps", None)
    return json.dumps(d, sort_keys=True)


def _where(r) -> dict:
    return {"corpus": getattr(r, "corpus", ""), "language": getattr(r, "language", ""),
            "group": getattr(r, "group", "All")}


def trust_checks(
    results: pd.DataFrame,
    *,
    model: torch.nn.Module | None = None,
    data: Subset | None = None,
    clip: tuple[float, float] | None = None,
    device: str = "cpu",
    tolerance: float = 0.02,
    n_unbounded: int = 32,
    samples=None,
) -> pd.DataFrame:
    """Checks that a careful reviewer would run; each row says pass / warn / fail, why, and for
    which corpus, language and group (All).

    * ``monotone``: robust accuracy must not rise with the declared budget ``eps`` by more than
      ``tolerance`` (FGSM: warn, a single step can overshoot; BIM/PGD: fail, a sign of gradient
      masking or a bug).
    * ``budget_used``: FGSM / BIM whose per-sample Linf stays far below the declared eps
      (under a tenth of it for more than 5 % of the clean-correct samples) are taking steps
      along zero gradients: masked or broken gradients (fail). PGD is not checked: its random
      start alone reaches about eps.
    * ``unbounded``: BIM (PGD without a random start) with eps as wide as the clip box must
      leave robust accuracy <= 0.05 on the first ``n_unbounded`` samples; otherwise gradients
      are masked or broken (fail).
    * ``black_vs_white``: per sample, a black-box attack that fools a sample at Linf ``d``
      while every white-box attack with a declared Linf budget ``>= d`` on the same samples
      left it robust; more than ``max(1, tolerance * n)`` such samples suggest gradient
      masking (warn). Without per-sample files (``samples``: ``cell_id -> DataFrame``) the
      comparison is made on the cells' accuracies, against declared budgets ``>=`` the
      black-box cell's mean Linf. Minimal-perturbation attacks (DeepFool, JSMA, C&W) are not
      comparables: their Linf is an outcome, not a budget.
    """
    rows = []
    cols = ["check", "attack", "corpus", "language", "group", "status", "detail"]
    if results.empty or not {"attack", "params_json", "n"} <= set(results.columns):
        return pd.DataFrame(rows, columns=cols)
    res = results[results["attack"] != "worst_case"]
    allr = res[res["group"] == "All"] if "group" in res else res
    allr = allr.assign(eps_=allr["params_json"].map(lambda s: json.loads(s).get("eps")),
                       setting_=allr["params_json"].map(_setting))
    keys = [k for k in ("corpus", "language", "backend", "early_stop", "n", "seed", "subset", "setting_") if k in allr]
    for attack, key in MONOTONE.items():
        part = allr[allr["attack"] == attack]
        if len(part) < 2:
            continue
        for _, p in part.groupby(keys, dropna=False):
            p = p.drop_duplicates("eps_", keep="last")
            if len(p) < 2:
                continue
            p = p.assign(metric_=_metric(p)).sort_values("eps_", kind="stable")
            acc = p["metric_"].to_numpy()
            if np.isnan(acc).any():
                rows.append({"check": "monotone", "attack": attack, **_where(p.iloc[0]), "status": "warn",
                             "detail": "robust accuracy unavailable for some eps: not checked"})
                continue
            rises = [(p["eps_"].iloc[i], p["eps_"].iloc[i + 1], acc[i], acc[i + 1])
                     for i in range(len(acc) - 1) if acc[i + 1] > acc[i] + tolerance]
            status = "pass" if not rises else ("warn" if attack == "fgsm" else "fail")
            detail = ("robust accuracy never rises with eps" if not rises else
                      "; ".join(f"eps {a:g}->{b:g}: {x:.3f}->{y:.3f}" for a, b, x, y in rises)
                      + (" (FGSM's single step can overshoot; iterative attacks should not)"
                         if attack == "fgsm" else " (possible gradient masking or implementation fault)"))
            rows.append({"check": "monotone", "attack": attack, **_where(p.iloc[0]), "status": status, "detail": detail})
    # budget_used: zero gradients leave FGSM/BIM far inside their ball (PGD's random start alone
    # reaches ~eps, so it cannot show there; the unbounded check covers it)
    allr = allr.assign(metric_=_metric(allr))
    for r in allr[allr["attack"].isin(["fgsm", "bim"])].itertuples():
        if getattr(r, "early_stop", False) or r.eps_ is None or not np.isfinite(r.eps_):
            continue
        f = samples(r.cell_id) if samples is not None else None
        if f is not None:
            ok = (f["pred_clean"] == f["label"]).to_numpy()
            linf = f["linf"].to_numpy()[ok]
            if not linf.size:
                continue
            share = float(np.mean(linf < r.eps_ / 10))
            bad = share > 0.05
            detail = (f"{r.attack} ({r.params}): {share:.1%} of {linf.size} clean-correct samples moved less than "
                      f"eps/10 (median Linf {np.median(linf):.3g} of eps {r.eps_:g})")
        else:
            bad = r.mean_linf < r.eps_ / 2
            detail = f"{r.attack} ({r.params}): mean Linf {r.mean_linf:.3g} of eps {r.eps_:g}"
        rows.append({"check": "budget_used", "attack": r.attack, **_where(r), "status": "fail" if bad else "pass",
                     "detail": detail + (" - steps along zero gradients: masked or broken gradients" if bad else "")})
    if model is not None and data is not None and clip is not None:
        from seradv.attacks import run_attack

        k = min(n_unbounded, len(data))
        lo, hi = clip
        width = float(hi - lo)
        res_u = run_attack("bim", model, data.x[:k], data.y[:k],
                           {"eps": width, "eps_step": width / 20, "max_iter": 50},
                           clip=clip, backend="torch" if _has_backend("bim", "torch") else "art", seed=0, device=device)
        pred = _logits(model, res_u.x_adv, device).argmax(1)
        fooled = pred != data.y[:k]
        if res_u.fooled_any is not None:
            fooled |= res_u.fooled_any
        clean_ok = _logits(model, data.x[:k], device).argmax(1) == data.y[:k]
        acc = float(np.mean(clean_ok & ~fooled))
        meta = data.meta.iloc[0]
        rows.append({"check": "unbounded", "attack": "bim", "corpus": meta.get("corpus", ""),
                     "language": meta.get("language", ""), "group": "All",
                     "status": "pass" if acc <= 0.05 else "fail",
                     "detail": f"BIM (no random start) eps={width:g} (the whole clip box), 50 steps, {k} samples: "
                               f"robust accuracy {acc:.3f}"
                               + ("" if acc <= 0.05 else " > 0.05: gradients may be masked or broken")})
    white = allr[(allr["attack"].map(_kind) == "white-box") & allr["attack"].isin(list(_budget_attacks()))
                 & allr["eps_"].notna()]
    black = allr[allr["attack"].map(_kind) == "black-box"]
    for r in black.itertuples():
        comp = white[white["n"] == r.n]
        for k2 in ("corpus", "language"):
            if k2 in comp:
                comp = comp[comp[k2] == getattr(r, k2)]
        fb = samples(r.cell_id) if samples is not None else None
        fws = {c: samples(c) for c in comp["cell_id"]} if samples is not None else {}
        if fb is not None and fws and all(f is not None for f in fws.values()):
            fb = fb.sort_values("segment_id").reset_index(drop=True)
            fws = {c: f.sort_values("segment_id").reset_index(drop=True) for c, f in fws.items()}
            fws = {c: f for c, f in fws.items() if f["segment_id"].tolist() == fb["segment_id"].tolist()}
            if not fws:
                continue
            ok = (fb["pred_clean"] == fb["label"]).to_numpy()
            b_att = fb["attacked"].astype(bool).to_numpy() if "attacked" in fb else np.ones(len(fb), bool)
            b_fooled = ok & b_att & ~robust_flags(fb)  # never-attacked samples were not fooled
            d = fb["linf"].to_numpy()
            covered = np.zeros(len(fb), bool)
            white_robust = np.ones(len(fb), bool)
            eps_of = dict(zip(comp["cell_id"], comp["eps_"]))
            for c, f in fws.items():
                inside = eps_of[c] + _budget_tol(eps_of[c]) >= d
                covered |= inside
                white_robust &= ~inside | robust_flags(f)
            beats = b_fooled & covered & white_robust
            m = int(beats.sum())
            bad = m > max(1, tolerance * len(fb))
            detail = (f"{r.attack} ({r.params}) fooled {m} of {int((b_fooled & covered).sum())} samples at a Linf "
                      f"where every white-box attack with that budget ({', '.join(sorted(set(comp['attack'])))}) "
                      f"left them robust" + (f"; {int((~b_att).sum())} not attacked" if (~b_att).any() else ""))
        else:
            comparable = comp[comp["eps_"] >= r.mean_linf]
            if comparable.empty:
                continue
            best = comparable["metric_"].min()
            bad = r.metric_ < best - tolerance
            detail = (f"{r.attack} ({r.params}) robust accuracy {r.metric_:.3f} at mean Linf {r.mean_linf:.3g}; "
                      f"best white-box Linf attack with a budget >= that Linf: {best:.3f}")
        rows.append({"check": "black_vs_white", "attack": r.attack, **_where(r),
                     "status": "warn" if bad else "pass",
                     "detail": detail + (" - black-box beats white-box: possible gradient masking" if bad else "")})
    return pd.DataFrame(rows, columns=cols)


def _kind(name: str) -> str:
    from seradv.attacks import ATTACKS

    return ATTACKS[name].kind if name in ATTACKS else "other"


def _norm(name: str) -> str:
    from seradv.attacks import ATTACKS

    return ATTACKS[name].norm if name in ATTACKS else "other"


def _has_backend(name: str, backend: str) -> bool:
    from seradv.attacks import ATTACKS

    return name in ATTACKS and backend in ATTACKS[name].backends


