"""Training as executor tasks: the folds of a speaker-CV run trained as Ray tasks have the
weights of a local training at the same thread count, and resume fold by fold."""

from __future__ import annotations

import shutil

import pytest
import torch

from seradv import pipeline
from seradv.errors import ParameterError
from seradv.grid.executors import RayExecutor
from seradv.grid.train_tasks import train_folds, train_runs, training_units
from seradv.rundir import MODEL_META, MODEL_WEIGHTS, fold_run_dirs
from tests.grid.test_executors import ray_local  # noqa: F401 - the Ray fixture
from tests.helpers.corpus import make_tone_corpus, tone_config

pytestmark = pytest.mark.usefixtures("one_thread")
REGISTERS = ("tests.helpers.corpus",)  # the tones corpus and the tiny model, in every Ray worker


@pytest.fixture(scope="module")
def cv_prepared(tmp_path_factory):
    """A prepared (untrained) speaker-CV run on the tone corpus: 3 folds, 1 epoch each."""
    root = tmp_path_factory.mktemp("cvtasks")
    data = make_tone_corpus(root / "tones", n_per_gender=3, per=2)
    cfg = tone_config(data, epochs=1).replace(**{"split.kind": "speaker_cv", "train.threads": 1})
    pipeline.prepare_run(cfg, root / "run")
    return root / "run"


def _weights(run_dir):
    return [(d / MODEL_WEIGHTS).read_bytes() for d in fold_run_dirs(run_dir)]


def test_folds_as_ray_tasks_equal_local_training(cv_prepared, tmp_path, ray_local):  # noqa: F811
    local, remote = tmp_path / "local", tmp_path / "ray"
    shutil.copytree(cv_prepared, local)
    shutil.copytree(cv_prepared, remote)
    assert [u for _, u in training_units([local])] == fold_run_dirs(local)
    torch.set_num_threads(1)
    meta_local = train_folds(local)
    meta_ray = train_folds(remote, executor=RayExecutor(num_cpus=1, imports=REGISTERS))
    assert len(meta_ray["folds"]) == len(meta_local["folds"]) == 3
    assert _weights(local) == _weights(remote)
    assert [m["weights_sha256"] for m in meta_ray["folds"]] == [m["weights_sha256"] for m in meta_local["folds"]]
    assert len(set(_weights(remote))) == 3  # three folds, three models

    # resume: a fold interrupted after its last epoch is finished from its own state, the others reused
    before = _weights(remote)
    second = fold_run_dirs(remote)[1]
    for name in (MODEL_WEIGHTS, MODEL_META):
        (second / name).unlink()
    again = train_runs([remote], executor=RayExecutor(num_cpus=1, imports=REGISTERS))[remote]
    assert _weights(remote) == before
    assert [m["weights_sha256"] for m in again["folds"]] == [m["weights_sha256"] for m in meta_local["folds"]]


def test_train_runs_arguments(cv_prepared):
    with pytest.raises(ParameterError, match="at least one run directory"):
        train_runs([])
    with pytest.raises(ParameterError, match="given twice"):
        train_runs([cv_prepared, cv_prepared])
