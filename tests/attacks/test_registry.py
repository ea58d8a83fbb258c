"""Attack registry, the study's attacks and metrics, on a tiny trained model (fast, CPU).

The tiny model honours the CNN-LSTM's contract (``[batch, 261, 128]`` -> logits; also
``[batch, 1, 261, 128]``) and has the parts whose gradient handling matters: batch norm,
dropout and an LSTM. Its synthetic classes are "peaky" band energies (a few loud cells in a
class-specific Mel band), learnt through per-block max and mean features, so that even the
1-cell-level Pixel attack has something to find.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from seradv.attacks import (
    ATTACKS,
    STUDY_ATTACKS,
    AttackResult,
    AttackSpec,
    ParamSpec,
    ThreatModel,
    accuracy,
    get_attack,
    l0_norm,
    l2_norm,
    linf_norm,
    list_attacks,
    mean_abs_perturbation,
    perturbation_norms,
    predict,
    predict_proba,
    register_attack,
    run_attack,
    validate_params,
)
from seradv.attacks._art import SeradvPyTorchClassifier
from seradv.attacks.context import QueryCounter
from seradv.errors import AttackError, ParameterError

from tests.helpers.attack import (  # noqa: E402  (shared with the fast-backend tests)
    CLIP,
    N_CLASSES,
    SLOW,
    GuardedModel,
    TinySER,
    make_data,
)


# one intra-op thread for the whole module; ``trained``: the tiny model (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_model_is_accurate(trained):
    assert trained["clip"].as_tuple() == CLIP
    assert accuracy(trained["model"], trained["x"], trained["y"]) >= 0.9


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------
#: SPEC.md, "Attacks": the study's parameter grids.
STUDY_GRIDS = {
    "fgsm": [{"eps": e} for e in (0.25, 0.5, 0.75, 1.0, 1.25)],
    "bim": [{"eps": e, "eps_step": 0.1, "max_iter": 100} for e in (0.25, 0.5, 0.75, 1.0, 1.25)],
    "deepfool": [{"max_iter": m, "nb_grads": 5, "overshoot": 1e-5} for m in (1, 5, 20)],
    "jsma": [{"theta": t, "gamma": 1.0} for t in (-1.0, -0.5, 0.5, 1.0)],
    "cw_l2": [{"max_iter": 10, "learning_rate": 0.01, "binary_search_steps": 20, "initial_const": 0.01,
              "max_halving": 10, "max_doubling": 10}],  # SPEC.md: the study's code sets 10 (ART: 5),
    "cw_linf": [{"max_iter": 10, "learning_rate": 0.01, "initial_const": 1e-4, "largest_const": 20.0,
                 "decrease_factor": 0.8, "const_factor": 4.0}],
    "pixel": [{"th": t, "max_iter": 20} for t in (1, 5, 10)],
    "boundary": [{"delta": 0.01, "epsilon": 0.01, "step_adapt": 0.5, "max_iter": 100, "num_trial": 3,
                  "sample_size": 10}],
}


def test_registry_holds_the_study_and_beyond():
    assert set(STUDY_ATTACKS) == set(STUDY_GRIDS)
    assert set(STUDY_ATTACKS) <= set(ATTACKS)
    assert {"pgd", "pgd_l2", "hopskipjump", "square"} <= set(ATTACKS)
    assert set(list_attacks(in_study=True)) == set(STUDY_ATTACKS)
    assert set(list_attacks(kind="black-box")) == {"pixel", "boundary", "hopskipjump", "square"}
    for name, spec in ATTACKS.items():  # ART is the reference backend (APGD-DLR: see its module)
        # (the waveform attacks have no ART counterpart: torch only)
        assert spec.name == name and ("art" in spec.backends or name == "apgd_dlr" or spec.input == "waveform")
        assert spec.quick_grid
    assert set(list_attacks(input="waveform")) == {"pgd_linf_wave", "pgd_snr_wave"}
    assert set(list_attacks(input="features")) == set(ATTACKS) - {"pgd_linf_wave", "pgd_snr_wave"}
    for name in ("fgsm", "bim", "pgd", "pgd_l2"):
        assert "torch" in ATTACKS[name].backends


@pytest.mark.parametrize("name", sorted(STUDY_GRIDS))
def test_paper_grid_is_the_study(name):
    assert get_attack(name).grid("paper") == STUDY_GRIDS[name]
    assert get_attack(name).in_study


def test_unknown_attack_lists_known_ones():
    with pytest.raises(AttackError, match=r"unknown attack 'nope'.*known attacks: .*bim.*fgsm"):
        get_attack("nope")
    with pytest.raises(AttackError, match="known attacks"):
        run_attack("nope", TinySER(), np.zeros((1, 261, 128), np.float32), [0], {}, clip=CLIP)


def test_register_attack_rejects_duplicates_and_bad_grids():
    spec = get_attack("fgsm")
    with pytest.raises(AttackError, match="already registered"):
        register_attack(spec)
    bad = AttackSpec(name="bad_fgsm", family="gradient", kind="white-box", norm="linf", title="x",
                     params=(ParamSpec("eps", float, 0.1, low=0.0, low_open=True),),
                     paper_grid=({"eps": -1.0},), quick_grid=({"eps": 0.1},),
                     backends=dict(spec.backends))
    with pytest.raises(AttackError, match="invalid paper grid entry"):
        register_attack(bad)
    assert "bad_fgsm" not in ATTACKS


def test_validate_params_fills_defaults():
    p = validate_params("bim", {"eps": 1})
    assert p == {"eps": 1.0, "eps_step": 0.1, "max_iter": 100}
    assert isinstance(p["eps"], float)


# --------------------------------------------------------------------------------------
# Parameter validation: before any model call
# --------------------------------------------------------------------------------------
def _bad_cases() -> list[tuple[str, dict[str, Any], str]]:
    cases = []
    for name, spec in ATTACKS.items():
        cases.append((name, {"not_a_param": 1}, "not_a_param"))
        for p in spec.params:
            if p.name == "eps":
                cases.append((name, {"eps": -0.5}, "eps"))
            if p.name == "max_iter":
                cases.append((name, {"max_iter": 0}, "max_iter"))
            if p.kind in (int, float) and p.low is not None and p.name not in ("eps", "max_iter"):
                cases.append((name, {p.name: p.low - 1}, p.name))
            if p.kind is int:
                cases.append((name, {p.name: 1.5}, p.name))
            if p.choices is not None:
                cases.append((name, {p.name: "bogus"}, p.name))
    cases.append(("jsma", {"theta": 0.0}, "theta"))
    cases.append(("square", {"p_init": 0.6}, "p_init"))  # square wider than the 128 Mel bands
    return cases


@pytest.mark.parametrize("name,params,param", _bad_cases())
def test_bad_parameters_raise_before_any_model_call(trained, name, params, param):
    guarded = GuardedModel(trained["model"])
    with pytest.raises(ParameterError, match=param) as info:
        run_attack(name, guarded, trained["x"][:2], trained["y"][:2], params, clip=CLIP)
    assert guarded.forwards == 0
    msg = str(info.value)
    assert f"{name}: " in msg  # names the attack too
    assert ("allowed parameters" if param == "not_a_param" else "must be") in msg  # and the range


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"backend": "tf"}, "backend"),
        ({"backend": "torch", "name": "square"}, "backend"),
        ({"clip": (7.0, -5.0)}, "clip"),
        ({"clip": (0.0, 1.0)}, "outside clip"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"device": "tpu"}, "device"),
        ({"y": np.zeros(3, np.int64)}, "y must have shape"),
        ({"y": np.zeros(2, np.float32) + 0.5}, "integer"),
        ({"x": np.zeros((2, 261, 128), np.int64)}, "float"),
        ({"x": np.full((2, 261, 128), np.nan, np.float32)}, "NaN"),
    ],
)
def test_bad_arguments_raise_before_any_model_call(trained, kwargs, match):
    guarded = GuardedModel(trained["model"])
    call = {"name": "fgsm", "x": trained["x"][:2], "y": trained["y"][:2], "clip": CLIP}
    call.update(kwargs)
    name, x, y = call.pop("name"), call.pop("x"), call.pop("y")
    with pytest.raises(ParameterError, match=match):
        run_attack(name, guarded, x, y, {}, **call)
    assert guarded.forwards == 0


def test_label_out_of_range(trained):
    with pytest.raises(ParameterError, match="classes"):
        run_attack("fgsm", trained["model"], trained["x"][:2], np.array([0, N_CLASSES]), {}, clip=CLIP)


# --------------------------------------------------------------------------------------
# Every registered attack, quick grid
# --------------------------------------------------------------------------------------
def _check_budget(name: str, params: dict[str, Any], x: np.ndarray, x_adv: np.ndarray, clip) -> None:
    lo, hi = clip
    norms = perturbation_norms(x, x_adv)
    if name == "fgsm":
        eps = params["eps"]
        d = x_adv - x
        full = np.isclose(np.abs(d), eps, atol=1e-5)
        at_bound = np.isclose(x_adv, lo, atol=1e-6) | np.isclose(x_adv, hi, atol=1e-6)
        assert (full | at_bound | (d == 0)).all()  # |delta| == eps wherever the clip is inactive
        np.testing.assert_allclose(norms["linf"], eps, atol=1e-5)
    elif name in ("bim", "pgd", "square"):
        assert (norms["linf"] <= params["eps"] + 1e-5).all()
    elif name == "pgd_l2":
        assert (norms["l2"] <= params["eps"] * (1 + 1e-5) + 1e-5).all()
    elif name == "pixel":
        assert (norms["l0"] <= params["th"]).all()
    elif name == "jsma":
        assert (norms["l0"] <= params["gamma"] * x[0].size + 2).all()


#: Attacks run_attack can run: those on the log-Mel features (the waveform ones: test_waveform*.py).
FEATURE_ATTACKS = sorted(list_attacks(input="features"))


def test_waveform_attacks_are_refused_by_run_attack_before_any_model_call(trained):
    guarded = GuardedModel(trained["model"])
    for name in list_attacks(input="waveform"):
        spec = get_attack(name)
        assert spec.grid("paper") == [] and "paper" not in spec.grid_names
        assert spec.grid_names == ("quick", "standard") and len(spec.grid("standard")) == 3
        with pytest.raises(AttackError, match=f"{name} attacks the waveform.*seradv attack"):
            run_attack(name, guarded, trained["x"][:2], trained["y"][:2], {}, clip=CLIP)
    assert guarded.forwards == 0
    with pytest.raises(ParameterError, match="'paper', 'quick', 'standard'"):
        get_attack("fgsm").grid("huge")


@pytest.mark.parametrize("name", FEATURE_ATTACKS)
def test_quick_grid_attacks(trained, name, monkeypatch):
    spec = get_attack(name)
    n = 8 if name in SLOW else 16
    x, y = trained["x"][:n], trained["y"][:n]
    black_box = spec.kind == "black-box"
    model = GuardedModel(trained["model"]) if black_box else trained["model"]
    if black_box:  # any backward pass would raise
        def forbidden(*args: Any, **kwargs: Any) -> None:
            raise AssertionError(f"black-box attack {name} called autograd")

        monkeypatch.setattr(torch.autograd, "backward", forbidden)
        monkeypatch.setattr(torch.autograd, "grad", forbidden)
        monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    clean = accuracy(trained["model"], x, y)
    for params in spec.grid("quick"):
        res = run_attack(name, model, x, y, params, clip=trained["clip"], batch_size=32, seed=1)
        assert isinstance(res, AttackResult) and res.backend == spec.default_backend and res.name == name
        assert res.x_adv.shape == x.shape and res.x_adv.dtype == np.float32
        assert res.x_adv.min() >= CLIP[0] and res.x_adv.max() <= CLIP[1]
        assert res.seconds > 0 and set(res.params) == set(spec.param_names)
        adv = accuracy(trained["model"], res.x_adv, y)
        assert adv < clean, f"{name} {params}: accuracy {clean} -> {adv}"
        _check_budget(name, res.params, x, res.x_adv, CLIP)
        if black_box:
            assert res.n_grads == 0 and res.n_queries > 0
            assert model.grad_forwards == 0 and model.backwards == 0
        else:
            assert res.n_grads > 0
    assert all(p.grad is None for p in trained["model"].parameters())


def test_backward_guard_catches_a_white_box_attack(trained):
    guarded = GuardedModel(trained["model"])
    run_attack("fgsm", guarded, trained["x"][:2], trained["y"][:2], {"eps": 0.5}, clip=CLIP)
    assert guarded.grad_forwards > 0 and guarded.backwards > 0


def test_black_box_estimator_refuses_gradients(trained):
    from seradv.attacks._art import black_box_classifier
    from seradv.attacks.context import AttackContext

    ctx = AttackContext(model=trained["model"], x=trained["x"][:2], y=trained["y"][:2],
                        clip=ThreatModel(*CLIP), n_classes=N_CLASSES, batch_size=4, seed=0,
                        device=torch.device("cpu"))
    clf = black_box_classifier(ctx)
    with pytest.raises(AttackError, match="black-box"):
        clf.loss_gradient(ctx.x, np.eye(N_CLASSES)[ctx.y])
    with pytest.raises(AttackError, match="black-box"):
        clf.class_gradient(ctx.x, label=0)
    probs = clf.predict(ctx.x.astype(np.float64))  # float64 queries are cast (Boundary quirk)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------------------
# torch backend against ART
# --------------------------------------------------------------------------------------
def test_torch_fgsm_equals_art(trained):
    x, y = trained["x"], trained["y"]
    for eps in (0.25, 1.0):
        a = run_attack("fgsm", trained["model"], x, y, {"eps": eps}, clip=CLIP, backend="art")
        t = run_attack("fgsm", trained["model"], x, y, {"eps": eps}, clip=CLIP, backend="torch")
        np.testing.assert_allclose(t.x_adv, a.x_adv, atol=1e-5)
        assert t.backend == "torch"


@pytest.mark.parametrize(
    "name,params",
    [
        ("bim", {"eps": 0.1, "eps_step": 0.01, "max_iter": 10}),
        ("pgd", {"eps": 0.1, "eps_step": 0.02, "max_iter": 10}),
        ("pgd_l2", {"eps": 3.0, "eps_step": 0.5, "max_iter": 10}),
    ],
)
def test_torch_iterative_matches_art_accuracy(trained, name, params):
    x, y, m = trained["x"], trained["y"], trained["model"]
    a = run_attack(name, m, x, y, params, clip=CLIP, backend="art", seed=3)
    t = run_attack(name, m, x, y, params, clip=CLIP, backend="torch", seed=3)
    assert abs(accuracy(m, a.x_adv, y) - accuracy(m, t.x_adv, y)) <= 0.03 + 1e-9
    assert accuracy(m, t.x_adv, y) < accuracy(m, x, y)


def test_seed_makes_runs_reproducible(trained):
    x, y, m = trained["x"][:4], trained["y"][:4], trained["model"]
    for name, params, backend in [("pgd", {"max_iter": 3}, "torch"), ("pgd", {"max_iter": 3}, "art"),
                                  ("square", {"eps": 0.5, "max_iter": 10}, "art")]:
        r1 = run_attack(name, m, x, y, params, clip=CLIP, backend=backend, seed=5)
        r2 = run_attack(name, m, x, y, params, clip=CLIP, backend=backend, seed=5)
        np.testing.assert_array_equal(r1.x_adv, r2.x_adv)


# --------------------------------------------------------------------------------------
# Gradient path, caller state, ART findings
# --------------------------------------------------------------------------------------
class StackedLSTM(nn.Module):
    """Two-layer LSTM with inter-layer dropout: ART's RNN work-around leaves that dropout on."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(128, 8, num_layers=2, dropout=0.5, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


