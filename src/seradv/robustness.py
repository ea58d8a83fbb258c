"""The attack grid runner: every (attack x parameter set) cell on a trained run, resumable.

For each cell seradv runs the attack on the run's test segments (or a seeded, stratified
subset), and records per sample: true label, clean and adversarial prediction and confidence,
loss, and the perturbation's mean |delta| (the study's metric), L2, Linf and L0. It then
summarises per corpus/language x All / Male / Female into one tidy table.

Layout inside ``RUN_DIR/attacks/``::

    cells/<cell_id>.json          summary rows of one finished cell (written atomically, last)
    cells/<cell_id>.samples.csv   per-sample results of the cell
    adv/<cell_id>.npy             the perturbations delta = x_adv - x (float16), optional
    subsets/<key>.json            segment ids of a seeded subset (``--limit``)
    results.csv, results.parquet  one row per cell x group (all finished cells)
    trust.csv, trust.json         trust checks (monotonicity, unbounded attack, black vs white)
    grid.yaml                     the request of the last call

A finished cell (its JSON exists and matches the request) is never recomputed, so an
interrupted grid continues where it stopped and gives the same table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch
import yaml

from seradv.cache import atomic_write_json, atomic_write_text, read_json, save_npy
from seradv.dataset import Subset, load_subset, read_preprocessing
from seradv.errors import AttackError, ParameterError
from seradv.evaluation import GROUPS

log = logging.getLogger(__name__)

__all__ = ["Cell", "plan_grid", "run_grid", "attack_cell", "summarise", "trust_checks",
           "worst_case", "load_results", "select_subset"]

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


def plan_grid(attacks: Iterable[str] | None, grid: str = "paper", backend: str | None = None,
              early_stop: bool = False, where: str | None = None) -> list[Cell]:
    """The cells of ``grid`` ("paper" or "quick") for ``attacks`` (default: the study's eight).

    ``backend=None`` takes each attack's ``default_backend``; a named backend that an attack
    lacks is an error. ``where="theta=1"`` keeps only the parameter sets with those values
    (each name must be a parameter of some chosen attack; no cell left is an error). Every
    parameter set is validated before any work starts.
    """
    from seradv.attacks import STUDY_ATTACKS, get_attack

    if grid not in ("paper", "quick"):
        raise ParameterError(f"grid={grid!r} must be 'paper' or 'quick'")
    names = list(attacks) if attacks else list(STUDY_ATTACKS)
    cells = []
    for name in names:
        spec = get_attack(name)
        be = backend or spec.default_backend
        if be not in spec.backends:
            raise ParameterError(f"{name}: backend={backend!r} not available; choose one of {', '.join(spec.backends)}")
        sets = spec.grid(grid) or [{}]
        for params in sets:
            cells.append(Cell(attack=spec.name, params=spec.validate(params), backend=be,
                              early_stop=bool(early_stop)))
    cond = parse_where(where)
    if cond:
        known = set().union(*(get_attack(c.attack).param_names for c in cells)) if cells else set()
        unknown = sorted(set(cond) - known)
        if unknown:
            raise ParameterError(f"where: {', '.join(unknown)} is not a parameter of {', '.join(names)}; "
                                 f"parameters: {', '.join(sorted(known))}")
        cells = [c for c in cells if _matches(c.params, cond)]
        if not cells:
            raise ParameterError(f"where={where!r} selects no cell of the {grid} grid of {', '.join(names)}")
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
    """Rows (corpus x language x group) of one cell's results."""
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
) -> pd.DataFrame:
    """Run the attack grid on the test set of a trained run; resumable. Returns the results table.

    ``where="theta=1"`` runs only the grid's parameter sets with those values (:func:`plan_grid`).
    """
    from seradv.pipeline import load_model, run_logging
    from seradv.progress import make_progress

    run_dir = Path(run_dir)
    info = read_preprocessing(run_dir)
    cells = plan_grid(attacks, grid, backend, early_stop, where)  # validates every parameter first
    if batch_size < 1:
        raise ParameterError(f"batch_size={batch_size} must be >= 1")
    model = load_model(run_dir, device=device)
    from seradv.models import check_model

    try:
        check_model(model, len(info["classes"]), tuple(info["input_shape"]))
    except Exception as exc:
        raise AttackError(f"{run_dir}: the model does not fit the run's inputs: {exc}") from None
    out = run_dir / "attacks"
    (out / "cells").mkdir(parents=True, exist_ok=True)
    with run_logging(run_dir):
        test = load_subset(run_dir, "test")
        idx = select_subset(test.meta, limit, seed)
        subset_key = "all" if len(idx) == len(test) else hashlib.sha256(idx.tobytes()).hexdigest()[:10]
        if subset_key != "all":
            atomic_write_json(out / "subsets" / f"{subset_key}.json",
                              {"limit": limit, "seed": seed, "segment_ids": test.meta["segment_id"].iloc[idx].tolist()})
        lo, hi = info["clip_values"]
        x = test.x[idx]
        outside = float(np.mean((x < lo) | (x > hi)))
        if outside > 0:
            log.info("clean test features clipped to the threat box [%g, %g]: %.4f %% of cells", lo, hi, 100 * outside)
        data = Subset(x=np.clip(x, lo, hi).astype(np.float32), y=test.y[idx],
                      meta=test.meta.iloc[idx].reset_index(drop=True), classes=test.classes)
        atomic_write_text(out / "grid.yaml", yaml.safe_dump({
            "grid": grid, "attacks": sorted({c.attack for c in cells}), "limit": limit, "seed": seed,
            "backend": backend, "early_stop": bool(early_stop), "batch_size": batch_size, "device": device, "n_samples": len(data),
            "subset": subset_key, "clip_values": [lo, hi], "clean_cells_clipped_fraction": outside,
        }, sort_keys=False))
        clean_logits = _logits(model, data.x, device)
        todo = [(c, c.cell_id(subset_key, seed)) for c in cells]
        with make_progress() as prog:
            task = prog.add_task("attacks", total=len(todo), status="")
            for cell, cid in todo:
                path = out / "cells" / f"{cid}.json"
                prog.update(task, status=f"{cell.attack} {cell.label}")
                if path.exists():
                    log.info("cell %s (%s %s) already done; reused", cid, cell.attack, cell.label)
                    prog.advance(task)
                    continue
                samples, delta, facts = attack_cell(model, data, cell, clip=(lo, hi), seed=seed,
                                                    batch_size=batch_size, device=device,
                                                    clean_logits=clean_logits)
                rows = summarise(samples, cell, facts, cell_id=cid, n_total=len(data))
                samples.to_csv(out / "cells" / f"{cid}.samples.csv", index=False)
                if save_examples:
                    save_npy(out / "adv" / f"{cid}.npy", delta.astype(np.float16))
                atomic_write_json(path, {"cell_id": cid, "attack": cell.attack, "params": cell.params,
                                         "label": cell.label, "backend": cell.backend, "seed": seed,
                                         "subset": subset_key, "facts": facts, "rows": rows})
                allr = rows[0]
                log.info("%s %s: clean %.3f -> adv %.3f, mean|d| %.4g, %.1f s", cell.attack, cell.label,
                         allr["clean_accuracy"], allr["adv_accuracy"], allr["mean_abs_delta"], facts["seconds"])
                prog.advance(task)
        results = load_results(run_dir)
        if trust:
            checks = trust_checks(results, model=model, data=data, clip=(lo, hi), device=device)
            checks.to_csv(out / "trust.csv", index=False)
            atomic_write_json(out / "trust.json", checks.to_dict(orient="records"))
            for r in checks.itertuples():
                if r.status != "pass":
                    log.warning("trust check %s (%s): %s", r.check, r.attack, r.detail)
    return results


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """All finished cells of a run as one table (also written to results.csv/.parquet)."""
    out = Path(run_dir) / "attacks"
    rows = []
    for f in sorted((out / "cells").glob("*.json")):
        rows += read_json(f)["rows"]
    table = pd.DataFrame(rows)
    if not table.empty:
        table = pd.concat([table, worst_case(run_dir, table)], ignore_index=True)
        table.to_csv(out / "results.csv", index=False)
        try:
            table.to_parquet(out / "results.parquet", index=False)
        except Exception as exc:  # noqa: BLE001 - parquet is a convenience copy
            log.warning("could not write results.parquet: %s", exc)
    return table


