"""The attack benchmark's pass log and pass floor (benchmarks/attacks.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")


def _bench():
    spec = importlib.util.spec_from_file_location("seradv_bench_attacks", REPO_ROOT / "benchmarks" / "attacks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pass_log_counts_passes_by_batch_size(trained, tmp_path):
    from seradv.attacks import run_attack

    bench = _bench()
    m, x, y = trained["model"], trained["x"][:10], trained["y"][:10]
    log = bench.PassLog(m)
    try:
        run_attack("fgsm", m, x, y, {"eps": 0.1}, clip=trained["clip"], backend="torch", batch_size=4)
        with torch.inference_mode():
            m(torch.from_numpy(x[:3]))
    finally:
        log.close()
    # FGSM: one graph forward and one backward per batch (4 + 4 + 2); then one plain forward of 3
    assert log.fwd_grad == {4: 2, 2: 1} and log.bwd == {4: 2, 2: 1}
    seen = dict(log.fwd_inf)
    assert seen.get(3, 0) == 1, seen
    with torch.inference_mode():
        m(torch.from_numpy(x[:3]))  # closed: no longer logged
    assert dict(log.fwd_inf) == seen

    costs = bench.BatchCosts(m, x, torch.device("cpu"), tmp_path / "costs.json", repeats=1)
    floor = costs.pass_floor(log)
    c4, c2 = costs(4), costs(2)
    def graph(c):  # a graph forward and its backward
        return c["fwd"] + max(c["fb"] - c["fwd"], 0.0)

    expected = 2 * graph(c4) + graph(c2) + sum(k * costs(b)["inf"] for b, k in seen.items())
    assert floor == pytest.approx(expected, rel=1e-9)
    assert np.isnan(costs.pass_floor(bench.PassLog(torch.nn.Linear(2, 2))))
    # measured costs persist and are reused
    again = bench.BatchCosts(m, x, torch.device("cpu"), tmp_path / "costs.json")
    assert again.table == costs.table


def test_grid_totals_sum_the_study_cells_every_setting_ran():
    import pandas as pd

    bench = _bench()
    rows = [  # attack, params, backend, early_stop, seconds, full_set_seconds
        ("bim", "eps=1", "art", False, 10.0, 100.0),
        ("bim", "eps=1", "torch", False, 8.0, 80.0),
        ("bim", "eps=1", "torch", True, 1.0, 10.0),
        ("bim", "eps=1", "torchattacks", False, 9.0, 90.0),
        ("jsma", "theta=1", "art", False, 30.0, 300.0),  # torch never ran it: not common
        ("hopskipjump", "max_iter=20", "art", False, 50.0, 500.0),  # not in the study's grid
        ("hopskipjump", "max_iter=20", "torch", False, 20.0, 200.0),
        ("hopskipjump", "max_iter=20", "torch", True, 20.0, 200.0),
    ]
    table = pd.DataFrame(rows, columns=["attack", "params", "backend", "early_stop", "seconds", "full_set_seconds"])
    totals = bench.grid_totals(table)
    assert set(totals.index) == {"art", "torch", "torch (early stop)", "default"}
    assert totals.loc["art", "full_set_seconds"] == 100.0 and totals.loc["art", "cells"] == 1
    assert totals.loc["default", "full_set_seconds"] == 80.0  # bim's default backend: torch
    assert totals.loc["torch (early stop)", "full_set_seconds"] == 10.0
    assert bench.grid_totals(table[table.attack == "hopskipjump"]).empty  # no study cell
