"""Running a grid: every (attack x parameter set) cell on a trained run, resumable.

For each cell seradv runs the attack on the run's test segments (or a seeded, stratified
subset), and records per sample: true label, clean and adversarial prediction and confidence,
loss, and the perturbation's mean |delta| (the study's metric), L2, Linf and L0. It then
summarises per corpus/language x All / Male / Female into one tidy table.

Layout inside ``RUN_DIR/attacks/``::

    cells/<cell_id>.json          summary rows of one finished cell and the fingerprint of the model,
                                  preprocessing and samples it was computed on (written atomically, last)
    cells/<cell_id>.samples.csv   per-sample results of the cell (``attacked``, ``fooled_any``, ``robust``)
    cells/<cell_id>.lock          taken while a process computes the cell
    adv/<cell_id>.npy             the perturbations delta = x_adv - x (float16), optional (feature attacks)
    wav/<cell_id>/<segment>.wav   a waveform attack's adversarial segments, 16-bit PCM: what its
                                  robust accuracy is measured on (always written)
    subsets/<key>.json            segment ids of a seeded subset (``--limit``)
    results.csv, results.parquet  one row per cell x group (all finished cells)
    trust.csv, trust.json         trust checks (monotonicity, unbounded attack, black vs white)
    grid.yaml                     the request of the last call

A finished cell (its JSON and per-sample file are intact and its fingerprint matches the
run's current model weights, preprocessing and attacked samples) is never recomputed, so an
interrupted grid continues where it stopped and gives the same table; a cell computed on an
earlier model or preparation is recomputed, never reused, and left out of ``results.csv``.

Attacks with ``input="waveform"`` (:mod:`seradv.attacks.waveform.specs`) run the same way
through :func:`~seradv.attacks.waveform.cell.waveform_attack_cell` (:data:`CELL_RUNNERS`): the
adversarial waveforms are written under ``wav/<cell_id>/`` and the per-sample results are
those of the written files read back through the numpy features, with the perceptual columns
(``snr_db``, ``segsnr_db``, ``linf_dbfs``, ``stoi``, ``pesq`` where installed).

The headline of every row is ``robust_accuracy`` (:func:`robust_flags`: correct before the
attack, attacked, and correct at every watched iterate and at the end); ``adv_accuracy`` is the
study's "accuracy on adversarial examples", which counts a sample that was wrong before and
that an attack moved onto its true class as correct. The cells are planned by
:mod:`seradv.grid.plan`, computed through an executor (:mod:`seradv.grid.executors`), read and
summarised by :mod:`seradv.grid.results` and checked by :mod:`seradv.grid.checks`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
import yaml

from seradv.attacks import AttackResult, get_attack, perturbation_norms, run_attack
from seradv.attacks.waveform.cell import waveform_attack_cell
from seradv.fileio import atomic_write_json, atomic_write_text, save_npy
from seradv.errors import AttackError, ParameterError
from seradv.evaluation import predict_logits, softmax
from seradv.grid.checks import trust_checks
from seradv.grid.executors import CellTask, Executor, LocalExecutor
from seradv.grid.plan import Cell, plan_grid, select_subset
from seradv.grid.results import (load_results, pool_folds, read_cell, read_samples, robust_flags, subset_fingerprint,
                                 summarise, write_results)
from seradv.models import check_model
from seradv.prepare import SplitData, load_subset
from seradv.rundir import (GRID_YAML, LOCK_SUFFIX, SAMPLES_SUFFIX, TRUST_CSV, TRUST_JSON, adv_file, attacks_dir,
                           cell_file, cells_dir, fold_run_dirs, is_cv_run, load_model, read_preprocessing,
                           run_fingerprints, run_logging, subset_file, wav_dir)

log = logging.getLogger(__name__)

__all__ = ["CELL_RUNNERS", "run_grid", "attack_cell"]


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(f"{name}={value!r} must be an integer >= {low}")


def _logits(model: torch.nn.Module, x: np.ndarray, device: str, precision: str = "fp32") -> np.ndarray:
    return predict_logits(model, x, device=device, precision=precision).astype(np.float64)


def attack_cell(
    model: torch.nn.Module,
    data: SplitData,
    cell: Cell,
    *,
    clip: tuple[float, float],
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    clean_logits: np.ndarray | None = None,
    attack_runner: Callable[..., AttackResult] | None = None,
) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Run one cell; return per-sample results, the perturbation and run facts.

    The attack and the adversarial predictions run at ``cell.precision``; ``clean_logits``
    (computed here if not given) should be of the same precision. ``attack_runner`` replaces
    :func:`run_attack` (same signature and result), e.g. the sample shards of
    :class:`seradv.grid.executors.ShardedAttack`; everything after the attack (the adversarial
    logits, norms, flags) is computed here on the whole cell either way."""
    x = data.x
    t0 = time.perf_counter()
    extra = {"precision": cell.precision} if cell.precision != "fp32" else {}
    res = (attack_runner or run_attack)(cell.attack, model, x, data.y, cell.params, clip=clip, backend=cell.backend,
                                        batch_size=batch_size, seed=seed, device=device, early_stop=cell.early_stop,
                                        **extra)
    wall = time.perf_counter() - t0
    if clean_logits is None:
        clean_logits = _logits(model, x, device, cell.precision)
    adv_logits = _logits(model, res.x_adv, device, cell.precision)
    pc, pa = softmax(clean_logits), softmax(adv_logits)
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
             "early_stop": cell.early_stop, "precision": cell.precision,
             **({"shards": res.shards} if res.shards > 1 else {})}
    return samples.reset_index(drop=True), (res.x_adv - x), facts


