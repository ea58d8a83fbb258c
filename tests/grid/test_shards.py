"""Sample shards: the attacks of SHARD_RULES give, shard by shard, exactly the unsharded result
(and a seeded random attack does not, which is why it is not sharded); a sharded Ray grid leaves
the unsharded cells' files, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from seradv.attacks import get_attack, run_attack
from seradv.errors import ParameterError
from seradv.grid import executors
from seradv.grid.executors import SHARD_RULES, merge_results, shard_bounds, shardable
from seradv.grid.run import run_grid
from seradv.rundir import cells_dir
from tests.grid.conftest import copy_run
from tests.grid.test_executors import _table, ray_local  # noqa: F401 - the Ray fixture
from tests.helpers.attack import N_CLASSES

pytestmark = pytest.mark.usefixtures("one_thread")


def _quick(name: str) -> dict:
    return dict(get_attack(name).grid("quick")[0])


def _sharded(name, model, x, y, params, bounds, **kw):
    return merge_results([run_attack(name, model, x[a:b], y[a:b], params, **kw) for a, b in bounds])


def test_shard_bounds_cut_at_batches():
    assert shard_bounds(64, 16, 2) == [(0, 32), (32, 64)]
    assert shard_bounds(70, 16, 3) == [(0, 32), (32, 48), (48, 70)]
    assert shard_bounds(10, 64, 4) == [(0, 10)]  # one batch: one shard
    for n, b, k in ((100, 10, 3), (7, 2, 7), (33, 4, 5)):
        cuts = shard_bounds(n, b, k)
        assert cuts[0][0] == 0 and cuts[-1][1] == n and len(cuts) <= k
        assert all(s1 == a2 for (_, s1), (a2, _) in zip(cuts, cuts[1:]))
        assert all(a % b == 0 for a, _ in cuts)
    with pytest.raises(ParameterError, match="shard_bounds needs"):
        shard_bounds(0, 4, 2)


def test_which_cells_are_sharded():
    assert shardable("fgsm", {"eps": 0.5}, None, 7)
    assert not shardable("fgsm", {"eps": 0.5}, "art", 7)  # ART: never
    assert shardable("deepfool", {"nb_grads": 7}, "torch", 7)
    assert not shardable("deepfool", {"nb_grads": 5}, "torch", 7)  # the union of top classes over the cell
    for name in ("pgd", "apgd_ce", "boundary", "pixel", "jsma", "square", "pgd_linf_wave"):
        assert not shardable(name, None, None, 7), name
    with pytest.raises(ParameterError, match="shards=0 must be a positive integer"):
        executors.ShardedAttack(0)
    with pytest.raises(ParameterError, match="sample shards need --executor ray"):
        executors.get_executor("local", shards=2)


@pytest.mark.parametrize("name", sorted(SHARD_RULES))
def test_shards_equal_the_whole_cell(trained, name):
    model, clip = trained["model"], trained["clip"]
    x, y = trained["x"][:12], trained["y"][:12]
    params = _quick(name)
    assert shardable(name, params, None, N_CLASSES)
    kw = {"clip": clip, "batch_size": 4, "seed": 3}
    whole = run_attack(name, model, x, y, params, **kw)
    parts = _sharded(name, model, x, y, params, shard_bounds(len(x), 4, 3), **kw)
    assert parts.shards == 3
    assert np.array_equal(whole.x_adv, parts.x_adv)
    assert np.abs(whole.x_adv - x).max() > 0  # the attack did something
    for flags in ("attacked", "fooled_any"):
        a, b = getattr(whole, flags), getattr(parts, flags)
        assert (a is None and b is None) or np.array_equal(a, b), flags
    assert (whole.n_queries, whole.n_grads, whole.n_backward) == (parts.n_queries, parts.n_grads, parts.n_backward)


def test_a_seeded_random_start_is_not_shard_exact(trained):
    """PGD's random starts come from one stream seeded per cell: a shard starts it afresh."""
    model, clip = trained["model"], trained["clip"]
    x, y = trained["x"][:8], trained["y"][:8]
    params = {"eps": 0.5, "eps_step": 0.1, "max_iter": 2, "num_random_init": 1}
    kw = {"clip": clip, "batch_size": 4, "seed": 3}
    whole = run_attack("pgd", model, x, y, params, **kw)
    parts = _sharded("pgd", model, x, y, params, shard_bounds(8, 4, 2), **kw)
    assert np.array_equal(whole.x_adv[:4], parts.x_adv[:4])  # the first shard draws what the cell drew first
    assert not np.allclose(whole.x_adv[4:], parts.x_adv[4:], atol=1e-3)


def test_sharded_ray_grid_writes_the_unsharded_cells(trained_run, tmp_path, ray_local):  # noqa: F811
    attacks = ["fgsm", "deepfool", "pgd"]  # pgd: planned with shards, run whole
    local, remote = copy_run(trained_run, tmp_path / "local"), copy_run(trained_run, tmp_path / "ray")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_grid(local, attacks=attacks, grid="quick", limit=12, seed=2, batch_size=4, trust=False)
    finally:
        torch.set_num_threads(threads)
    run_grid(remote, attacks=attacks, grid="quick", limit=12, seed=2, batch_size=4, trust=False,
             executor=executors.RayExecutor(num_cpus=1, shards=3))
    pd.testing.assert_frame_equal(_table(local), _table(remote))
    shards = {}
    for f in sorted(cells_dir(remote).glob("*.json")):
        cell = json.loads(f.read_text())
        shards[cell["attack"]] = cell["facts"].get("shards", 1)
        name = f.name.replace(".json", ".samples.csv")
        assert (cells_dir(local) / name).read_bytes() == (cells_dir(remote) / name).read_bytes(), name
    assert shards == {"fgsm": 3, "deepfool": 3, "pgd": 1}
    for npy in (local / "attacks" / "adv").iterdir():
        assert npy.read_bytes() == (remote / "attacks" / "adv" / npy.name).read_bytes(), npy.name