def test_gradients_are_taken_in_eval_mode():
    from art.estimators.classification import PyTorchClassifier

    torch.manual_seed(0)
    model = StackedLSTM()
    x = np.random.default_rng(0).standard_normal((2, 261, 128)).astype(np.float32)
    kw = {"loss": nn.CrossEntropyLoss(), "input_shape": (261, 128), "nb_classes": 3, "clip_values": CLIP}
    ours = SeradvPyTorchClassifier(model, counter=QueryCounter(), torch_device=torch.device("cpu"), **kw)
    g1, g2 = ours.class_gradient(x, label=1), ours.class_gradient(x, label=1)
    model.eval()
    xt = torch.from_numpy(x).requires_grad_(True)
    model(xt)[:, 1].sum().backward()
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_allclose(g1[:, 0], xt.grad.numpy(), atol=1e-6)
    art_default = PyTorchClassifier(model, **kw)  # train mode + frozen nn.Dropout only
    assert not np.allclose(art_default.class_gradient(x, label=1), art_default.class_gradient(x, label=1))


def test_caller_state_is_restored(trained):
    model = trained["model"]
    model.train()
    np.random.seed(123)
    expected = np.random.get_state()[1].copy()
    try:
        run_attack("pgd", model, trained["x"][:2], trained["y"][:2], {"max_iter": 2}, clip=CLIP, seed=9)
        assert model.training and model.bn.training and model.drop.training
        assert all(p.grad is None for p in model.parameters())
        np.testing.assert_array_equal(np.random.get_state()[1], expected)
    finally:
        model.eval()


