"""Precision as a setting (seradv.precision): config and checks, bf16 attacks on the tiny model
and a small CNN-LSTM (float32 outputs inside the budget, robust accuracy close to fp32), cell
ids (unchanged for fp32), bf16 training and evaluation, a bf16 grid cell on a trained run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seradv.attacks import run_attack
from seradv.config import RunConfig, TrainConfig, AttackConfig, load_config, save_config
from seradv.errors import ConfigError, ParameterError
from seradv.evaluation import predict_logits
from seradv.grid.plan import Cell, plan_grid
from seradv.models import CNNLSTM
from seradv import precision as precision_mod
from seradv.precision import (AutocastModel, autocast, check_precision, cpu_bf16_supported, precision_dtype,
                              with_precision)
from seradv.training import fit
from tests.helpers.attack import GuardedModel, TinySER, make_data

pytestmark = pytest.mark.usefixtures("one_thread")

#: the tests that run bf16 on the CPU: skipped on an AVX2-only CPU, where seradv refuses bf16
needs_cpu_bf16 = pytest.mark.skipif(
    not cpu_bf16_supported(),
    reason="this CPU has no AVX-512 / AMX: seradv refuses bf16 here (test_bf16_refused_where_onednn_lacks_it)")

#: L-inf budget attacks and their budget in the quick test (eps), with their default parameters
LINF = {"fgsm": 0.25, "bim": 0.25, "pgd": 0.25, "apgd_ce": 0.25}


# --------------------------------------------------------------------------------------
# Config and checks
# --------------------------------------------------------------------------------------
def test_config_round_trip_and_defaults(tmp_path):
    assert RunConfig().train.precision == "fp32" and RunConfig().attack.precision == "fp32"
    cfg = RunConfig().replace(**{"train.precision": "bf16", "attack.precision": "fp16"})
    path = save_config(cfg, tmp_path / "config.yaml")
    assert "precision: bf16" in path.read_text()
    back = load_config(path)
    assert back == cfg and back.train.precision == "bf16" and back.attack.precision == "fp16"


@pytest.mark.parametrize("bad", ["fp64", "BF16", "", 16])
def test_config_rejects_unknown_precisions(bad):
    with pytest.raises(ConfigError, match="precision"):
        RunConfig(train=TrainConfig(precision=bad)).validate()
    with pytest.raises(ConfigError, match="precision"):
        RunConfig(attack=AttackConfig(precision=bad)).validate()


def test_config_rejects_art_backend_below_fp32():
    with pytest.raises(ConfigError, match="attack.backend torch"):
        AttackConfig(precision="bf16", backend="art").validate()
    AttackConfig(precision="bf16", backend="torch").validate()
    AttackConfig(precision="bf16").validate()


def test_checks_name_the_problem():
    with pytest.raises(ParameterError, match="one of fp32, bf16, fp16"):
        check_precision("half")
    with pytest.raises(ParameterError, match="not supported on the CPU"):
        precision_dtype("fp16", "cpu")
    assert precision_dtype("fp32", "cpu") is None
    if cpu_bf16_supported():
        assert precision_dtype("bf16", "cpu") is torch.bfloat16


def test_bf16_refused_where_onednn_lacks_it(monkeypatch):
    """On a CPU without AVX-512 / AMX oneDNN cannot build its bf16 LSTM for every shape
    ("could not create a primitive descriptor for the LSTM forward propagation primitive"):
    a one-line error before any model call, naming the way out."""
    monkeypatch.setattr(precision_mod, "cpu_bf16_supported", lambda: False)
    with pytest.raises(ParameterError, match=r"needs a CPU with AVX-512 or AMX.*use fp32") as err:
        precision_dtype("bf16", "cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(ParameterError, match="AVX-512"):
        run_attack("fgsm", TinySER(), *make_data(4, seed=0), {"eps": 0.1}, clip=(-5, 7), precision="bf16")


@needs_cpu_bf16
def test_autocast_is_off_for_fp32_and_on_for_bf16():
    with autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


@needs_cpu_bf16
def test_autocast_model_returns_float32_and_delegates():
    torch.manual_seed(0)
    m = CNNLSTM(4, n_frames=58, n_mels=40, n_chunks=2, lstm_units=8).eval()
    assert with_precision(m, "fp32", "cpu") is m
    net = with_precision(m, "bf16", "cpu")
    assert isinstance(net, AutocastModel) and not net.training
    assert [p for p in net.parameters()] == [p for p in m.parameters()]
    x = torch.randn(3, 58, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z32, z16 = m(x), net(x)
        feats = net.encode_chunks(x.reshape(6, 29, 40))  # a method of the model, under autocast
    assert z16.dtype == torch.float32 and feats.dtype == torch.float32
    assert net.chunk_frames == m.chunk_frames
    assert torch.allclose(z16, z32, atol=0.05 * float(z32.abs().max()) + 1e-3)


# --------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------
def _robust(model: nn.Module, x_adv: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x_adv)).argmax(1).numpy() == y).mean())


@needs_cpu_bf16
@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd_ce", "deepfool", "cw_linf"])
def test_bf16_attack_on_the_tiny_model(trained, name):
    m, x, y, clip = trained["model"], trained["x"][:16], trained["y"][:16], trained["clip"]
    res = {p: run_attack(name, m, x, y, clip=clip, precision=p) for p in ("fp32", "bf16")}
    r = res["bf16"]
    assert r.precision == "bf16" and r.backend == "torch"
    assert r.x_adv.dtype == np.float32 and r.x_adv.shape == x.shape and np.isfinite(r.x_adv).all()
    assert r.x_adv.min() >= clip.clip_min and r.x_adv.max() <= clip.clip_max
    if name in LINF:
        assert float(np.abs(r.x_adv - x).max()) <= LINF[name] + 1e-5
    assert not np.array_equal(r.x_adv, x)  # it attacked
    # judged by the float32 model: bf16 finds (nearly) as many adversarial examples
    assert abs(_robust(m, r.x_adv, y) - _robust(m, res["fp32"].x_adv, y)) <= 0.2
    assert all(p.dtype == torch.float32 and p.requires_grad for p in m.parameters())  # state restored


@needs_cpu_bf16
def test_bf16_attack_on_a_cnn_lstm_uses_the_input_gradient_path():
    torch.manual_seed(0)
    m = CNNLSTM(4, n_frames=58, n_mels=40, n_chunks=2, lstm_units=8).eval()
    rng = np.random.default_rng(0)
    x = np.clip(rng.standard_normal((6, 58, 40)).astype(np.float32), -3, 3)
    out = {p: run_attack("pgd", m, x, None, {"eps": 0.1, "max_iter": 5}, clip=(-3, 3), precision=p)
           for p in ("fp32", "bf16")}
    d16, d32 = out["bf16"].x_adv - x, out["fp32"].x_adv - x
    assert out["bf16"].x_adv.dtype == np.float32 and float(np.abs(d16).max()) <= 0.1 + 1e-5
    # the same ascent: most perturbation signs agree with fp32's
    assert float(np.mean(np.sign(d16) == np.sign(d32))) > 0.7


def test_art_backend_with_bf16_is_an_error_before_any_model_call(trained):
    g = GuardedModel(trained["model"])
    with pytest.raises(ParameterError, match="needs the torch backend"):
        run_attack("fgsm", g, trained["x"][:2], trained["y"][:2], clip=trained["clip"], backend="art",
                   precision="bf16")
    with pytest.raises(ParameterError, match="not supported on the CPU"):
        run_attack("fgsm", g, trained["x"][:2], trained["y"][:2], clip=trained["clip"], precision="fp16")
    assert g.forwards == 0


# --------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------
def test_cell_ids_unchanged_for_fp32_and_distinct_for_bf16():
    # the ids these cells had before precision existed (main at 11dfb93)
    assert Cell("fgsm", {"eps": 0.25}, "torch").cell_id("all", 0) == "fgsm-ef02ce69c9"
    assert Cell("pgd", {"eps": 0.5, "max_iter": 10}, "torch", early_stop=True).cell_id("abc", 3) == "pgd-97f3674236"
    bf = Cell("fgsm", {"eps": 0.25}, "torch", precision="bf16").cell_id("all", 0)
    assert bf != "fgsm-ef02ce69c9" and bf.startswith("fgsm-")


def test_plan_grid_carries_precision_and_rejects_art_only_attacks():
    cells = plan_grid(["fgsm", "pgd"], "quick", precision="bf16")
    assert cells and {c.precision for c in cells} == {"bf16"}
    assert {c.precision for c in plan_grid(["fgsm"], "quick")} == {"fp32"}
    with pytest.raises(ParameterError, match="square: precision='bf16' needs the torch backend"):
        plan_grid(["square"], "quick", precision="bf16")
    with pytest.raises(ParameterError, match="pgd_linf_wave: precision='bf16' applies to the feature-space"):
        plan_grid(["fgsm", "pgd_linf_wave"], "quick", precision="bf16")
    assert {c.precision for c in plan_grid(["pgd_linf_wave"], "quick")} == {"fp32"}


# --------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------
@needs_cpu_bf16
def test_one_bf16_training_epoch_updates_float32_weights():
    torch.manual_seed(0)
    model = TinySER()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = make_data(64, seed=0)
    xv, yv = make_data(16, seed=1)
    res = fit(model, x, y, xv, yv, TrainConfig(epochs=1, precision="bf16"), lr=1e-2, batch_size=16)
    h = res.history.iloc[0]
    assert res.epochs_run == 1 and np.isfinite([h["loss"], h["val_loss"]]).all()
    assert all(v.dtype == before[k].dtype for k, v in model.state_dict().items())
    assert not torch.equal(model.head.weight, before["head.weight"])


@needs_cpu_bf16
def test_bf16_predictions_are_float32_and_close(trained):
    m, x = trained["model"], trained["x"]
    z32 = predict_logits(m, x)
    z16 = predict_logits(m, x, precision="bf16")
    assert z16.dtype == np.float32 and z16.shape == z32.shape
    assert np.allclose(z16, z32, atol=0.05 * float(np.abs(z32).max()) + 1e-3)
    assert float(np.mean(z16.argmax(1) == z32.argmax(1))) >= 0.9


@needs_cpu_bf16
def test_bf16_grid_cell_is_its_own_cell(tmp_path):
    from seradv import pipeline
    from seradv.grid.run import run_grid
    from tests.helpers.corpus import prepared_tone_run

    run_dir = prepared_tone_run(tmp_path)
    pipeline.train_run(run_dir, train_overrides={"epochs": 1, "precision": "bf16"})
    metrics = pipeline.evaluate_run(run_dir)  # at the run's train.precision
    assert (run_dir / "metrics.json").read_text().count('"precision": "bf16"') == 1 and not metrics.empty
    t32 = run_grid(run_dir, attacks=["fgsm"], grid="quick", limit=4, trust=False, params="eps=0.25")
    t16 = run_grid(run_dir, attacks=["fgsm"], grid="quick", limit=4, trust=False, params="eps=0.25",
                   precision="bf16")
    cells = t16[t16["attack"] == "fgsm"]
    assert set(cells["precision"]) == {"fp32", "bf16"}  # both cells, each its own
    assert cells.groupby("precision")["cell_id"].nunique().to_dict() == {"bf16": 1, "fp32": 1}
    assert set(t32.loc[t32["attack"] == "fgsm", "cell_id"]) < set(cells["cell_id"])
    # the worst case pools the fp32 cells only: the same rows as with the fp32 cell alone
    w32, w16 = (t[t["attack"] == "worst_case"].reset_index(drop=True) for t in (t32, t16))
    assert len(w32) and set(w16["precision"]) == {"fp32"}
    assert w16["robust_accuracy"].tolist() == w32["robust_accuracy"].tolist()


# --------------------------------------------------------------------------------------
# CLI: the option is passed, bad values are one-line errors
# --------------------------------------------------------------------------------------
def test_cli_precision_is_passed_and_checked(tmp_path, monkeypatch):
    import pandas as pd
    from typer.testing import CliRunner

    import seradv.grid.run as grid_run
    import seradv.pipeline as pipeline_mod
    from seradv import cli

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(RunConfig(name="run"), run_dir / "config.yaml")
    seen: dict = {}
    monkeypatch.setattr(grid_run, "run_grid", lambda run_dir, **kw: seen.update(kw) or pd.DataFrame())
    monkeypatch.setattr(pipeline_mod, "train_run", lambda run_dir, **kw: seen.update(kw) or {
        "model": "m", "parameters": 1, "epochs_run": 1, "best_epoch": 1, "train_seconds": 0.0})
    invoke = lambda *a: CliRunner().invoke(cli.app, [str(x) for x in a])  # noqa: E731
    res = invoke("attack", run_dir, "--attacks", "fgsm", "--precision", "bf16")
    assert res.exit_code == 0, res.output
    assert seen["precision"] == "bf16"
    res = invoke("train", run_dir, "--precision", "bf16")
    assert res.exit_code == 0, res.output
    assert seen["train_overrides"] == {"precision": "bf16"}
    res = invoke("train", run_dir, "--precision", "fp64")
    assert res.exit_code == 2 and "train.precision='fp64' must be one of fp32, bf16, fp16" in res.stderr
