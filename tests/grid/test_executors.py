"""Executors: the Ray executor leaves exactly the files the local one does (same cells, same
per-sample results, same perturbations), and bad executor settings get one-line errors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from seradv.errors import ParameterError
from seradv.grid import executors
from seradv.grid.run import run_grid
from seradv.rundir import cells_dir
from tests.grid.conftest import copy_run

ATTACKS = ["fgsm", "bim", "deepfool", "boundary"]
TIMING = ("seconds", "wall_seconds", "samples_per_s", "seconds_per_sample")


@pytest.fixture
def ray_local():
    ray = pytest.importorskip("ray", reason="the Ray executor needs ray (pip install 'seradv[ray]')")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20,
                 _system_config={"worker_niceness": 0})  # Ray's default 15: starved on a busy machine
    except Exception as exc:  # noqa: BLE001 - an environment that cannot start Ray at all
        pytest.skip(f"Ray could not start a local instance here: {type(exc).__name__}: {exc}")
    yield ray
    ray.shutdown()


def _table(run) -> pd.DataFrame:
    t = pd.read_csv(run / "attacks" / "results.csv")
    return t.drop(columns=[c for c in t.columns if c in TIMING]).sort_values(["cell_id", "group"]).reset_index(drop=True)


def test_ray_executor_writes_what_the_local_one_writes(trained_run, tmp_path, ray_local):
    local, remote = copy_run(trained_run, tmp_path / "local"), copy_run(trained_run, tmp_path / "ray")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray tasks run with their one CPU's thread
    try:
        run_grid(local, attacks=ATTACKS, grid="quick", limit=12, seed=2)
    finally:
        torch.set_num_threads(threads)
    run_grid(remote, attacks=ATTACKS, grid="quick", limit=12, seed=2,
             executor=executors.RayExecutor(num_cpus=1))
    pd.testing.assert_frame_equal(_table(local), _table(remote))
    names = sorted(p.name for p in cells_dir(local).iterdir() if not p.name.endswith(".lock"))
    assert names == sorted(p.name for p in cells_dir(remote).iterdir() if not p.name.endswith(".lock"))
    for name in names:
        if name.endswith(".samples.csv"):
            assert (cells_dir(local) / name).read_bytes() == (cells_dir(remote) / name).read_bytes(), name
    for npy in (local / "attacks" / "adv").iterdir():
        assert npy.read_bytes() == (remote / "attacks" / "adv" / npy.name).read_bytes(), npy.name
    # a second run reuses the Ray-computed cells (same files, same fingerprints)
    again = run_grid(remote, attacks=ATTACKS, grid="quick", limit=12, seed=2)
    assert set(again["cell_id"]) == set(_table(remote)["cell_id"])


def test_executor_settings_are_checked():
    assert isinstance(executors.get_executor("local"), executors.LocalExecutor)
    assert isinstance(executors.get_executor("ray", address="auto"), executors.RayExecutor)
    with pytest.raises(ParameterError, match="executor='dask' must be one of local, ray"):
        executors.get_executor("dask")
    with pytest.raises(ParameterError, match="needs --executor ray"):
        executors.get_executor("local", address="auto")
    with pytest.raises(ParameterError, match="num_cpus=0 must be a positive integer"):
        executors.RayExecutor(num_cpus=0)


def test_cli_executor_errors(trained_run):
    from tests.test_cli import assert_one_line_error, invoke

    assert_one_line_error(invoke("attack", trained_run, "--executor", "dask", "--attacks", "fgsm"),
                          "executor='dask' must be one of local, ray")
    assert_one_line_error(invoke("attack", trained_run, "--address", "auto", "--attacks", "fgsm"),
                          "needs --executor ray")
    assert_one_line_error(invoke("attack", trained_run, "--executor", "ray", "--task-cpus", "0"),
                          "--task-cpus")


def test_config_executor_is_validated():
    from seradv.config import AttackConfig
    from seradv.errors import ConfigError

    AttackConfig(executor="ray", executor_address="auto").validate()
    with pytest.raises(ConfigError, match="attack.executor='dask' must be 'local' or 'ray'"):
        AttackConfig(executor="dask").validate()
    with pytest.raises(ConfigError, match="executor_address needs attack.executor: ray"):
        AttackConfig(executor_address="auto").validate()
