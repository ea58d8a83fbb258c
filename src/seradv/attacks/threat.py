"""Threat model: the box every adversarial example stays in (the corpus's clip values).

Every attack works in the standardized log-Mel feature space ``[shape=(n, 261, 128)]``
(time x Mel, float32) and is bounded by the corpus's clip values (SPEC.md, "Attacks"): the
floor of the minimum and the ceiling of the maximum of the standardized training features,
e.g. EmoDB ``(-5, 7)``. No ``[0, 1]`` range and no image budget is assumed anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from seradv.errors import ParameterError

__all__ = ["CLIP_TOL", "STUDY_CLIPS", "ThreatModel", "as_numpy"]

#: The study's clip values per corpus: floor(min), ceil(max) of the standardized features.
STUDY_CLIPS: dict[str, tuple[float, float]] = {
    "emodb": (-5.0, 7.0),
    "emovo": (-3.0, 7.0),
    "ravdess": (-2.0, 8.0),
}

#: Tolerance on ``x`` lying inside the clip box (float32 rounding of standardized data).
CLIP_TOL = 1e-5


@dataclass(frozen=True)
class ThreatModel:
    """Box the adversarial examples must stay in (the study's clip values).

    Parameters
    ----------
    clip_min, clip_max : float
        Lower and upper bound of every feature cell, ``clip_min < clip_max``, both finite.
    """

    clip_min: float
    clip_max: float

    def __post_init__(self) -> None:
        lo, hi = self.clip_min, self.clip_max
        for nm, v in (("clip_min", lo), ("clip_max", hi)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ParameterError(f"{nm}={v!r} must be a finite number")
            if not math.isfinite(float(v)):
                raise ParameterError(f"{nm}={v!r} must be a finite number")
        if not float(lo) < float(hi):
            raise ParameterError(
                f"clip=({lo!r}, {hi!r}) is empty: clip_min must be smaller than clip_max"
            )
        object.__setattr__(self, "clip_min", float(lo))
        object.__setattr__(self, "clip_max", float(hi))

    @classmethod
    def from_data(cls, x: np.ndarray | torch.Tensor) -> ThreatModel:
        """The study's rule: ``(floor(min(x)), ceil(max(x)))`` of standardized training features.

        Parameters
        ----------
        x : array ``[shape=(n, ...)]``
            Standardized (training) features.
        """
        arr = as_numpy(x)
        if arr.size == 0 or not np.isfinite(arr).all():
            raise ParameterError("clip values need a non-empty array of finite features")
        lo, hi = float(np.floor(arr.min())), float(np.ceil(arr.max()))
        if lo == hi:
            hi = lo + 1.0
        return cls(lo, hi)

    @classmethod
    def study(cls, corpus: str) -> ThreatModel:
        """The clip values the study used for ``corpus`` ("emodb", "emovo" or "ravdess")."""
        key = corpus.lower()
        if key not in STUDY_CLIPS:
            raise ParameterError(
                f"corpus={corpus!r} has no study clip values; known: {', '.join(STUDY_CLIPS)}"
            )
        return cls(*STUDY_CLIPS[key])

    def as_tuple(self) -> tuple[float, float]:
        """``(clip_min, clip_max)``."""
        return (self.clip_min, self.clip_max)

    @property
    def width(self) -> float:
        """``clip_max - clip_min``."""
        return self.clip_max - self.clip_min


def as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """``x`` as a NumPy array (a tensor detached and copied to the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
