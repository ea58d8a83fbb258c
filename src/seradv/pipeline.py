"""The Python API: prepare, train, evaluate and run, each on a run directory.

The CLI is a thin layer over these functions. A notebook user can call them directly::

    from seradv import pipeline
    from seradv.config import RunConfig, DataConfig
    cfg = RunConfig(name="emodb", data=DataConfig(corpus="emodb", data_dir="datasets/emodb"))
    pipeline.prepare_run(cfg, "runs/emodb")
    pipeline.train_run("runs/emodb")
    metrics = pipeline.evaluate_run("runs/emodb")   # a DataFrame

Every run directory holds ``config.yaml``, ``manifest.csv``, ``skipped.csv``, ``split.csv``,
``segments.csv``, ``standardizer.safetensors``, ``preprocessing.json``, ``model.safetensors``,
``model.json``, ``history.csv``, ``metrics.json``, ``metrics.csv``, ``confusion.csv``,
``predictions.csv`` and ``log.txt``; :func:`run` adds ``attacks/`` and ``report/``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
from safetensors.torch import load_file, save

from seradv.cache import atomic_write_bytes, atomic_write_json, read_json
from seradv.config import DataConfig, RunConfig, TrainConfig, load_config
from seradv.corpora import Manifest, get_corpus
from seradv.dataset import load_subset, prepare, read_preprocessing
from seradv.errors import ModelError, RunDirError
from seradv.evaluation import group_metrics, predict_logits
from seradv.models import build_model, check_model, count_parameters
from seradv.training import fit, resolve_hyperparameters, set_seed

log = logging.getLogger("seradv")

__all__ = [
    "prepare_run",
    "train_run",
    "evaluate_run",
    "run",
    "load_model",
    "load_run_config",
    "demo_config",
    "run_logging",
]


@contextlib.contextmanager
def run_logging(run_dir: str | Path) -> Iterator[None]:
    """Append seradv's log records to ``run_dir/log.txt`` while the block runs."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("seradv")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


DOWNSTREAM = ("train_state.pt", "model.safetensors", "model.json", "history.csv", "metrics.csv",
              "metrics.json", "confusion.csv", "predictions.csv")
"""Files that depend on the preparation and are removed when it changes."""


def _fingerprint(run_dir: Path) -> str | None:
    files = [run_dir / "config.yaml", run_dir / "preprocessing.json", run_dir / "segments.csv"]
    if not all(f.exists() for f in files):
        return None
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The ``config.yaml`` of a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise RunDirError(f"{run_dir} has no config.yaml; is it a seradv run directory?")
    return load_config(path)


def prepare_run(cfg: RunConfig, run_dir: str | Path, *, manifest: Manifest | pd.DataFrame | None = None) -> dict:
    """Corpus table -> split -> features -> standardizer, written into ``run_dir``."""
    run_dir = Path(run_dir)
    old = _fingerprint(run_dir)
    with run_logging(run_dir):
        t0 = time.perf_counter()
        info = prepare(cfg, run_dir, manifest=manifest)
        if old is not None and old != _fingerprint(run_dir):
            stale = [p for p in DOWNSTREAM if (run_dir / p).exists()]
            for p in stale:
                (run_dir / p).unlink()
            if stale:
                log.info("preparation changed: removed stale %s", ", ".join(stale))
        log.info("prepared %s in %.1f s: %s", run_dir, time.perf_counter() - t0, info["counts"])
        if info["leaky"]:
            log.warning(info["leak_note"])
    return info


