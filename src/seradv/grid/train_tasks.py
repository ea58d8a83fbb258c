"""Training as executor tasks: the folds of speaker-CV runs, and several runs, side by side.

:func:`train_runs` trains every given run directory, a speaker-fold CV run as its folds
(:func:`~seradv.rundir.fold_run_dirs`), each fold or run one call of
:func:`seradv.pipeline.train_run`: one after another in this process (``executor=None`` or a
:class:`~seradv.grid.executors.LocalExecutor`), or each a Ray task
(:class:`~seradv.grid.executors.RayExecutor`: ``num_cpus`` CPUs and as many torch threads,
``num_gpus`` GPUs) on a local Ray instance or a cluster whose nodes all see the run
directories. Each task writes its run's files itself, exactly as a local training does, so:

* every fold resumes on its own (its ``train_state.pt``), a finished one is reused, whoever
  trained it;
* the weights equal a local training's at the same torch thread count (the training's
  batches and updates depend on the seed only; float round-off of CPU kernels can depend on
  the thread count: ``train.threads`` in the config pins it for both).

:func:`train_folds` is the one-run form.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from seradv.config import save_config
from seradv.errors import ParameterError
from seradv.grid.executors import Executor, LocalExecutor, RayExecutor
from seradv.rundir import CONFIG, fold_run_dirs, is_cv_run, load_run_config, run_logging

log = logging.getLogger(__name__)

__all__ = ["train_folds", "train_runs", "training_units"]


def training_units(run_dirs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """``(run_dir, unit)`` for every training of ``run_dirs``: a CV run's folds, or the run."""
    units = []
    for run_dir in map(Path, run_dirs):
        folds = fold_run_dirs(run_dir) if is_cv_run(run_dir) else [run_dir]
        units += [(run_dir, d) for d in folds]
    return units


def _train_unit(unit: str, train_overrides: dict | None) -> dict:
    """One training (a fold or a run) where the task runs: :func:`seradv.pipeline.train_run`."""
    from seradv import pipeline  # in the worker: the pipeline's imports are heavy

    return pipeline.train_run(unit, train_overrides=train_overrides)


def train_runs(run_dirs: Sequence[str | Path], *, executor: Executor | None = None,
               train_overrides: dict | None = None) -> dict[Path, dict]:
    """Train every run of ``run_dirs`` (a CV run: each fold), each training a task of
    ``executor``; returns ``{run_dir: record}`` as :func:`seradv.pipeline.train_run` returns
    it (a CV run: fold 1's record with ``folds``, the records of all folds).

    ``train_overrides`` changes keys of every run's ``train`` section (checked on every run
    before any training starts); a CV run's top-level config is saved once its folds are done.
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ParameterError("train_runs needs at least one run directory")
    if len(set(run_dirs)) != len(run_dirs):
        raise ParameterError("train_runs: a run directory is given twice")
    configs = {}
    for d in run_dirs:
        cfg = load_run_config(d)
        configs[d] = cfg.replace(**{f"train.{k}": v for k, v in train_overrides.items()}) if train_overrides else cfg
    units = training_units(run_dirs)
    for run_dir in run_dirs:
        if is_cv_run(run_dir):
            with run_logging(run_dir):
                log.info("speaker_cv: %d folds as %s tasks", sum(r == run_dir for r, _ in units),
                         type(executor or LocalExecutor()).__name__)
    calls = [(str(u), train_overrides) for _, u in units]
    if isinstance(executor, RayExecutor):
        metas = executor.map(_train_unit, calls, label="training")
    elif executor is None or isinstance(executor, LocalExecutor):
        metas = [_train_unit(*c) for c in calls]
    else:
        raise ParameterError(f"train_runs: executor {type(executor).__name__} cannot run trainings")
    out: dict[Path, dict] = {}
    for run_dir in run_dirs:
        mine = [m for (r, _), m in zip(units, metas) if r == run_dir]
        if is_cv_run(run_dir):
            if train_overrides:
                save_config(configs[run_dir], run_dir / CONFIG)
            out[run_dir] = {**mine[0], "folds": mine}
        else:
            out[run_dir] = mine[0]
    return out


def train_folds(run_dir: str | Path, *, executor: Executor | None = None,
                train_overrides: dict | None = None) -> dict:
    """Train one run (a CV run: its folds as tasks of ``executor``); :func:`train_runs`."""
    return train_runs([run_dir], executor=executor, train_overrides=train_overrides)[Path(run_dir)]