def _feature_cell(run_dir: Path, model: torch.nn.Module, data: SplitData, cell: Cell, cell_id: str, *,
                  clip: tuple[float, float], seed: int, batch_size: int, device: str,
                  clean_logits: np.ndarray,
                  attack_runner: Callable[..., AttackResult] | None = None) -> tuple[pd.DataFrame, np.ndarray | None, dict]:
    """A feature-space cell (:func:`attack_cell`): per-sample results, delta, facts."""
    return attack_cell(model, data, cell, clip=clip, seed=seed, batch_size=batch_size, device=device,
                       clean_logits=clean_logits, attack_runner=attack_runner)


def _waveform_cell(run_dir: Path, model: torch.nn.Module, data: SplitData, cell: Cell, cell_id: str, *,
                   clip: tuple[float, float], seed: int, batch_size: int, device: str,
                   clean_logits: np.ndarray,
                   attack_runner: Callable[..., AttackResult] | None = None) -> tuple[pd.DataFrame, np.ndarray | None, dict]:
    """A waveform cell: its files under ``attacks/wav/<cell_id>/`` (a cell being recomputed
    starts from an empty folder); no feature delta (``None``: the WAVs are its examples).
    Never sharded: ``attack_runner`` (a feature-space hook) is ignored."""
    out = wav_dir(run_dir, cell_id)
    shutil.rmtree(out, ignore_errors=True)
    samples, facts = waveform_attack_cell(run_dir, model, data, cell.attack, cell.params, wav_dir=out, seed=seed,
                                          batch_size=batch_size, device=device, backend=cell.backend,
                                          clean_logits=clean_logits)
    return samples, None, facts