def train_run(
    run_dir: str | Path,
    *,
    model: torch.nn.Module | None = None,
    train_overrides: dict | None = None,
) -> dict:
    """Train the run's model (or the given ``torch.nn.Module``) and save it.

    ``train_overrides`` changes keys of the ``train`` section (e.g. ``{"epochs": 1}``); the
    changed config is saved back. Training resumes from ``train_state.pt`` if present.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if train_overrides:
        cfg = cfg.replace(**{f"train.{k}": v for k, v in train_overrides.items()})
        from seradv.config import save_config

        save_config(cfg, run_dir / "config.yaml")
    info = read_preprocessing(run_dir)
    recipe = get_corpus(cfg.data.corpus)
    hyper = resolve_hyperparameters(cfg.train, recipe.hyperparameters)
    with run_logging(run_dir):
        train = load_subset(run_dir, "train")
        val = load_subset(run_dir, "val")
        n_classes = len(info["classes"])
        model_name = cfg.train.model if model is None else type(model).__name__
        if model is None:
            set_seed(cfg.train.seed)  # the initial weights depend on the seed only
            model = build_model(cfg.train.model, n_classes, dropout=hyper["dropout"],
                                lstm_dropout=hyper["lstm_dropout"])
        check_model(model, n_classes, tuple(info["input_shape"]))
        n_params = count_parameters(model)
        log.info("model %s: %d trainable parameters (%.2f M)", model_name, n_params, n_params / 1e6)
        log.info("training on %d segments, validating on %d; lr %g, batch %d, dropout %g/%g",
                 len(train), len(val), hyper["lr"], hyper["batch_size"], hyper["dropout"], hyper["lstm_dropout"])
        result = fit(model, train.x, train.y, val.x, val.y, cfg.train, lr=hyper["lr"],
                     batch_size=hyper["batch_size"], state_path=run_dir / "train_state.pt")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write_bytes(run_dir / "model.safetensors", save(state))
        meta = {
            "model": model_name,
            "registered": model_name == cfg.train.model,
            "n_classes": n_classes,
            "classes": info["classes"],
            "input_shape": info["input_shape"],
            "parameters": n_params,
            "hyperparameters": hyper,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "train_seconds": round(result.seconds, 2),
            "n_train": len(train),
            "n_val": len(val),
        }
        atomic_write_json(run_dir / "model.json", meta)
        result.history.to_csv(run_dir / "history.csv", index=False)
        log.info("trained %d epochs in %.0f s (best epoch %d)", result.epochs_run, result.seconds,
                 result.best_epoch)
    return meta


def load_model(run_dir: str | Path, *, model: torch.nn.Module | None = None,
               device: str = "cpu") -> torch.nn.Module:
    """The trained model of ``run_dir`` in eval mode.

    For a model that is not in the registry, pass an instance of it as ``model``: its
    weights are loaded from ``model.safetensors`` (strictly: every key must match).
    """
    run_dir = Path(run_dir)
    meta_path, weights = run_dir / "model.json", run_dir / "model.safetensors"
    if not meta_path.exists() or not weights.exists():
        raise RunDirError(f"{run_dir} has no trained model (model.safetensors); run `seradv train {run_dir}`")
    meta = read_json(meta_path)
    if model is None:
        if not meta.get("registered", True):
            raise ModelError(
                f"{run_dir} holds weights of the unregistered model {meta['model']!r}; pass an "
                f"instance of it as model= or register it with seradv.models.register_model"
            )
        hyper = meta["hyperparameters"]
        model = build_model(meta["model"], meta["n_classes"], dropout=hyper["dropout"],
                            lstm_dropout=hyper["lstm_dropout"])
    state = load_file(str(weights), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights in {weights} do not fit {type(model).__name__}: {exc}") from None
    return model.to(device).eval()


def evaluate_run(run_dir: str | Path, *, model: torch.nn.Module | None = None,
                 device: str = "cpu") -> pd.DataFrame:
    """Clean test metrics per corpus/language and gender; writes metrics and confusions."""
    run_dir = Path(run_dir)
    info = read_preprocessing(run_dir)
    model = load_model(run_dir, model=model, device=device)
    with run_logging(run_dir):
        test = load_subset(run_dir, "test")
        logits = predict_logits(model, test.x, device=device)
        table, confusions = group_metrics(test.y, logits, test.meta, test.classes)
        table.insert(0, "split", info["split"])
        table.insert(1, "leaky", info["leaky"])
        table.to_csv(run_dir / "metrics.csv", index=False)
        conf_rows = []
        for key, cm in confusions.items():
            corpus, language, group = key.split("/")
            for i, true in enumerate(test.classes):
                for j, pred in enumerate(test.classes):
                    conf_rows.append({"corpus": corpus, "language": language, "group": group,
                                      "true": true, "predicted": pred, "count": int(cm[i, j])})
        pd.DataFrame(conf_rows).to_csv(run_dir / "confusion.csv", index=False)
        pred = test.meta[["segment_id", "utterance", "variant", "seg_index", "speaker", "gender",
                          "emotion", "corpus", "language"]].copy()
        pred["predicted"] = [test.classes[i] for i in logits.argmax(1)]
        pred["correct"] = pred["predicted"] == pred["emotion"]
        pred.to_csv(run_dir / "predictions.csv", index=False)
        test_speakers = sorted(test.meta["speaker"].unique())
        atomic_write_json(run_dir / "metrics.json", {
            "split": info["split"], "leaky": info["leaky"], "note": info["leak_note"],
            "classes": test.classes, "test_speakers": test_speakers,
            "metrics": table.to_dict(orient="records"),
            "confusion": {k: v.tolist() for k, v in confusions.items()},
        })
        for r in table.itertuples():
            log.info("%s/%s %s: n=%d acc %.3f UAR %.3f F1 %.3f", r.corpus, r.language, r.group, r.n,
                     r.accuracy, r.uar, r.macro_f1)
    return table


def demo_config() -> RunConfig:
    """The small configuration of ``seradv run`` with no arguments (synthetic corpus)."""
    from seradv.config import AttackConfig, AugmentConfig

    return RunConfig(
        name="demo",
        data=DataConfig(corpus="synthetic"),
        augment=AugmentConfig(pitch_steps=(-1.5, 1.5), stretch_rates=()),
        train=TrainConfig(epochs=8, patience=4, lr_patience=3),
        attack=AttackConfig(grid="quick", limit=32, attacks=("fgsm", "bim", "deepfool", "boundary")),
    )


def run(cfg: RunConfig | None = None, *, out: str | Path | None = None) -> Path:
    """All stages end to end, then the report; returns the run directory (``./runs/<name>`` by default).

    The report is written to ``<run_dir>/report/`` (:func:`seradv.report.build_report`) and
    its path printed.
    """
    cfg = (cfg or demo_config()).validate()
    run_dir = Path(out) if out is not None else Path("runs") / cfg.name
    prepare_run(cfg, run_dir)
    train_run(run_dir)
    evaluate_run(run_dir)
    if cfg.attack.enabled:
        from seradv.robustness import run_grid

        a = cfg.attack
        run_grid(run_dir, attacks=a.attacks, grid=a.grid, limit=a.limit, seed=a.seed, backend=a.backend,
                 batch_size=a.batch_size, device=a.device)
    from seradv.report import build_report

    with run_logging(run_dir):
        report = build_report(run_dir)
    print(f"report: {report.resolve()}", flush=True)  # the run's last word: where to look
    return run_dir


