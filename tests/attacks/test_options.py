"""Backend choice, opt-in early stopping and the work counters of the attack framework."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers.attack import CLIP, train_tiny
from seradv.attacks import ATTACKS, AttackSpec, get_attack, register_attack, run_attack
from seradv.attacks.metrics import accuracy, mean_abs_perturbation, predict
from seradv.errors import AttackError, ParameterError
from seradv.grid.plan import Cell, plan_grid


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train_tiny()
    torch.set_num_threads(n)


def test_every_default_backend_is_one_of_its_backends():
    for spec in ATTACKS.values():
        assert spec.default_backend in spec.backends, spec.name


def test_register_rejects_a_default_backend_it_lacks():
    spec = dataclasses.replace(get_attack("fgsm"), name="fgsm_bad_default", default_backend="cuda-magic")
    with pytest.raises(AttackError, match="default_backend='cuda-magic' is not one of its backends"):
        register_attack(spec)
    assert "fgsm_bad_default" not in ATTACKS


def test_run_attack_without_backend_uses_the_default(trained):
    x, y = trained["x"][:4], trained["y"][:4]
    res = run_attack("fgsm", trained["model"], x, y, {"eps": 0.1}, clip=CLIP)
    assert res.backend == get_attack("fgsm").default_backend
    with pytest.raises(ParameterError, match="backend='nope' is not available"):
        run_attack("fgsm", trained["model"], x, y, {"eps": 0.1}, clip=CLIP, backend="nope")


def test_plan_grid_takes_each_attacks_default_backend():
    cells = plan_grid(["fgsm", "boundary"], "quick")
    for c in cells:
        assert c.backend == get_attack(c.attack).default_backend
    assert {c.backend for c in plan_grid(["fgsm"], "quick", backend="art")} == {"art"}
    with pytest.raises(ParameterError, match="not available"):
        plan_grid(["fgsm"], "quick", backend="nope")


def test_early_stop_gets_its_own_cell_id_and_keeps_old_ids():
    plain = Cell("bim", {"eps": 0.25}, "torch")
    again = Cell("bim", {"eps": 0.25}, "torch", early_stop=False)
    early = Cell("bim", {"eps": 0.25}, "torch", early_stop=True)
    assert plain.cell_id("all", 0) == again.cell_id("all", 0)
    assert early.cell_id("all", 0) != plain.cell_id("all", 0)
    assert all(c.early_stop for c in plan_grid(["bim"], "quick", early_stop=True))


def test_bim_early_stop_same_robust_accuracy_less_work_smaller_perturbation(trained):
    model, x, y = trained["model"], trained["x"][:16], trained["y"][:16]
    params = {"eps": 1.0, "eps_step": 0.1, "max_iter": 20}
    full = run_attack("bim", model, x, y, params, clip=CLIP, backend="torch")
    early = run_attack("bim", model, x, y, params, clip=CLIP, backend="torch", early_stop=True)
    assert early.early_stop and not full.early_stop
    acc_full, acc_early = accuracy(model, full.x_adv, y), accuracy(model, early.x_adv, y)
    assert acc_early <= acc_full + 1 / 16  # a frozen sample stays misclassified
    assert acc_early < accuracy(model, x, y)
    assert full.n_grads == 16 * 20
    assert early.n_grads < full.n_grads
    assert mean_abs_perturbation(x, early.x_adv).mean() < mean_abs_perturbation(x, full.x_adv).mean()
    # frozen samples stay inside the budget and the box
    d = early.x_adv - x
    assert np.abs(d).max() <= 1.0 + 1e-5
    assert early.x_adv.min() >= CLIP[0] and early.x_adv.max() <= CLIP[1]


def test_early_stop_is_a_no_op_for_samples_already_misclassified(trained):
    model, x, y = trained["model"], trained["x"][:8], trained["y"][:8]
    # every "label" is wrong: every sample is misclassified from the start (one off the
    # model's prediction, not the true label: the tiny model may get a sample wrong)
    wrong = (predict(model, x).labels + 1) % 4
    res = run_attack("bim", model, x, wrong, {"eps": 0.5, "eps_step": 0.1, "max_iter": 5}, clip=CLIP,
                     backend="torch", early_stop=True)
    assert np.array_equal(res.x_adv, x)
    assert res.n_grads == 8  # one pass to find out, then nothing


def test_attack_spec_default_backend_field_defaults_to_art():
    fields = {f.name: f for f in dataclasses.fields(AttackSpec)}
    assert fields["default_backend"].default == "art"