def test_cw_l2_with_few_binary_search_steps_changes_nothing(trained, caplog):
    """ART's C&W L2 returns clean samples where it failed; at the study's initial_const 0.01 the
    constant needs many binary-search doublings before the attack bites."""
    x, y = trained["x"][:4], trained["y"][:4]
    with caplog.at_level(logging.WARNING, logger="seradv.attacks.cw_l2"):
        res = run_attack("cw_l2", trained["model"], x, y, {"binary_search_steps": 1}, clip=CLIP,
                         backend="art")
    np.testing.assert_array_equal(res.x_adv, x)
    assert "changed no sample" in caplog.text


def test_tensor_inputs_and_missing_labels(trained):
    x = torch.from_numpy(trained["x"][:4])
    res = run_attack("fgsm", trained["model"], x, None, {"eps": 0.5}, clip=ThreatModel(*CLIP),
                     backend="torch")
    assert res.x_adv.shape == (4, 261, 128)
    assert res.n_grads == 4


def test_real_cnn_lstm_smoke():
    from seradv.models import CNNLSTM

    torch.manual_seed(0)
    model = CNNLSTM(5)
    x = np.clip(np.random.default_rng(0).standard_normal((2, 261, 128)), -5, 7).astype(np.float32)
    y = np.array([0, 1])
    for backend in ("art", "torch"):
        res = run_attack("fgsm", model, x, y, {"eps": 0.25}, clip=CLIP, backend=backend)
        np.testing.assert_allclose(linf_norm(x, res.x_adv), 0.25, atol=1e-5)