CELL_RUNNERS = {"features": _feature_cell, "waveform": _waveform_cell}
"""How a cell is computed, by what its attack perturbs (:attr:`AttackSpec.input`)."""


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
    per_speaker: int | None = None,
    backend: str | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    save_examples: bool = True,
    trust: bool = True,
    early_stop: bool = False,
    where: str | None = None,
    params: str | dict | None = None,
    executor: Executor | None = None,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Run the attack grid on the test set of a trained run; resumable. Returns the results table.

    ``executor`` computes the cells (:mod:`seradv.grid.executors`; default: one after another
    in this process); every executor writes the same cell files.

    ``per_speaker=N`` attacks N seeded segments of every test speaker instead of ``limit`` in
    all (:func:`~seradv.grid.plan.select_subset`).

    ``where="theta=1"`` runs only the grid's parameter sets with those values;
    ``params="eps=0.3,max_iter=50"`` runs exactly that parameter set instead of the grid
    (:func:`plan_grid`). ``precision`` (``fp32``, ``bf16``, ``fp16``; :mod:`seradv.precision`)
    is that of the model's forward passes in the attacks and in the clean and adversarial
    predictions of the cells (torch backends only); a non-fp32 cell is its own cell (its id
    says so), fp32 cells keep their ids. A cell is reused only when it is intact and was computed on the run's
    current model weights, preprocessing and samples; two processes on one run directory
    never compute the same cell twice (a lock per cell).

    On a speaker-fold CV run the grid runs on every fold in turn, each on its own test set
    (``limit`` and ``seed`` per fold), each fold's cells resumable as a run's are; the
    returned table (also the run's top-level ``attacks/results.csv``, and ``trust.csv``:
    the folds' checks with a ``fold`` column) pools the folds
    (:func:`seradv.grid.results.pool_folds`).
    """
    run_dir = Path(run_dir)
    if is_cv_run(run_dir):
        folds = fold_run_dirs(run_dir)
        trust_frames = []
        for k, d in enumerate(folds, start=1):
            with run_logging(run_dir):
                log.info("speaker_cv: attack grid on fold %d of %d (%s)", k, len(folds), d)
            run_grid(d, attacks=attacks, grid=grid, limit=limit, seed=seed, per_speaker=per_speaker, backend=backend, batch_size=batch_size,
                     device=device, save_examples=save_examples, trust=trust, early_stop=early_stop, where=where,
                     params=params, executor=executor, precision=precision)
            if trust and (attacks_dir(d) / TRUST_CSV).is_file():
                trust_frames.append(pd.read_csv(attacks_dir(d) / TRUST_CSV).assign(fold=k))
        with run_logging(run_dir):
            table, _ = pool_folds(folds)
            attacks_dir(run_dir).mkdir(parents=True, exist_ok=True)
            write_results(run_dir, table)
            if trust_frames:
                checks = pd.concat(trust_frames, ignore_index=True)
                atomic_write_text(attacks_dir(run_dir) / TRUST_CSV, checks.to_csv(index=False))
                atomic_write_json(attacks_dir(run_dir) / TRUST_JSON, checks.to_dict(orient="records"))
        return table
    info = read_preprocessing(run_dir)
    cells = plan_grid(attacks, grid, backend, early_stop, where, params, precision)  # validates every parameter first
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)
    model = load_model(run_dir, device=device)
    try:
        check_model(model, len(info.classes), tuple(info.input_shape))
    except Exception as exc:
        raise AttackError(f"{run_dir}: the model does not fit the run's inputs: {exc}") from None
    out = attacks_dir(run_dir)
    cells_dir(run_dir).mkdir(parents=True, exist_ok=True)
    with run_logging(run_dir):
        fingerprint = run_fingerprints(run_dir)
        test = load_subset(run_dir, "test")
        idx = select_subset(test.meta, limit, seed, per_speaker=per_speaker)
        subset_key = "all" if len(idx) == len(test) else hashlib.sha256(idx.tobytes()).hexdigest()[:10]
        segment_ids = test.meta["segment_id"].iloc[idx].tolist()
        fingerprint = {**fingerprint, "subset": subset_fingerprint(segment_ids)}
        if subset_key != "all":
            atomic_write_json(subset_file(run_dir, subset_key),
                              {"limit": limit, "seed": seed, "segment_ids": segment_ids,
                               **({"per_speaker": per_speaker} if per_speaker is not None else {})})
        lo, hi = info.clip_values
        x = test.x[idx]
        outside = float(np.mean((x < lo) | (x > hi)))
        if outside > 0:
            log.info("clean test features clipped to the threat box [%g, %g]: %.4f %% of cells", lo, hi, 100 * outside)
        data = SplitData(x=np.clip(x, lo, hi).astype(np.float32), y=test.y[idx],
                         meta=test.meta.iloc[idx].reset_index(drop=True), classes=test.classes)
        atomic_write_text(out / GRID_YAML, yaml.safe_dump({
            "grid": grid, "attacks": sorted({c.attack for c in cells}), "limit": limit, "seed": seed,
            **({"per_speaker": per_speaker} if per_speaker is not None else {}),
            "backend": backend, "early_stop": bool(early_stop), "precision": precision, "where": where,
            "params": params if not isinstance(params, dict) else json.dumps(params, sort_keys=True),
            "batch_size": batch_size, "device": device, "n_samples": len(data),
            "subset": subset_key, "clip_values": [lo, hi], "clean_cells_clipped_fraction": outside,
            "fingerprint": fingerprint,
        }, sort_keys=False))
        clean_logits = _logits(model, data.x, device, precision)
        todo = [CellTask(c, c.cell_id(subset_key, seed)) for c in cells]

        def run_one(task: CellTask, *, wait: bool, attack_runner: Callable[..., AttackResult] | None = None) -> bool:
            """Compute the cell unless it is current; ``False`` if another process holds it.
            ``attack_runner``: see :func:`attack_cell` (an executor's sample shards)."""
            cell, cid = task.cell, task.cell_id
            path = cell_file(run_dir, cid)
            with _cell_lock(cell_file(run_dir, cid, LOCK_SUFFIX), wait=wait) as mine:
                if not mine:
                    return False
                done, why = read_cell(path, fingerprint, segment_ids)
                if done is not None:
                    log.info("cell %s (%s %s) already done on this model and data; reused", cid, cell.attack, cell.label)
                    return True
                if why != "not computed":
                    log.warning("cell %s (%s %s) %s: recomputed", cid, cell.attack, cell.label, why)
                compute = CELL_RUNNERS[get_attack(cell.attack).input]
                samples, delta, facts = compute(run_dir, model, data, cell, cid, clip=(lo, hi), seed=seed,
                                                batch_size=batch_size, device=device, clean_logits=clean_logits,
                                                attack_runner=attack_runner)
                rows = [{**r, "seed": seed, "subset": subset_key}
                        for r in summarise(samples, cell, facts, cell_id=cid, n_total=len(data))]
                atomic_write_text(cell_file(run_dir, cid, SAMPLES_SUFFIX), samples.to_csv(index=False))
                if save_examples and delta is not None:
                    save_npy(adv_file(run_dir, cid), delta.astype(np.float16))
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

        (executor or LocalExecutor()).run(todo, run_one)
        results = load_results(run_dir)
        if trust:
            checks = trust_checks(results, model=model, data=data, clip=(lo, hi), device=device,
                                  samples=lambda cid: read_samples(cell_file(run_dir, cid, SAMPLES_SUFFIX)))
            atomic_write_text(out / TRUST_CSV, checks.to_csv(index=False))
            atomic_write_json(out / TRUST_JSON, checks.to_dict(orient="records"))
            for r in checks.itertuples():
                if r.status != "pass":
                    log.warning("trust check %s (%s, %s %s): %s", r.check, r.attack, r.corpus, r.group, r.detail)
    return results
