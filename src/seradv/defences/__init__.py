"""Defences: what wraps a model's training (or, later, its input) to make it robust.

A defence is configured in the run config's ``defence:`` section
(:class:`seradv.config.DefenceConfig`), saved beside the model, and built here from its
registered name:

=======================  ================================================================
kind                     what
=======================  ================================================================
none                     the study's plain training
adversarial_training     a share of every training batch replaced by adversarial examples
                         crafted on the current model (FGSM as the study; PGD, Madry et al.)
=======================  ================================================================

Users add a defence with :func:`register_defence` (a builder taking the config and the run's
clip box and returning a batch transform, see :data:`BatchTransform`), without touching the core.
"""

from __future__ import annotations

from collections.abc import Callable

from seradv.config import DefenceConfig
from seradv.defences.adversarial_training import AdversarialTraining, BatchTransform
from seradv.errors import ConfigError

Builder = Callable[[DefenceConfig, tuple[float, float]], BatchTransform | None]

DEFENCES: dict[str, Builder] = {}


def register_defence(kind: str, builder: Builder) -> None:
    """Register ``builder(cfg, clip) -> batch transform or None`` under ``kind``."""
    if not kind or kind in DEFENCES:
        raise ConfigError(f"defence {kind!r} is empty or already registered")
    DEFENCES[kind] = builder


def build_defence(cfg: DefenceConfig, clip: tuple[float, float]) -> BatchTransform | None:
    """The batch transform of the configured defence (``None`` for plain training)."""
    if cfg.kind not in DEFENCES:
        raise ConfigError(f"defence.kind={cfg.kind!r} is not a registered defence; "
                          f"known: {', '.join(DEFENCES)}")
    return DEFENCES[cfg.kind](cfg, clip)


register_defence("none", lambda cfg, clip: None)
register_defence("adversarial_training", lambda cfg, clip: AdversarialTraining.from_config(cfg, clip))

__all__ = ["DEFENCES", "AdversarialTraining", "BatchTransform", "build_defence", "register_defence"]