# --------------------------------------------------------------------------------------
# Threat model and metrics
# --------------------------------------------------------------------------------------
def test_threat_model():
    assert ThreatModel.from_data(np.array([[-4.2, 6.1]])).as_tuple() == (-5.0, 7.0)
    assert ThreatModel.study("EmoDB").as_tuple() == (-5.0, 7.0)
    assert ThreatModel.study("ravdess").as_tuple() == (-2.0, 8.0)
    with pytest.raises(ParameterError, match="clip"):
        ThreatModel(1.0, 1.0)
    with pytest.raises(ParameterError, match="clip_max"):
        ThreatModel(0.0, float("inf"))
    with pytest.raises(ParameterError, match="corpus"):
        ThreatModel.study("timit")


def test_perturbation_metrics():
    x = np.zeros((2, 3, 4), np.float32)
    adv = x.copy()
    adv[0, 0, 0] = 3.0
    adv[0, 1, 1] = -4.0
    adv[1, 2, 3] = 5e-8  # below the L0 tolerance
    np.testing.assert_allclose(mean_abs_perturbation(x, adv), [7 / 12, 5e-8 / 12], rtol=1e-6)
    np.testing.assert_allclose(l2_norm(x, adv), [5.0, 5e-8], rtol=1e-6)
    np.testing.assert_allclose(linf_norm(x, adv), [4.0, 5e-8], rtol=1e-6)
    np.testing.assert_array_equal(l0_norm(x, adv), [2, 0])
    allm = perturbation_norms(torch.from_numpy(x), torch.from_numpy(adv))
    assert set(allm) == {"mean_abs", "l2", "linf", "l0"}
    np.testing.assert_array_equal(allm["l0"], [2, 0])
    with pytest.raises(ParameterError, match="same shape"):
        l2_norm(x, adv[:1])


def test_predictions_and_confidence(trained):
    model = trained["model"]
    model.train()
    try:
        pred = predict(model, trained["x"], batch_size=7)
        assert model.training  # flags restored
    finally:
        model.eval()
    proba = predict_proba(model, trained["x"], batch_size=64)
    np.testing.assert_allclose(pred.proba, proba, atol=1e-6)
    np.testing.assert_allclose(pred.confidence, proba.max(1))
    assert pred.labels.dtype == np.int64 and ((pred.confidence > 0) & (pred.confidence <= 1)).all()
    assert accuracy(model, trained["x"], trained["y"]) == float((pred.labels == trained["y"]).mean())
    with pytest.raises(ParameterError, match="batch_size"):
        predict_proba(model, trained["x"], batch_size=0)
