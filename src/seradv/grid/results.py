"""Reading a grid's results: finished cells, per-sample files, summaries and the worst case.

One cell's per-sample results become rows per corpus x language x All / Male / Female
(:func:`summarise`), with the headline ``robust_accuracy`` (:func:`robust_flags`);
:func:`load_results` gathers every current finished cell (:func:`read_cell`) and adds the
AutoAttack-style worst case per declared Linf budget (:func:`worst_case_frames`,
:func:`worst_case`); :func:`pool_folds` pools the folds of a speaker-fold CV run. :func:`read_samples` is the one reader of per-sample files (the grid,
its trust checks and the report all read them through it).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from seradv import stats
from seradv.attacks import ATTACKS
from seradv.fileio import atomic_write_bytes, atomic_write_text, read_json
from seradv.evaluation import GROUPS
from seradv.grid.plan import Cell
from seradv.rundir import (RESULTS_CSV, RESULTS_PARQUET, attacks_dir, cell_file, cells_dir, run_fingerprints,
                           SAMPLES_SUFFIX, samples_file_of, subset_file)

log = logging.getLogger(__name__)

__all__ = ["robust_flags", "summarise", "read_samples", "read_cell", "subset_fingerprint", "load_results",
           "budget_attacks", "budget_tol", "worst_case_frames", "worst_case", "pool_folds", "write_results",
           "with_precision_column"]

PER_CELL_MEANS = {"snr_db": "mean_snr_db", "segsnr_db": "mean_segsnr_db", "linf_dbfs": "mean_linf_dbfs",
                  "stoi": "mean_stoi", "pesq": "mean_pesq"}
"""Per-sample columns (of the waveform cells) summarised as per-cell means where present:
``{sample column: results column}``; the mean is over the samples where the value is finite
(an unperturbed segment's SNR is ``inf``, a segment PESQ could not score NaN)."""

SAMPLE_DTYPES = {"utterance": str, "speaker": str}
"""The one dtype rule of per-sample files: ids as text, ``segment_id`` an integer (as in
``segments.csv``)."""


def read_samples(path: Path) -> pd.DataFrame | None:
    """A cell's per-sample file, or ``None`` if it is missing or unreadable."""
    try:
        return pd.read_csv(path, dtype=SAMPLE_DTYPES)
    except (FileNotFoundError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None


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


def _finite_mean(values: pd.Series) -> float:
    """Mean of the finite values (NaN when there are none)."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _extra_columns(part: pd.DataFrame) -> dict:
    """The per-cell columns of the optional per-sample columns: :data:`PER_CELL_MEANS`, and
    ``robust_accuracy_float`` (robust on the attack's float tensor, ``pred_adv_float``, rather
    than on the written files) where a waveform cell has it."""
    out = {name: _finite_mean(part[col]) for col, name in PER_CELL_MEANS.items() if col in part}
    if "pred_adv_float" in part:
        float_view = part.assign(pred_adv=part["pred_adv_float"], fooled_any=part["pred_adv_float"] != part["label"])
        out["robust_accuracy_float"] = float(robust_flags(float_view).mean())
    return out


def summarise(samples: pd.DataFrame, cell: Cell, facts: dict, *, cell_id: str, n_total: int) -> list[dict]:
    """Rows (corpus x language x group) of one cell's results.

    ``robust_accuracy``: share of the ``n`` samples that are robust (:func:`robust_flags`);
    ``success_rate``: share of the clean-correct samples the attack *attacked* that it fooled
    (the ``n_not_attacked`` are neither fooled nor robust, so ``robust_accuracy`` equals
    ``n_clean_correct / n * (1 - success_rate)`` only when ``n_not_attacked`` is 0);
    ``adv_accuracy``: the study's accuracy on adversarial examples. Waveform cells add the
    columns of :func:`_extra_columns` (mean SNR, segmental SNR, peak dBFS, STOI, PESQ, and the
    float-tensor robust accuracy)."""
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
                "backend": cell.backend, "early_stop": bool(cell.early_stop),
                "precision": getattr(cell, "precision", "fp32"), "corpus": corpus, "language": language, "group": group,
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
                **_extra_columns(part),
            })
    return rows


def subset_fingerprint(segment_ids) -> str:
    """sha256 of the attacked samples' ids (recorded in every cell, checked by :func:`read_cell`)."""
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
        if segment_ids is not None and have.get("subset") != subset_fingerprint(segment_ids):
            return None, "computed on other samples (stale)"
    samples = samples_file_of(path)
    frame = read_samples(samples)
    if frame is None or "segment_id" not in frame:
        return None, f"per-sample file {samples.name} missing or unreadable"
    ids = frame["segment_id"].tolist()
    # a file cut inside a row leaves NaN in its last columns; n_samples: the cell's total
    n = cell.get("n_samples", sum(int(r.get("n", 0)) for r in rows if r.get("group") == "All"))
    if len(ids) != n or frame.iloc[:, -1].isna().any():
        return None, f"per-sample file {samples.name} incomplete ({len(ids)} of {n} samples)"
    if segment_ids is not None and [str(i) for i in ids] != [str(i) for i in segment_ids]:
        return None, f"per-sample file {samples.name} holds other samples than the run's current subset"
    return cell, "ok"


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """All current finished cells of a run as one table (also written to results.csv/.parquet).

    Cells computed on another model or preparation than the run's current one (stale), and
    cells whose files are truncated, are left out with a warning naming them.
    """
    run_dir = Path(run_dir)
    fingerprint = run_fingerprints(run_dir)
    rows, skipped = [], []
    for f in sorted(cells_dir(run_dir).glob("*.json")):
        cell, why = read_cell(f, fingerprint)
        if cell is None:
            skipped.append(f"{f.name} ({why})")
            continue
        rows += cell["rows"]
    if skipped:
        log.warning("%d attack cell(s) left out of the results: %s; `seradv attack` recomputes them",
                    len(skipped), "; ".join(skipped))
    table = pd.DataFrame(rows)
    if not table.empty:  # worst_case reads a missing precision as fp32 itself
        table = with_precision_column(pd.concat([table, worst_case(run_dir, table)], ignore_index=True))
    write_results(run_dir, table)
    return table


def with_precision_column(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``precision`` column filled in: ``fp32`` for rows of cells computed
    before precision was a setting (and for worst-case rows, which pool fp32 cells only)."""
    if table.empty:
        return table
    if "precision" not in table:
        return table.assign(precision="fp32")
    return table.assign(precision=table["precision"].fillna("fp32").astype(str))


def write_results(run_dir: str | Path, table: pd.DataFrame) -> None:
    """``attacks/results.csv`` and ``.parquet`` of ``table`` (both removed when it is empty)."""
    out = attacks_dir(run_dir)
    if table.empty:
        for name in (RESULTS_CSV, RESULTS_PARQUET):
            (out / name).unlink(missing_ok=True)  # nothing current: no stale table either
        return
    atomic_write_text(out / RESULTS_CSV, table.to_csv(index=False))
    try:
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        atomic_write_bytes(out / RESULTS_PARQUET, buf.getvalue())
    except Exception as exc:  # noqa: BLE001 - parquet is a convenience copy
        log.warning("could not write results.parquet: %s", exc)


def budget_tol(eps: float) -> float:
    """Tolerance of a per-sample Linf against a declared budget (float32 round-off of x + eps)."""
    return 1e-5 + 1e-4 * float(eps)


def budget_attacks() -> set[str]:
    """Attacks with a declared Linf budget ``eps`` (FGSM, BIM, PGD, Square, ...)."""
    return {n for n, s in ATTACKS.items() if s.norm == "linf" and "eps" in s.param_names and s.input == "features"}


def _feature_space(name: str) -> bool:
    """Whether ``name``'s cells perturb the log-Mel features (unregistered names: assumed so)."""
    return name not in ATTACKS or ATTACKS[name].input == "features"


def worst_case_frames(run_dir: str | Path, table: pd.DataFrame) -> dict[str, tuple[dict, pd.DataFrame]]:
    """Per-sample worst case at every declared Linf budget, per attacked subset.

    For a budget ``eps`` (each ``eps`` of a cell of an attack with a declared Linf budget) a
    sample is robust when it was classified correctly before any attack and no attack fooled
    it with a perturbation inside the budget: every cell of any attack on the same samples
    counts for the samples it attacked whose per-sample Linf is ``<= eps`` (cells of smaller
    budgets included; minimal-perturbation attacks where their Linf falls inside). A budget
    cell whose per-sample Linf exceeds its own declared eps is left out with a warning. Cells
    of waveform attacks are not members: their features are those of re-read audio, outside
    the feature-space threat model (the clip box) the budgets are declared in.

    Returns ``{worst_cell_id: (facts, samples)}``; ``samples`` has the columns of a cell's
    per-sample file with ``robust`` (and ``pred_adv`` -1 where some attack fooled the sample).
    Only fp32 cells count (the clean predictions of a bf16 / fp16 cell are its own).
    """
    res = table[(table["attack"] != "worst_case") & table["attack"].map(_feature_space)]
    if "precision" in res:
        res = res[res["precision"].fillna("fp32") == "fp32"]
    if res.empty:
        return {}
    budget = budget_attacks()
    first = res.drop_duplicates("cell_id")
    frames: dict[str, pd.DataFrame] = {}
    for cid in first["cell_id"]:
        f = read_samples(cell_file(run_dir, cid, SAMPLES_SUFFIX))
        if f is not None:  # in the order of the ids as text, as the worst case's ids are hashed
            order = np.argsort(f["segment_id"].astype(str).to_numpy(), kind="stable")
            frames[cid] = f.iloc[order].reset_index(drop=True)
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
                over = f["linf"].to_numpy() > eps + budget_tol(eps)
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
                inside = attacked & (f["linf"].to_numpy() <= eps + budget_tol(eps))
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
        rows += _worst_rows(wid, facts, base)
    return pd.DataFrame(rows)


def _worst_rows(wid: str, facts: dict, base: pd.DataFrame) -> list[dict]:
    """Results rows (corpus x language x group) of one worst-case frame (``robust`` per sample)."""
    rows = []
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
    return rows


# ------------------------------------------------------------------------------ speaker-fold CV runs


def _subset_limit(run_dir: Path, key: str) -> int | None:
    """The ``--limit`` a cell's attacked subset was drawn with (``None``: the full test set)."""
    if key == "all":
        return None
    try:
        return int(read_json(subset_file(run_dir, key))["limit"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1  # unknown: pooled only with cells of the same unknown request


def pool_folds(fold_dirs: list[Path]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Results of a speaker-fold CV run: every fold's current cells pooled over the folds.

    Cells of the same request (attack, parameters, backend, early stop, seed and ``--limit``,
    each fold attacked on its own test subset) are pooled: their per-sample results are
    concatenated (a ``fold`` column added) and summarised as one cell (:func:`summarise`;
    seconds, queries and gradients summed over the folds); the worst case per Linf budget
    likewise. Each row has the columns of a normal results row plus ``folds`` (the folds
    pooled, e.g. ``1;2;3``), ``members`` (``fold:cell_id`` of the pooled cells),
    ``robust_lo`` / ``robust_hi`` (speaker-cluster 95 % CI, :func:`seradv.stats.cluster_ci`)
    and ``n_speakers``. Returns the table and the pooled per-sample frames by pooled cell id.
    """
    groups: dict[tuple, list[tuple[int, str, dict, pd.DataFrame]]] = {}
    worst: dict[tuple, list[tuple[int, str, dict, pd.DataFrame]]] = {}
    for k, d in enumerate(fold_dirs, start=1):
        fingerprint = run_fingerprints(d)
        rows, skipped = [], []
        cells = {}
        for f in sorted(cells_dir(d).glob("*.json")) if cells_dir(d).is_dir() else []:
            cell, why = read_cell(f, fingerprint)
            frame = None if cell is None else read_samples(samples_file_of(f))
            if cell is None or frame is None:
                skipped.append(f"{f.name} ({why})")
                continue
            cells[cell["cell_id"]] = cell
            rows += cell["rows"]
            precision = str((cell.get("facts") or {}).get("precision", "fp32"))
            key = (cell["attack"], json.dumps(cell["params"], sort_keys=True, default=str), cell["backend"],
                   bool((cell.get("facts") or {}).get("early_stop", False)), int(cell.get("seed", 0)),
                   _subset_limit(d, str(cell.get("subset", "all"))))
            if precision != "fp32":  # appended only then: pooled ids of fp32 cells do not change
                key += (precision,)
            groups.setdefault(key, []).append((k, cell["cell_id"], cell, frame))
        if skipped:
            log.warning("fold %d: %d attack cell(s) left out of the pooled results: %s", k, len(skipped),
                        "; ".join(skipped))
        if rows:
            for wid, (facts, base) in worst_case_frames(d, pd.DataFrame(rows)).items():
                first = cells[facts["members"][0]]
                key = (facts["eps"], int(first.get("seed", 0)), _subset_limit(d, str(first.get("subset", "all"))))
                worst.setdefault(key, []).append((k, wid, facts, base))
    table_rows: list[dict] = []
    frames: dict[str, pd.DataFrame] = {}
    n_folds = len(fold_dirs)
    for key, members in groups.items():
        attack, _, backend, early_stop, seed, limit = key[:6]
        precision = key[6] if len(key) > 6 else "fp32"
        pid = f"{attack}-cv-{hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:10]}"
        samples = pd.concat([f.assign(fold=k) for k, _, _, f in members], ignore_index=True)
        cell0 = members[0][2]
        facts = {name: _sum(c.get("facts", {}).get(name) for _, _, c, _ in members)
                 for name in ("seconds", "n_queries", "n_grads")}
        cell = Cell(attack=attack, params=cell0["params"], backend=backend, early_stop=early_stop,
                    precision=precision)
        rows = summarise(samples, cell, facts, cell_id=pid, n_total=len(samples))
        table_rows += _pooled_extra(rows, samples, members, seed, limit, n_folds, pid)
        frames[pid] = samples
    for key, members in worst.items():
        eps, seed, limit = key
        pid = f"worst-cv-{hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:6]}-eps{eps:g}"
        samples = pd.concat([f.assign(fold=k) for k, _, _, f in members], ignore_index=True)
        attacks = "+".join(sorted({a for _, _, fa, _ in members for a in fa["attacks"].split("+")}))
        rows = _worst_rows(pid, {"eps": eps, "attacks": attacks, "members": []}, samples)
        table_rows += _pooled_extra(rows, samples, members, seed, limit, n_folds, pid)
        frames[pid] = samples
    return pd.DataFrame(table_rows), frames


def _sum(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(sum(vals)) if vals else None


def _pooled_extra(rows: list[dict], samples: pd.DataFrame, members: list, seed: int, limit: int | None,
                  n_folds: int, pid: str) -> list[dict]:
    """``rows`` with the pooled columns: folds, members, seed, subset, speaker-cluster CI."""
    folds = sorted({k for k, *_ in members})
    if len(folds) < n_folds:
        log.warning("pooled cell %s holds %d of %d folds (%s); `seradv attack` on the run computes the others",
                    pid, len(folds), n_folds, ";".join(map(str, folds)))
    out = []
    for r in rows:
        part = samples[(samples["corpus"].astype(str) == str(r["corpus"]))
                       & (samples["language"].astype(str) == str(r["language"]))]
        if GROUPS[r["group"]] is not None:
            part = part[part["gender"] == GROUPS[r["group"]]]
        robust = part["robust"].astype(bool).to_numpy() if "robust" in part and "attacked" not in part \
            else robust_flags(part)
        ci = stats.cluster_ci(robust, part["speaker"].astype(str).to_numpy(), unit="speaker")
        out.append({**r, "seed": seed, "subset": "all" if limit is None else f"limit {limit} per fold",
                    "folds": ";".join(map(str, folds)), "members": ";".join(f"{k}:{cid}" for k, cid, *_ in members),
                    "robust_lo": ci.lo, "robust_hi": ci.hi, "n_speakers": int(part["speaker"].nunique())})
    return out
