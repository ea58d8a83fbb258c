"""Robust accuracy, stale and truncated cells, the cell lock, the worst case and trust checks
that fire on a deliberately masked model: the grid on a small trained run (tone corpus)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tests.grid.conftest import copy_run as _copy
from seradv import pipeline
from seradv.grid import plan, results
from seradv.grid import run as grid_run
from seradv.prepare import SplitData, load_subset
from seradv.rundir import read_preprocessing
from seradv.evaluation import GROUPS
from seradv.rundir import run_fingerprints


def _test_data(run: Path) -> tuple[nn.Module, SplitData, tuple[float, float]]:
    info = read_preprocessing(run)
    lo, hi = info.clip_values
    test = load_subset(run, "test")
    data = SplitData(x=np.clip(test.x, lo, hi).astype(np.float32), y=test.y, meta=test.meta, classes=test.classes)
    return pipeline.load_model(run), data, (lo, hi)


def test_results_are_recomputed_from_the_per_sample_file(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path / "r")
    res = grid_run.run_grid(run, attacks=["fgsm", "deepfool"], grid="quick", trust=False)
    cells = res[res["attack"] != "worst_case"]
    for col in ("robust_accuracy", "n", "n_not_attacked", "n_clean_correct", "adv_accuracy"):
        assert col in cells and cells[col].notna().all(), col
    for r in cells.itertuples():
        s = pd.read_csv(run / "attacks" / "cells" / f"{r.cell_id}.samples.csv")
        s = s if GROUPS[r.group] is None else s[s["gender"] == GROUPS[r.group]]
        ok = s["pred_clean"] == s["label"]
        robust = ok & s["attacked"] & ~s["fooled_any"] & (s["pred_adv"] == s["label"])
        assert r.n == len(s)
        assert r.robust_accuracy == pytest.approx(robust.mean())
        assert r.n_not_attacked == int((~s["attacked"]).sum())
        assert r.n_clean_correct == int(ok.sum())
        assert r.adv_accuracy == pytest.approx((s["pred_adv"] == s["label"]).mean())
        assert (s["robust"] == robust).all()
    on_disk = pd.read_csv(run / "attacks" / "results.csv")
    assert "robust_accuracy" in on_disk and len(on_disk) == len(res)


def test_deepfool_on_a_model_with_clean_errors_is_not_counted_robust(trained_run):
    """DeepFool moves a sample away from the model's prediction: on a sample the model got
    wrong it may land on the true class. The study's accuracy counts that; robust accuracy not."""
    model, data, clip = _test_data(trained_run)
    cell = plan.Cell("deepfool", {"max_iter": 5, "nb_grads": 5, "overshoot": 1e-5, "output": "logits"}, "torch")
    first, _, _ = grid_run.attack_cell(model, data, cell, clip=clip)
    moved = np.flatnonzero(first["pred_adv"].to_numpy() != first["pred_clean"].to_numpy())
    assert len(moved) >= 4
    # relabel half the moved samples with the class DeepFool takes them to: wrong before, "right" after
    y = data.y.copy()
    wrong = moved[: len(moved) // 2]
    y[wrong] = first["pred_adv"].to_numpy()[wrong]
    relabelled = SplitData(x=data.x, y=y, meta=data.meta, classes=data.classes)
    samples, _, facts = grid_run.attack_cell(model, relabelled, cell, clip=clip)
    row = results.summarise(samples, cell, facts, cell_id="c", n_total=len(samples))[0]
    assert row["clean_accuracy"] < 1.0
    assert row["robust_accuracy"] < row["adv_accuracy"]
    assert not samples["robust"].to_numpy()[wrong].any()
    assert (samples["pred_adv"].to_numpy()[wrong] == y[wrong]).all()


def test_a_cell_of_an_earlier_model_is_recomputed_not_reused(trained_run, tmp_path):
    a = _copy(trained_run, tmp_path / "a")
    first = grid_run.run_grid(a, attacks=["fgsm"], grid="quick", trust=False)
    # the same run retrained on another seed (other weights, same cell ids), given a's results
    b = _copy(trained_run, tmp_path / "b")
    pipeline.train_run(b, train_overrides={"seed": 7})
    shutil.copytree(a / "attacks", b / "attacks")
    stale = results.load_results(b)
    assert stale.empty  # a's cells are left out of b's table until recomputed
    calls = []
    real = grid_run.attack_cell

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    grid_run.attack_cell = counting
    try:
        again = grid_run.run_grid(b, attacks=["fgsm"], grid="quick", trust=False)
    finally:
        grid_run.attack_cell = real
    assert len(calls) == 2  # both FGSM cells recomputed on the new model
    assert set(again["cell_id"]) == set(first["cell_id"])
    cell = json.loads((b / "attacks" / "cells" / f"{again['cell_id'].iloc[0]}.json").read_text())
    assert cell["fingerprint"]["model"] == run_fingerprints(b)["model"] != run_fingerprints(a)["model"]


@pytest.mark.parametrize("damage", ["json", "samples"])
def test_a_truncated_cell_is_recomputed(trained_run, tmp_path, damage, caplog):
    run = _copy(trained_run, tmp_path / "r")
    full = grid_run.run_grid(run, attacks=["fgsm"], grid="quick", trust=False)
    cid = full["cell_id"].iloc[0]
    f = run / "attacks" / "cells" / (f"{cid}.json" if damage == "json" else f"{cid}.samples.csv")
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    left = results.load_results(run)
    assert cid not in set(left["cell_id"])
    assert "left out of the results" in caplog.text and f.name.split(".")[0] in caplog.text
    again = grid_run.run_grid(run, attacks=["fgsm"], grid="quick", trust=False)
    key = ["cell_id", "group"]
    cols = [c for c in again.columns if c not in ("seconds", "samples_per_s")]
    pd.testing.assert_frame_equal(full[cols].sort_values(key).reset_index(drop=True),
                                  again[cols].sort_values(key).reset_index(drop=True))


def test_a_locked_cell_is_not_computed_twice(tmp_path):
    lock = tmp_path / "c.lock"
    with grid_run._cell_lock(lock, wait=False) as a:
        assert a
        with grid_run._cell_lock(lock, wait=False) as b:  # another open file: like another process
            assert not b
    with grid_run._cell_lock(lock, wait=False) as c:
        assert c


def test_params_outside_the_grid(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path / "r")
    res = grid_run.run_grid(run, attacks=["bim"], params="eps=0.3,max_iter=3", trust=False)
    row = res[(res["attack"] == "bim") & (res["group"] == "All")].iloc[0]
    assert json.loads(row["params_json"]) == {"eps": 0.3, "eps_step": 0.1, "max_iter": 3}


def test_worst_case_counts_every_attack_inside_the_budget(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path / "r")
    res = grid_run.run_grid(run, attacks=["fgsm", "bim", "deepfool"], grid="quick", trust=False)
    frames = results.worst_case_frames(run, res)
    assert frames
    cells = run / "attacks" / "cells"
    for wid, (facts, wc) in frames.items():
        eps = facts["eps"]
        wc = wc.sort_values("segment_id").reset_index(drop=True)
        expect = (wc["pred_clean"] == wc["label"]).to_numpy().copy()
        allr = res[res["group"] == "All"].set_index("cell_id")
        for cid in facts["members"]:
            s = results.read_samples(cells / f"{cid}.samples.csv")
            s = s.sort_values("segment_id").reset_index(drop=True)
            assert s["segment_id"].tolist() == wc["segment_id"].tolist()
            inside = s["attacked"].to_numpy() & (s["linf"].to_numpy() <= eps + results.budget_tol(eps))
            budget = json.loads(allr.loc[cid, "params_json"]).get("eps")
            if allr.loc[cid, "attack"] in ("fgsm", "bim") and budget <= eps:
                fooled = ~s["robust"].to_numpy()  # every iterate inside the budget
            else:
                fooled = (s["pred_adv"] != s["label"]).to_numpy()  # only the returned example
            expect &= ~(inside & fooled)
        np.testing.assert_array_equal(wc["robust"].to_numpy(), expect)
        # every FGSM / BIM cell with a budget <= eps is a member (smaller budgets included)
        budget_cells = res[(res["attack"].isin(["fgsm", "bim"])) & (res["group"] == "All")]
        for r in budget_cells.itertuples():
            if json.loads(r.params_json)["eps"] <= eps:
                assert r.cell_id in facts["members"]
        row = res[(res["cell_id"] == wid) & (res["group"] == "All")].iloc[0]
        assert row["robust_accuracy"] == pytest.approx(wc["robust"].mean())
    # worst case is never above any member at its budget
    allr = res[res["group"] == "All"].set_index("cell_id")
    for wid, (facts, _) in frames.items():
        for cid in facts["members"]:
            if allr.loc[cid, "attack"] in ("fgsm", "bim") and json.loads(allr.loc[cid, "params_json"])["eps"] == facts["eps"]:
                assert allr.loc[wid, "robust_accuracy"] <= allr.loc[cid, "robust_accuracy"] + 1e-12


def test_worst_case_leaves_out_a_cell_over_its_budget(trained_run, tmp_path, caplog):
    run = _copy(trained_run, tmp_path / "r")
    res = grid_run.run_grid(run, attacks=["fgsm"], grid="quick", trust=False)
    cid = res[(res["attack"] == "fgsm") & res["params_json"].str.contains('"eps": 0.25')]["cell_id"].iloc[0]
    f = run / "attacks" / "cells" / f"{cid}.samples.csv"
    s = pd.read_csv(f)
    s.loc[0, "linf"] = 0.9  # a sample outside its declared eps 0.25
    s.to_csv(f, index=False)
    frames = results.worst_case_frames(run, res)
    assert all(cid not in facts["members"] or facts["eps"] >= 0.9 for facts, _ in frames.values())
    assert "exceed the declared Linf budget" in caplog.text


class Masked(nn.Module):
    """``round(4 x) / 4`` in front of a model: zero input gradients everywhere (gradient masking)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(4 * x) / 4)


def test_trust_checks_fire_on_a_masked_model(trained_run, tmp_path, monkeypatch):
    run = _copy(trained_run, tmp_path / "r")
    real = grid_run.load_model
    monkeypatch.setattr(grid_run, "load_model", lambda *a, **k: Masked(real(*a, **k)))
    grid_run.run_grid(run, attacks=["fgsm", "bim"], grid="quick")
    width = float(np.diff(read_preprocessing(run).clip_values)[0])
    grid_run.run_grid(run, attacks=["fgsm"], params={"eps": width})  # a budget as wide as the box
    grid_run.run_grid(run, attacks=["boundary"], params="max_iter=20,init_size=100")
    trust = pd.read_csv(run / "attacks" / "trust.csv")
    def status(check: str, attack: str) -> set[str]:
        return set(trust[(trust["check"] == check) & (trust["attack"] == attack)]["status"])

    assert status("budget_used", "fgsm") == {"fail"}  # every FGSM cell, the box-wide one included
    assert status("budget_used", "bim") == {"fail"}
    assert status("unbounded", "bim") == {"fail"}
    assert status("black_vs_white", "boundary") == {"warn"}
    assert "not attacked" not in " ".join(trust[trust["check"] == "black_vs_white"]["detail"])
    assert set(trust["corpus"]) == {"tones"} and set(trust["group"]) == {"All"}


def test_trust_checks_pass_on_the_plain_model(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path / "r")
    grid_run.run_grid(run, attacks=["fgsm", "bim"], grid="quick")
    trust = pd.read_csv(run / "attacks" / "trust.csv")
    for check in ("budget_used", "unbounded"):
        assert set(trust[trust["check"] == check]["status"]) == {"pass"}, trust


def test_the_report_leaves_out_stale_and_truncated_cells(trained_run, tmp_path):
    from seradv.report.data import load_run

    run = _copy(trained_run, tmp_path / "r")
    pipeline.evaluate_run(run)
    res = grid_run.run_grid(run, attacks=["fgsm"], grid="quick", trust=False)
    cids = sorted(set(res[res["attack"] == "fgsm"]["cell_id"]))
    f = run / "attacks" / "cells" / f"{cids[0]}.json"
    f.write_text(f.read_text()[:40])  # truncated
    data = load_run(run)
    assert cids[0] not in set(data.results["cell_id"]) and cids[1] in set(data.results["cell_id"])
    assert any("left out" in n for n in data.notes)