def worst_case(run_dir: str | Path, table: pd.DataFrame) -> pd.DataFrame:
    """AutoAttack-style worst case per sample at each Linf budget ``eps``.

    A sample counts as robust at ``eps`` only if every Linf attack run at that ``eps``
    (FGSM, BIM, PGD, Square, on the same samples) left it correctly classified.
    """
    out = Path(run_dir) / "attacks" / "cells"
    linf = table[table["attack"].isin(["fgsm", "bim", "pgd", "square"])]
    rows = []
    for eps, grp in linf.groupby(linf["params_json"].map(lambda s: json.loads(s).get("eps"))):
        cids = sorted(set(grp["cell_id"]))
        if len(cids) < 2:
            continue
        frames = [pd.read_csv(out / f"{c}.samples.csv") for c in cids]
        ids = [set(f["segment_id"]) for f in frames]
        if any(s != ids[0] for s in ids):
            continue  # different subsets: no per-sample worst case
        base = frames[0].sort_values("segment_id").reset_index(drop=True)
        robust = np.ones(len(base), bool)
        for f in frames:
            f = f.sort_values("segment_id").reset_index(drop=True)
            robust &= (f["pred_adv"] == f["label"]).to_numpy()
        base = base.assign(robust=robust)
        attacks = "+".join(sorted(set(grp["attack"])))
        for (corpus, language), part0 in base.groupby(["corpus", "language"]):
            for group, g in GROUPS.items():
                part = part0 if g is None else part0[part0["gender"] == g]
                if part.empty:
                    continue
                rows.append({"cell_id": f"worst-eps{eps}", "attack": "worst_case", "params": f"eps={eps:g} ({attacks})",
                             "params_json": json.dumps({"eps": eps, "attacks": attacks}), "backend": "mixed",
                             "corpus": corpus, "language": language, "group": group, "n": int(len(part)),
                             "clean_accuracy": float((part["pred_clean"] == part["label"]).mean()),
                             "adv_accuracy": float(part["robust"].mean())})
    return pd.DataFrame(rows)


