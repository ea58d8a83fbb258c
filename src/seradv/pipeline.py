"""The Python API and the orchestration of ``seradv run``: prepare, train, evaluate and run,
each on a run directory. Nothing in seradv imports this module but :mod:`seradv.cli`.

The CLI is a thin layer over these functions. A notebook user can call them directly::

    from seradv import pipeline
    from seradv.config import RunConfig, DataConfig
    cfg = RunConfig(name="emodb", data=DataConfig(corpus="emodb", data_dir="datasets/emodb"))
    pipeline.prepare_run(cfg, "runs/emodb")
    pipeline.train_run("runs/emodb")
    metrics = pipeline.evaluate_run("runs/emodb")   # a DataFrame

What a run directory holds, and what each stage makes stale, is :mod:`seradv.rundir`'s;
:func:`run` adds ``attacks/`` (:mod:`seradv.grid`) and ``report/`` (:mod:`seradv.report`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save

from seradv.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from seradv.config import AttackConfig, AugmentConfig, DataConfig, RunConfig, TrainConfig, save_config
from seradv.corpora import Manifest, get_corpus
from seradv.defences import build_defence
from seradv.evaluation import group_metrics, pooled_metrics, predict_logits
from seradv.grid.plan import plan_grid
from seradv.grid.executors import get_executor
from seradv.grid.run import run_grid
from seradv.models import build_model, check_model, count_parameters
from seradv.prepare import CVPreparation, build_preparation, check_source, load_subset, write_preparation
from seradv.progress import peak_memory_mb, reset_peak_memory, stage
from seradv.report import build_report
from seradv.rundir import (CONFIG, CONFUSION, FOLDS_CSV, FOLDS_DIR, HISTORY, METRICS_CSV, METRICS_JSON, MODEL_META,
                           MODEL_WEIGHTS, PREDICTIONS, PREPARATION_FILES, PREPARE_DOWNSTREAM, TRAIN_DOWNSTREAM,
                           TRAIN_STATE, Preprocessing, deferred_logging, fold_dir, fold_run_dirs, is_cv_run,
                           load_model, load_run_config, preparation_fingerprint, read_preprocessing,
                           remove_outputs, run_fingerprints, run_logging)
from seradv.precision import precision_dtype
from seradv.training import fit, resolve_hyperparameters, select_device, set_seed

log = logging.getLogger("seradv")

__all__ = ["prepare_run", "train_run", "evaluate_run", "run", "demo_config", "load_model"]


def prepare_run(cfg: RunConfig, run_dir: str | Path, *,
                manifest: Manifest | pd.DataFrame | None = None) -> Preprocessing:
    """Corpus table -> split -> features -> standardizer, written into ``run_dir``.

    The config and the corpus are checked first, and the whole preparation is computed before
    anything is written: a failed ``prepare`` leaves ``run_dir`` as it was (and creates nothing
    in a new one). If the preparation differs from the one in ``run_dir``, every output that
    depended on it (model, metrics, ``attacks/``, ``report/``) is removed before the new files
    are written; ``config.yaml`` is written last. Returns the preprocessing record.
    """
    run_dir = Path(run_dir)
    check_source(cfg, manifest)
    with deferred_logging(run_dir):
        t0 = time.perf_counter()
        prep = build_preparation(cfg, manifest=manifest, run_dir=run_dir)
        info = prep.info
        if isinstance(prep, CVPreparation):
            _clear_stale_cv(run_dir, prep)
        elif is_cv_run(run_dir):  # a CV run re-prepared as an ordinary one: its folds go
            stale = remove_outputs(run_dir, (FOLDS_DIR, FOLDS_CSV) + PREPARE_DOWNSTREAM)
            log.info("preparation changed: removed stale %s", ", ".join(stale))
        elif preparation_fingerprint(files=prep.files) != preparation_fingerprint(run_dir):
            stale = remove_outputs(run_dir, PREPARE_DOWNSTREAM) if run_dir.is_dir() else []
            if stale:
                log.info("preparation changed: removed stale %s", ", ".join(stale))
        write_preparation(prep, run_dir)
        log.info("prepared %s in %.1f s: %s", run_dir, time.perf_counter() - t0, info.counts)
        if info.leaky:
            log.warning(info.leak_note)
    return info


def _clear_stale_cv(run_dir: Path, prep: CVPreparation) -> None:
    """Before a CV preparation is written: remove what it makes stale (per fold, the outputs of
    a fold whose preparation changed; at the top, the pooled outputs if any fold changed; the
    files of an ordinary run prepared here before; folds beyond the new number of folds)."""
    if not run_dir.is_dir():
        return
    changed = False
    for k, fold in enumerate(prep.folds, start=1):
        d = fold_dir(run_dir, k)
        if preparation_fingerprint(files=fold.files) != preparation_fingerprint(d):
            changed = True
            stale = remove_outputs(d, PREPARE_DOWNSTREAM) if d.is_dir() else []
            if stale:
                log.info("fold %d: preparation changed: removed stale %s", k, ", ".join(stale))
    n = len(prep.folds)
    extra = [p for p in sorted((run_dir / FOLDS_DIR).glob("fold-*"))
             if not p.name[5:].isdigit() or int(p.name[5:]) > n] if (run_dir / FOLDS_DIR).is_dir() else []
    ordinary = tuple(f for f in PREPARATION_FILES if f not in prep.files)  # split.csv, segments.csv, ...
    was_ordinary = any((run_dir / f).exists() for f in ordinary)
    # at the top: the pooled metrics, attacks and report (and an ordinary run's model files)
    stale = remove_outputs(run_dir, tuple(str(p.relative_to(run_dir)) for p in extra) + ordinary
                           + (PREPARE_DOWNSTREAM if changed or extra or was_ordinary else ()))
    if stale:
        log.info("preparation changed: removed stale %s", ", ".join(stale))


def _resume_key(run_dir: Path, cfg: RunConfig, hyper: dict, model: torch.nn.Module) -> str:
    """What a resumable training state must have been saved by: the preparation, the model's
    class and initial weights, and every training setting that changes the updates (not the
    epoch limit, threads or device; the precision unless it is fp32)."""
    train = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in ("epochs", "threads", "device")}
    if train.get("precision") == "fp32":  # the key of fp32 trainings is the one they had before precision
        del train["precision"]
    # the defence joins the key only when there is one: undefended trainings keep their keys
    defence = {"defence": dataclasses.asdict(cfg.defence)} if cfg.defence.kind != "none" else {}
    h = hashlib.sha256(json.dumps({"train": train, "hyper": hyper, "model": type(model).__qualname__, **defence,
                                   "data": run_fingerprints(run_dir)["preprocessing"]},
                                  sort_keys=True, default=str).encode())
    for v in model.state_dict().values():
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_run(
    run_dir: str | Path,
    *,
    model: torch.nn.Module | None = None,
    train_overrides: dict | None = None,
) -> dict:
    """Train the run's model (or the given ``torch.nn.Module``) and save it.

    ``train_overrides`` changes keys of the ``train`` section (e.g. ``{"epochs": 1}``); the
    changed config is saved back. Training resumes from ``train_state.pt`` if present.

    A speaker-fold CV run trains every fold in turn (:func:`_train_folds`), each resumable on
    its own; it returns fold 1's record with ``folds``, the records of all folds.
    """
    run_dir = Path(run_dir)
    if is_cv_run(run_dir):
        return _train_folds(run_dir, model=model, train_overrides=train_overrides)
    cfg = load_run_config(run_dir)
    if train_overrides:
        cfg = cfg.replace(**{f"train.{k}": v for k, v in train_overrides.items()})
    info = read_preprocessing(run_dir)
    recipe = get_corpus(cfg.data.corpus)
    hyper = resolve_hyperparameters(cfg.train, recipe.hyperparameters)
    with run_logging(run_dir):
        train = load_subset(run_dir, "train")
        val = load_subset(run_dir, "val")
        n_classes = len(info.classes)
        model_name = cfg.train.model if model is None else type(model).__name__
        if model is None:
            set_seed(cfg.train.seed)  # the initial weights depend on the seed only
            model = build_model(cfg.train.model, n_classes, dropout=hyper["dropout"],
                                lstm_dropout=hyper["lstm_dropout"])
        check_model(model, n_classes, tuple(info.input_shape))
        n_params = count_parameters(model)
        log.info("model %s: %d trainable parameters (%.2f M)", model_name, n_params, n_params / 1e6)
        log.info("training on %d segments, validating on %d; lr %g, batch %d, dropout %g/%g",
                 len(train), len(val), hyper["lr"], hyper["batch_size"], hyper["dropout"], hyper["lstm_dropout"])
        defence = build_defence(cfg.defence, info.clip)
        if defence is not None:
            log.info("defence: %s", defence)
        fresh = reset_peak_memory()
        result = fit(model, train.x, train.y, val.x, val.y, cfg.train, lr=hyper["lr"],
                     batch_size=hyper["batch_size"], state_path=run_dir / TRAIN_STATE,
                     resume_key=_resume_key(run_dir, cfg, hyper, model), batch_transform=defence)
        peak = peak_memory_mb() if fresh else None  # resident peak of the training (None: unknown)
        peak = round(peak, 1) if peak is not None else None
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        weights = save(state)
        old_weights = run_dir / MODEL_WEIGHTS
        if not (old_weights.is_file() and old_weights.read_bytes() == weights):
            # another model: the results of the previous one are stale (the same weights, e.g. a
            # finished training resumed by `seradv run`, keep their metrics and attack results)
            stale = remove_outputs(run_dir, TRAIN_DOWNSTREAM)
            if stale:
                log.info("new model: removed stale %s", ", ".join(stale))
        atomic_write_bytes(run_dir / MODEL_WEIGHTS, weights)
        meta = {
            "model": model_name,
            "registered": model_name == cfg.train.model,
            "n_classes": n_classes,
            "classes": info.classes,
            "input_shape": info.input_shape,
            "parameters": n_params,
            "hyperparameters": hyper,
            "defence": dataclasses.asdict(cfg.defence),
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "train_seconds": round(result.seconds, 2),
            "peak_memory_mib": peak,
            "n_train": len(train),
            "n_val": len(val),
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
        }
        atomic_write_json(run_dir / MODEL_META, meta)
        atomic_write_text(run_dir / HISTORY, result.history.to_csv(index=False))
        if train_overrides:
            save_config(cfg, run_dir / CONFIG)  # only once the model it describes is saved
        log.info("trained %d epochs in %.0f s (best epoch %d)", result.epochs_run, result.seconds,
                 result.best_epoch)
    return meta


def _train_folds(run_dir: Path, *, model: torch.nn.Module | None, train_overrides: dict | None) -> dict:
    """Train every fold of a CV run in turn. A finished fold is reused exactly as a finished
    run is (its ``train_state.pt`` says so), an interrupted one resumes from its own state."""
    cfg = load_run_config(run_dir)
    if train_overrides:  # checked before any fold is trained
        cfg = cfg.replace(**{f"train.{k}": v for k, v in train_overrides.items()})
    metas = []
    folds = fold_run_dirs(run_dir)
    for k, d in enumerate(folds, start=1):
        with run_logging(run_dir):
            log.info("speaker_cv: training fold %d of %d (%s)", k, len(folds), d)
        metas.append(train_run(d, model=None if model is None else copy.deepcopy(model),
                               train_overrides=train_overrides))
    if train_overrides:
        save_config(cfg, run_dir / CONFIG)
    return {**metas[0], "folds": metas}


def _evaluate(run_dir: Path, model: torch.nn.Module | None, device: str,
              precision: str = "fp32") -> tuple[pd.DataFrame, np.ndarray, object]:
    """Clean evaluation of one ordinary run directory at ``precision``; writes its metrics,
    confusions and predictions; returns the metrics table, the logits ``[shape=(n,
    n_classes)]`` and the test set."""
    info = read_preprocessing(run_dir)
    model = load_model(run_dir, model=model, device=device)
    with run_logging(run_dir):
        test = load_subset(run_dir, "test")
        logits = predict_logits(model, test.x, device=device, precision=precision)
        table, confusions = group_metrics(test.y, logits, test.meta, test.classes)
        table.insert(0, "split", info.split)
        table.insert(1, "leaky", info.leaky)
        atomic_write_text(run_dir / METRICS_CSV, table.to_csv(index=False))
        atomic_write_text(run_dir / CONFUSION, pd.DataFrame(_confusion_rows(confusions, test.classes)).to_csv(index=False))
        pred = test.meta[["segment_id", "utterance", "variant", "seg_index", "speaker", "gender",
                          "emotion", "corpus", "language"]].copy()
        pred["predicted"] = [test.classes[i] for i in logits.argmax(1)]
        pred["correct"] = pred["predicted"] == pred["emotion"]
        atomic_write_text(run_dir / PREDICTIONS, pred.to_csv(index=False))
        test_speakers = sorted(test.meta["speaker"].unique())
        atomic_write_json(run_dir / METRICS_JSON, {
            "split": info.split, "leaky": info.leaky, "note": info.leak_note, "precision": precision,
            "classes": test.classes, "test_speakers": test_speakers,
            "metrics": table.to_dict(orient="records"),
            "confusion": {k: v.tolist() for k, v in confusions.items()},
        })
        for r in table.itertuples():
            log.info("%s/%s %s: n=%d acc %.3f UAR %.3f F1 %.3f", r.corpus, r.language, r.group, r.n,
                     r.accuracy, r.uar, r.macro_f1)
    return table, logits, test


def evaluate_run(run_dir: str | Path, *, model: torch.nn.Module | None = None,
                 device: str = "cpu", precision: str | None = None) -> pd.DataFrame:
    """Clean test metrics per corpus/language and gender; writes metrics and confusions.

    ``precision`` of the model's forward passes (:mod:`seradv.precision`; ``None``: the run's
    ``train.precision``, the precision it was trained at); saved in ``metrics.json``.

    On a speaker-fold CV run every fold is evaluated, then the top-level ``metrics.csv`` /
    ``metrics.json``, ``confusion.csv`` and ``predictions.csv`` pool the folds' test
    predictions (every speaker once): rows ``fold == "pooled"`` with speaker-cluster CIs
    (:func:`seradv.evaluation.pooled_metrics`), then one row per fold (group All).
    """
    run_dir = Path(run_dir)
    if precision is None:  # no config.yaml: not a run directory, which _evaluate says
        precision = load_run_config(run_dir).train.precision if (run_dir / CONFIG).is_file() else "fp32"
    precision_dtype(precision, device)  # e.g. fp16 on the CPU: an error before any work
    if is_cv_run(run_dir):
        return _evaluate_folds(run_dir, model=model, device=device, precision=precision)
    return _evaluate(run_dir, model, device, precision)[0]


def _confusion_rows(confusions: dict, classes: list[str]) -> list[dict]:
    rows = []
    for key, cm in confusions.items():
        corpus, language, group = key.split("/")
        for i, true in enumerate(classes):
            for j, pred in enumerate(classes):
                rows.append({"corpus": corpus, "language": language, "group": group,
                             "true": true, "predicted": pred, "count": int(cm[i, j])})
    return rows


def _evaluate_folds(run_dir: Path, *, model: torch.nn.Module | None, device: str,
                    precision: str = "fp32") -> pd.DataFrame:
    folds = fold_run_dirs(run_dir)
    tables, logits, ys, metas = [], [], [], []
    info = None
    for k, d in enumerate(folds, start=1):
        table, z, test = _evaluate(d, model, device, precision)
        info = info or read_preprocessing(d)
        tables.append(table[table["group"] == "All"].assign(fold=str(k)))
        logits.append(z)
        ys.append(test.y)
        metas.append(test.meta.assign(fold=k))
        classes = test.classes
    meta = pd.concat(metas, ignore_index=True)
    y, z = np.concatenate(ys), np.concatenate(logits)
    with run_logging(run_dir):
        pooled, confusions = pooled_metrics(y, z, meta, classes)
        pooled.insert(0, "fold", "pooled")
        per_fold = pd.concat(tables, ignore_index=True)
        per_fold["n_speakers"] = [metas[int(f) - 1]["speaker"].nunique() for f in per_fold["fold"]]
        table = pd.concat([pooled, per_fold[[c for c in pooled.columns if c in per_fold]]], ignore_index=True)
        table.insert(0, "split", info.split)
        table.insert(1, "leaky", info.leaky)
        atomic_write_text(run_dir / METRICS_CSV, table.to_csv(index=False))
        atomic_write_text(run_dir / CONFUSION, pd.DataFrame(_confusion_rows(confusions, classes)).to_csv(index=False))
        pred = meta[["fold", "segment_id", "utterance", "variant", "seg_index", "speaker", "gender", "emotion",
                     "corpus", "language"]].copy()
        pred["predicted"] = [classes[i] for i in z.argmax(1)]
        pred["correct"] = pred["predicted"] == pred["emotion"]
        atomic_write_text(run_dir / PREDICTIONS, pred.to_csv(index=False))
        atomic_write_json(run_dir / METRICS_JSON, {
            "split": info.split, "leaky": info.leaky, "folds": len(folds), "precision": precision,
            "note": f"{len(folds)}-fold speaker cross-validation: the folds' test predictions pooled, every "
                    f"speaker tested once; CIs resample speakers",
            "classes": classes,
            "test_speakers": {str(k): sorted(m["speaker"].unique()) for k, m in enumerate(metas, start=1)},
            "metrics": table.to_dict(orient="records"),
            "confusion": {k: v.tolist() for k, v in confusions.items()},
        })
        for r in pooled.itertuples():
            log.info("pooled over %d folds, %s/%s %s: n=%d (%d speakers) acc %.3f [%.3f, %.3f] UAR %.3f F1 %.3f",
                     len(folds), r.corpus, r.language, r.group, r.n, r.n_speakers, r.accuracy, r.acc_lo, r.acc_hi,
                     r.uar, r.macro_f1)
    return table


def demo_config() -> RunConfig:
    """The small configuration of ``seradv run`` with no arguments (synthetic corpus)."""
    return RunConfig(
        name="demo",
        data=DataConfig(corpus="synthetic"),
        augment=AugmentConfig(pitch_steps=(-1.5, 1.5), stretch_rates=()),
        train=TrainConfig(epochs=8, patience=4, lr_patience=3),
        attack=AttackConfig(grid="quick", limit=32, attacks=("fgsm", "bim", "deepfool", "boundary")),
    )


def run(cfg: RunConfig | None = None, *, out: str | Path | None = None) -> Path:
    """All stages end to end, then the report; returns the run directory (``./runs/<name>`` by default).

    Everything that can be checked before work starts is (config values, devices, attack
    names and backends). Each stage prints a start and an end line with its time to stderr
    (:func:`seradv.progress.stage`). The report is written to ``<run_dir>/report/``
    (:func:`seradv.report.build_report`) and its path printed.
    """
    cfg = (cfg or demo_config()).validate()
    precision_dtype(cfg.train.precision, select_device(cfg.train.device))  # e.g. cuda without CUDA: an error now
    a = cfg.attack
    if a.enabled:
        attack_device = str(select_device(a.device))
        precision_dtype(a.precision, attack_device)
        plan_grid(a.attacks, a.grid, a.backend, precision=a.precision)  # unknown attack or backend: an error now
    run_dir = Path(out) if out is not None else Path("runs") / cfg.name
    stages = ["prepare", "train", "evaluate"] + (["attack"] if a.enabled else []) + ["report"]
    step = {name: (i + 1, len(stages)) for i, name in enumerate(stages)}
    with stage(f"prepare {cfg.data.corpus} into {run_dir}", *step["prepare"]):
        prepare_run(cfg, run_dir)
    with stage("train", *step["train"]):
        train_run(run_dir)
    with stage("evaluate", *step["evaluate"]):
        evaluate_run(run_dir)
    if a.enabled:
        with stage(f"attack ({a.grid} grid)", *step["attack"]):
            run_grid(run_dir, attacks=a.attacks, grid=a.grid, limit=a.limit, seed=a.seed, per_speaker=a.per_speaker, backend=a.backend,
                     batch_size=a.batch_size, device=attack_device, precision=a.precision,
                     executor=get_executor(a.executor, address=a.executor_address))
    with stage("report", *step["report"]), run_logging(run_dir):
        report = build_report(run_dir)
    print(f"report: {report.resolve()}", flush=True)  # the run's last word: where to look
    return run_dir


