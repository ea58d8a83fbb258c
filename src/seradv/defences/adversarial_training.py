"""Adversarial training: a share of every batch replaced by adversarial examples of the current model.

The study's defence (SPEC.md, "Defence in the study's code") is ART's ``AdversarialTrainer``
with FGSM, eps 1.25, ratio 0.6. Its rule, kept here: per batch of ``b`` samples,
``ceil(ratio * b)`` rows drawn without replacement are replaced by the attack's output on them
(labels unchanged), the other rows stay clean; the attack sees the model as it is at that batch,
in eval mode (ART computes loss gradients with ``training_mode=False``: BatchNorm's running
statistics, no dropout), and the update is then taken in train mode on the mixed batch.

Attacks: ``fgsm`` (one signed-gradient step of size eps, as the study) and ``pgd`` (Madry et al.
2018: ``steps`` signed steps of ``step_size`` from a uniform random start in the eps cube,
projected on it). Every adversarial row lies in the clip box and within ``eps`` (L-inf) of its
clean row. The crafting runs through :func:`seradv.attacks.gradient.iterative_gradient_attack`,
the same code the FGSM / BIM / PGD attacks use, with the weights frozen (input gradients only).

Differences from ART: the rows are drawn from the training's own seeded ``torch.Generator``
(saved in the checkpoint, so a resumed training is the same training), not from NumPy's global
RNG; PGD's random start is drawn from that generator too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from seradv.attacks.context import frozen_weights, preserve_model_state
from seradv.attacks.gradient import iterative_gradient_attack
from seradv.config import DefenceConfig

BatchTransform = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
"""``transform(model, x, y, gen) -> x'``: the batch ``[shape=(b, 261, 128)]`` the update is
taken on; ``model`` is in train mode before and after."""


@dataclass(frozen=True)
class AdversarialTraining:
    """Replace ``ceil(ratio * b)`` rows of every batch by FGSM or PGD examples (L-inf ``eps``).

    Parameters
    ----------
    attack : {"fgsm", "pgd"}
    eps : float
        L-inf radius in standardized feature units (the study: 1.25).
    ratio : float
        Share of each batch replaced, in (0, 1] (the study: 0.6).
    steps, step_size : int, float
        PGD's iterations and step (ignored by FGSM).
    clip : (float, float)
        The box every adversarial row stays in (the run's clip values).
    """

    attack: str
    eps: float
    ratio: float
    clip: tuple[float, float]
    steps: int = 1
    step_size: float = 0.0

    @classmethod
    def from_config(cls, cfg: DefenceConfig, clip: tuple[float, float]) -> "AdversarialTraining":
        """From the ``defence:`` section (PGD's step defaults to ``2.5 * eps / steps``, Madry et al.)."""
        if cfg.attack == "fgsm":
            return cls("fgsm", cfg.eps, cfg.ratio, tuple(clip), 1, cfg.eps)
        step = cfg.step_size if cfg.step_size is not None else 2.5 * cfg.eps / cfg.steps
        return cls("pgd", cfg.eps, cfg.ratio, tuple(clip), cfg.steps, step)

    def __post_init__(self) -> None:
        # one set of rules: the ``defence:`` section's (the same messages from config and API)
        DefenceConfig(kind="adversarial_training", attack=self.attack, eps=self.eps, ratio=self.ratio,
                      steps=max(self.steps, 1), step_size=self.step_size if self.attack == "pgd" else None).validate()

    def n_adversarial(self, b: int) -> int:
        """Rows replaced in a batch of ``b`` (ART's ``ceil(ratio * b)``)."""
        return min(b, int(math.ceil(self.ratio * b)))

    def rows(self, b: int, gen: torch.Generator) -> torch.Tensor:
        """The rows ``[shape=(n_adversarial(b),)]`` of a batch of ``b`` to replace, drawn from ``gen``."""
        k = self.n_adversarial(b)
        if k == b:
            return torch.arange(b)
        return torch.randperm(b, generator=gen)[:k].sort().values

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Adversarial examples ``[shape=x.shape]`` of ``x`` for the model in eval mode."""
        start = None
        if self.attack == "pgd":
            start = (torch.rand(x.shape, generator=gen) * 2 - 1).mul_(self.eps).to(x.device)
        with preserve_model_state(model), frozen_weights(model):
            model.eval()
            return iterative_gradient_attack(model, x, y, eps=self.eps, eps_step=self.step_size,
                                             max_iter=self.steps, norm="linf", start=start,
                                             clip=self.clip)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The mixed batch: ``x`` with :meth:`rows` replaced by :meth:`craft` of them."""
        idx = self.rows(x.shape[0], gen).to(x.device)
        out = x.clone()
        out[idx] = self.craft(model, x[idx], y[idx], gen)
        return out