def trust_checks(
    results: pd.DataFrame,
    *,
    model: torch.nn.Module | None = None,
    data: Subset | None = None,
    clip: tuple[float, float] | None = None,
    device: str = "cpu",
    tolerance: float = 0.02,
    n_unbounded: int = 32,
) -> pd.DataFrame:
    """Checks that a careful reviewer would run; each row says pass / warn / fail and why.

    * ``monotone``: adversarial accuracy must not rise with the budget (FGSM: warn, since a
      single step can overshoot; BIM/PGD: fail, a sign of gradient masking or a bug).
    * ``unbounded``: PGD with an eps as wide as the clip box must reach near-zero accuracy
      (<= 0.05) on the first ``n_unbounded`` samples; otherwise gradients are masked/broken.
    * ``black_vs_white``: a black-box attack that beats every white-box Linf attack (FGSM,
      BIM, PGD, C&W Linf) by more than ``tolerance`` at a smaller or equal Linf perturbation
      suggests gradient masking. Minimal-perturbation L2/L0 attacks (DeepFool, JSMA, C&W L2)
      are not comparables: their Linf is an outcome, not a budget, and DeepFool moves a
      sample away from its *prediction*, so on a weak model it can leave accuracy high at a
      large Linf (seen on the EmoDB speaker-split model: 0.31 at Linf 5.6).
    """
    rows = []
    allr = results[(results["group"] == "All") & (results["attack"] != "worst_case")]
    for attack, key in MONOTONE.items():
        part = allr[allr["attack"] == attack]
        if len(part) < 2:
            continue
        for subset_n, p in part.groupby("n"):
            p = p.assign(budget=p["params_json"].map(lambda s: json.loads(s).get(key))).sort_values("budget")
            acc = p["adv_accuracy"].to_numpy()
            rises = [(p["budget"].iloc[i], p["budget"].iloc[i + 1], acc[i], acc[i + 1])
                     for i in range(len(acc) - 1) if acc[i + 1] > acc[i] + tolerance]
            status = "pass" if not rises else ("warn" if attack == "fgsm" else "fail")
            detail = ("accuracy never rises with eps" if not rises else
                      "; ".join(f"eps {a:g}->{b:g}: {x:.3f}->{y:.3f}" for a, b, x, y in rises)
                      + (" (FGSM's single step can overshoot; iterative attacks should not)"
                         if attack == "fgsm" else " (possible gradient masking or implementation fault)"))
            rows.append({"check": "monotone", "attack": attack, "status": status, "detail": detail})
    if model is not None and data is not None and clip is not None:
        from seradv.attacks import run_attack

        k = min(n_unbounded, len(data))
        lo, hi = clip
        res = run_attack("pgd", model, data.x[:k], data.y[:k],
                         {"eps": float(hi - lo), "eps_step": float(hi - lo) / 20, "max_iter": 50},
                         clip=clip, backend="torch" if _has_backend("pgd", "torch") else "art", seed=0, device=device)
        acc = float(np.mean(_logits(model, res.x_adv, device).argmax(1) == data.y[:k]))
        rows.append({"check": "unbounded", "attack": "pgd", "status": "pass" if acc <= 0.05 else "fail",
                     "detail": f"PGD eps={hi - lo:g} (the whole clip box), 50 steps, {k} samples: accuracy {acc:.3f}"
                               + ("" if acc <= 0.05 else " > 0.05: gradients may be masked or broken")})
    white = allr[(allr["attack"].map(_kind) == "white-box") & (allr["attack"].map(_norm) == "linf")]
    black = allr[allr["attack"].map(_kind) == "black-box"]
    for r in black.itertuples():
        comparable = white[(white["mean_linf"] >= r.mean_linf) & (white["n"] == r.n)]
        if comparable.empty:
            continue
        best = comparable["adv_accuracy"].min()
        bad = r.adv_accuracy < best - tolerance
        rows.append({"check": "black_vs_white", "attack": r.attack,
                     "status": "warn" if bad else "pass",
                     "detail": f"{r.attack} ({r.params}) accuracy {r.adv_accuracy:.3f} at mean Linf {r.mean_linf:.3g}; "
                               f"best white-box Linf attack at >= that Linf: {best:.3f}"
                               + (" - black-box beats white-box: possible gradient masking" if bad else "")})
    return pd.DataFrame(rows, columns=["check", "attack", "status", "detail"])


def _kind(name: str) -> str:
    from seradv.attacks import ATTACKS

    return ATTACKS[name].kind if name in ATTACKS else "other"


def _norm(name: str) -> str:
    from seradv.attacks import ATTACKS

    return ATTACKS[name].norm if name in ATTACKS else "other"


def _has_backend(name: str, backend: str) -> bool:
    from seradv.attacks import ATTACKS

    return name in ATTACKS and backend in ATTACKS[name].backends


