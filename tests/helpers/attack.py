"""Tiny trained SER model and data shared by the attack tests (fast, CPU).

The tiny model honours the CNN-LSTM's contract (``[batch, 261, 128]`` -> logits; also
``[batch, 1, 261, 128]``) and has the parts whose gradient handling matters: batch norm,
dropout and an LSTM. Its synthetic classes are "peaky" band energies (a few loud cells in a
class-specific Mel band), learnt through per-block max and mean features, so that even the
1-cell-level Pixel attack has something to find.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from seradv.attacks import ThreatModel

N_CLASSES = 4
CLIP = (-5.0, 7.0)
#: Attacks whose quick run uses 8 samples instead of 16 (per-sample loops in ART).
SLOW = {"pixel", "boundary", "hopskipjump", "jsma", "cw_l2", "cw_linf", "square"}


# --------------------------------------------------------------------------------------
# Tiny model and data
# --------------------------------------------------------------------------------------
class TinySER(nn.Module):
    """Block mean + max features (29 x 16 blocks of 9 x 8 cells) -> BN -> LSTM -> dropout -> linear."""

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(32)
        self.lstm = nn.LSTM(32, 16, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x[:, 0]
        b = x.shape[0]
        z = x.reshape(b, 29, 9, 16, 8)
        z = torch.cat([z.mean((2, 4)), z.amax((2, 4))], 2)
        z = self.bn(z.transpose(1, 2)).transpose(1, 2)
        _, (h, _) = self.lstm(z)
        return self.head(self.drop(h[-1]))


class CellWeighted(nn.Module):
    """``model(x * w)`` with a fixed weight per input cell, no two alike: a tie-free gradient.

    TinySER's block mean gives the 71 non-max cells of a 9 x 8 block *exactly* the same
    gradient (the tiny model's input gradient has only ~900 distinct values over its 33,408
    cells), so an attack that picks the top-k cells (JSMA) follows whatever tie-break rule its
    backend has (NumPy's ``argpartition`` for ART, ``torch.topk`` for seradv), and a few ulps
    of BLAS round-off on another CPU choose between whole paths. Here every cell's gradient is
    the model's times its own weight ``w`` (a seeded permutation of ``linspace(1 - spread/2,
    1 + spread/2)``, so two cells of a block differ by at least ``spread / 33407`` relative,
    ~250 float32 ulps): the model decides which cells are the largest, not the tie-break.
    """

    def __init__(self, model: nn.Module, seed: int = 0, spread: float = 0.5) -> None:
        super().__init__()
        self.model = model
        n = 261 * 128
        rng = np.random.default_rng(seed)
        w = 1.0 - spread / 2 + spread * rng.permutation(n) / (n - 1)
        self.register_buffer("w", torch.from_numpy(w.astype(np.float32).reshape(261, 128)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.w)  # [b, 261, 128] or [b, 1, 261, 128] (broadcast)


class GuardedModel(nn.Module):
    """Wraps a model; counts forward calls, forwards with autograd on, backward passes and the rows
    of the forwards without autograd."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forwards = 0
        self.grad_forwards = 0
        self.backwards = 0
        self.query_rows = 0  # rows of the forwards without autograd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        out = self.model(x)
        if not out.requires_grad:
            self.query_rows += int(x.shape[0])
        if torch.is_grad_enabled() and out.requires_grad:
            self.grad_forwards += 1

            def hook(grad: torch.Tensor) -> torch.Tensor:
                self.backwards += 1
                return grad

            out.register_hook(hook)
        return out


def make_data(n: int, seed: int, n_classes: int = N_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Noise features with 10 loud cells (+5) in the class's Mel band; clipped to CLIP."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 261, 128)).astype(np.float32)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    width = 128 // n_classes
    for i, c in enumerate(y):
        t = rng.integers(0, 261, 10)
        f = rng.integers(c * width, (c + 1) * width, 10)
        x[i, t, f] += 5.0
    return np.clip(x, *CLIP), y.astype(np.int64)


def train_tiny() -> dict[str, Any]:
    """The tiny model trained on 256 peaky-band samples; 64 test samples and the clip box."""
    torch.manual_seed(0)
    model = TinySER()
    x, y = make_data(256, seed=0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    x_test, y_test = make_data(64, seed=1)
    clip = ThreatModel.from_data(x)
    return {"model": model, "x": x_test, "y": y_test, "clip": clip}
