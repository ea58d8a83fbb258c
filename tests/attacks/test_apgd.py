"""APGD-CE / APGD-DLR: budget, strength, and agreement with the reference code (torchattacks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seradv.attacks import run_attack
from seradv.attacks.apgd import apgd, dlr_loss
from seradv.errors import ParameterError

pytestmark = pytest.mark.usefixtures("one_thread")


def _clean_correct(trained, n: int) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        ok = trained["model"](torch.from_numpy(trained["x"])).argmax(1).numpy() == trained["y"]
    idx = np.flatnonzero(ok)[:n]
    return trained["x"][idx], trained["y"][idx]


def _robust(model, x_adv, y, fooled_any) -> float:
    with torch.no_grad():
        correct = model(torch.from_numpy(x_adv)).argmax(1).numpy() == y
    return float((correct & ~fooled_any).mean())


def test_dlr_loss_by_hand() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [1.0, 3.0, 2.0, 0.0]])
    y = torch.tensor([0, 0])
    # row 0: y on top, runner-up 1, third 0 -> -(3 - 1) / (3 - 0); row 1: -(1 - 3) / (3 - 1)
    torch.testing.assert_close(dlr_loss(z, y), torch.tensor([-2.0 / 3.0, 1.0]))
    # invariant to shift and positive scale of the logits
    torch.testing.assert_close(dlr_loss(5 * z + 2, y), dlr_loss(z, y))


@pytest.mark.parametrize("name, backend", [("apgd_ce", "torch"), ("apgd_dlr", "torch"), ("apgd_ce", "art")])
def test_budget_box_and_strength(trained, name, backend) -> None:
    model, clip = trained["model"], trained["clip"]
    x, y = _clean_correct(trained, 24)
    res = run_attack(name, model, x, y, {"eps": 0.05, "n_iter": 20}, clip=clip, seed=0, backend=backend)
    assert float(np.abs(res.x_adv - x).max()) <= 0.05 + 1e-6
    assert res.x_adv.min() >= clip.clip_min and res.x_adv.max() <= clip.clip_max
    assert res.n_grads == 24 * (21 if backend == "torch" else 20)
    fgsm = run_attack("fgsm", model, x, y, {"eps": 0.05}, clip=clip)
    fooled = res.fooled_any if res.fooled_any is not None else np.zeros(len(y), bool)
    apgd_acc = _robust(model, res.x_adv, y, fooled)
    assert apgd_acc < _robust(model, fgsm.x_adv, y, fgsm.fooled_any)
    # the same seed, the same examples
    again = run_attack(name, model, x, y, {"eps": 0.05, "n_iter": 20}, clip=clip, seed=0, backend=backend)
    np.testing.assert_array_equal(again.x_adv, res.x_adv)


def test_dlr_needs_three_classes(trained) -> None:
    two = nn.Sequential(nn.Flatten(), nn.Linear(261 * 128, 2))
    x = trained["x"][:2]
    with pytest.raises(ParameterError, match="at least 3 classes"):
        run_attack("apgd_dlr", two, x, np.array([0, 1]), {"eps": 0.1, "n_iter": 2}, clip=trained["clip"])


class _Rescaled(nn.Module):
    """The model on ``u`` in [0, 1]: ``model(lo + (hi - lo) u)``, shaped (b, 1, 261, 128)."""

    def __init__(self, model: nn.Module, clip: tuple[float, float]) -> None:
        super().__init__()
        self.model, self.lo, self.width = model, clip[0], clip[1] - clip[0]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.lo + self.width * u.reshape(u.shape[0], 261, 128))


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_matches_the_reference_implementation(trained, loss) -> None:
    """torchattacks 3.5.1's APGD (AutoAttack's code) on the same problem rescaled to [0, 1]:
    L-inf and the box are affine-invariant, so both runs take the same steps up to round-off
    (the random start is drawn the same way from the same seed)."""
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is installed by `make install` "
                                       "(--no-deps: it asks for torchvision, which seradv does not use)")
    model, clip = trained["model"], trained["clip"].as_tuple()
    x, y = _clean_correct(trained, 16)
    eps, width = 0.05, clip[1] - clip[0]
    u = torch.from_numpy((x - clip[0]) / width)[:, None]
    # eval(): torchattacks puts the model back in the mode it found the wrapper in
    ref = torchattacks.APGD(_Rescaled(model, clip).eval(), norm="Linf", eps=eps / width, steps=20, n_restarts=1,
                            seed=0, loss=loss)
    ref_adv = ref(u, torch.from_numpy(y))
    with torch.no_grad():
        ref_fooled = (_Rescaled(model, clip).eval()(ref_adv).argmax(1).numpy() != y)
    assert not model.training
    torch.manual_seed(0)
    ours, fooled = apgd(model, torch.from_numpy(x), torch.from_numpy(y), eps=eps, n_iter=20, loss=loss, clip=clip)
    fooled = fooled.numpy()
    # every sample the reference fools is fooled here, and vice versa, up to one of 16 (round-off
    # in a gradient's sign can change a path)
    assert int((fooled != ref_fooled).sum()) <= 1, (fooled, ref_fooled)
    both = fooled & ref_fooled
    assert both.any()
    # fooled samples: the reference returns the last fooling iterate, as seradv does; the two
    # iterates agree cell by cell up to round-off (a sign flipped by round-off on another CPU
    # moves a few cells: at most 1 % of them may differ)
    ref_x = ref_adv.detach().numpy()[:, 0] * width + clip[0]
    differ = np.abs(ours.numpy() - ref_x)[both] > 1e-4
    assert differ.mean() < 0.01, differ.mean()
