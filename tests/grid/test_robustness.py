"""The attack grid runner on a small trained run: results, resume, trust checks, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.grid.conftest import copy_run as _copy_run
from seradv.grid import plan
from seradv.grid import run as grid_run
from seradv.errors import AttackError, ParameterError, RunDirError

TIMING = ["seconds", "samples_per_s"]


def test_grid_results_table(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path / "r")
    res = grid_run.run_grid(run, attacks=["fgsm", "bim"], grid="quick", backend="torch")
    allr = res[(res.group == "All") & (res.attack != "worst_case")]
    assert set(allr["attack"]) == {"fgsm", "bim"}
    assert (allr["adv_accuracy"] <= allr["clean_accuracy"]).all()
    for col in ("success_rate", "mean_abs_delta", "mean_l2", "mean_linf", "mean_l0", "conf_clean",
                "conf_adv", "loss_adv", "seconds", "samples_per_s"):
        assert col in res.columns
    fg = allr[allr.attack == "fgsm"]
    eps = fg["params_json"].map(lambda s: json.loads(s)["eps"])
    assert np.all(fg["mean_linf"] <= eps + 1e-4)
    assert {"All", "Male", "Female"} <= set(res["group"])
    out = run / "attacks"
    assert (out / "results.csv").exists() and (out / "results.parquet").exists()
    pq = pd.read_parquet(out / "results.parquet")
    assert len(pq) == len(res)
    for cid in set(allr["cell_id"]):
        delta = np.load(out / "adv" / f"{cid}.npy", allow_pickle=False)
        assert delta.shape[1:] == (261, 128)
    trust = pd.read_csv(out / "trust.csv")
    assert set(trust["check"]) >= {"monotone", "unbounded"}
    unb = trust[trust.check == "unbounded"].iloc[0]
    assert unb["status"] == "pass", unb["detail"]


def test_resume_after_interrupt_gives_the_same_table(trained_run, tmp_path, monkeypatch):
    full = grid_run.run_grid(_copy_run(trained_run, tmp_path / "a"), attacks=["fgsm", "bim"],
                               grid="quick", backend="torch", trust=False)
    run_b = _copy_run(trained_run, tmp_path / "b")
    real = grid_run.attack_cell
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(grid_run, "attack_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        grid_run.run_grid(run_b, attacks=["fgsm", "bim"], grid="quick", backend="torch", trust=False)
    done = len(list((run_b / "attacks" / "cells").glob("*.json")))
    assert done == 2
    monkeypatch.setattr(grid_run, "attack_cell", real)
    calls["n"] = 0
    resumed = grid_run.run_grid(run_b, attacks=["fgsm", "bim"], grid="quick", backend="torch", trust=False)
    key = ["cell_id", "group"]
    a = full.drop(columns=TIMING).sort_values(key).reset_index(drop=True)
    b = resumed.drop(columns=TIMING).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_limit_selects_a_seeded_stratified_subset(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path / "r")
    res = grid_run.run_grid(run, attacks=["fgsm"], grid="quick", limit=8, seed=3, backend="torch", trust=False)
    assert (res[res.group == "All"]["n"] == 8).all()
    meta = pd.read_csv(run / "segments.csv").query("subset == 'test'")
    a = plan.select_subset(meta.reset_index(drop=True), 8, 3)
    b = plan.select_subset(meta.reset_index(drop=True), 8, 3)
    np.testing.assert_array_equal(a, b)
    assert set(meta.iloc[a]["gender"]) == {"m", "f"}


def test_per_speaker_takes_segments_of_every_test_speaker(trained_run, tmp_path):
    meta = pd.read_csv(trained_run / "segments.csv").query("subset == 'test'").reset_index(drop=True)
    counts = meta["speaker"].value_counts()
    k = int(counts.min()) - 1
    assert k >= 1, "the test run needs speakers with at least 2 test segments"
    idx = plan.select_subset(meta, None, 5, per_speaker=k)
    np.testing.assert_array_equal(idx, plan.select_subset(meta, None, 5, per_speaker=k))
    picked = meta.iloc[idx]["speaker"].value_counts()
    assert set(picked.index) == set(counts.index)  # every test speaker
    assert (picked == k).all()
    # more than a speaker has: all of that speaker's segments
    big = int(counts.max()) + 1
    np.testing.assert_array_equal(plan.select_subset(meta, None, 5, per_speaker=big), np.arange(len(meta)))
    with pytest.raises(ParameterError, match="not both"):
        plan.select_subset(meta, 4, 5, per_speaker=k)
    with pytest.raises(ParameterError, match="per_speaker=0 must be a positive integer"):
        plan.select_subset(meta, None, 5, per_speaker=0)
    run = _copy_run(trained_run, tmp_path / "r")
    res = grid_run.run_grid(run, attacks=["fgsm"], grid="quick", per_speaker=k, seed=5, backend="torch", trust=False)
    assert (res[res.group == "All"]["n"] == k * len(counts)).all()


def test_bad_requests_fail_before_any_work(trained_run, tmp_path):
    with pytest.raises(AttackError, match="unknown attack"):
        grid_run.run_grid(trained_run, attacks=["nope"])
    with pytest.raises(ParameterError, match="grid"):
        grid_run.run_grid(trained_run, grid="huge")
    with pytest.raises(ParameterError, match="backend"):
        grid_run.run_grid(trained_run, attacks=["deepfool"], backend="nonexistent")
    untrained = tmp_path / "u"
    _copy_run(trained_run, untrained)
    (untrained / "model.safetensors").unlink()
    with pytest.raises(RunDirError, match="no trained model"):
        grid_run.run_grid(untrained, attacks=["fgsm"], grid="quick")
    assert not (untrained / "attacks").exists()


def test_where_selects_parameter_sets_and_rejects_bad_filters():
    from seradv.errors import ParameterError
    from seradv.grid.plan import parse_where, plan_grid

    assert parse_where("theta=1, gamma=1") == {"theta": 1.0, "gamma": 1.0}
    assert [c.params["theta"] for c in plan_grid(["jsma"], "paper", where="theta=1")] == [1.0]
    full = {c.cell_id("s", 0) for c in plan_grid(["jsma"], "paper")}
    assert {c.cell_id("s", 0) for c in plan_grid(["jsma"], "paper", where="theta=-0.5")} <= full  # same cells
    pix = plan_grid(["pixel", "fgsm"], "paper", where="th=10")
    assert [(c.attack, c.params["th"]) for c in pix] == [("pixel", 10)]
    with pytest.raises(ParameterError, match="th is not a parameter of jsma"):
        plan_grid(["jsma"], "paper", where="th=1")
    with pytest.raises(ParameterError, match="selects no cell"):
        plan_grid(["jsma"], "paper", where="theta=7")
    with pytest.raises(ParameterError, match="NAME=VALUE"):
        plan_grid(["jsma"], "paper", where="theta")
