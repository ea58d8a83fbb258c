"""A second architecture on the study's features: a small plain CNN (for transferability).

Input ``[shape=(batch, 261, 128)]`` (time x Mel, the standardized log-Mel) as one image;
``len(channels)`` blocks of Conv 3x3 (padding 1, no bias) -> BatchNorm -> ReLU -> MaxPool 2x2;
global average pool over time and Mel; Dropout; Linear to ``n_classes`` logits. With the default
channels (16, 32, 64, 128): 261 x 128 -> 130 x 64 -> 65 x 32 -> 32 x 16 -> 16 x 8 maps,
about 98 k parameters (the CNN-LSTM has 3.96 M), and no time chunking: every frame and band
reaches the output (unlike :class:`~seradv.models.CNNLSTM`, which never sees the last 3 frames
of a chunk nor the top 2 bands). Selected with ``train.model: small_cnn``.
"""

from __future__ import annotations

import torch
from torch import nn

from seradv.errors import ModelError

__all__ = ["SmallCNN"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Conv 3x3 (same padding) -> BatchNorm -> ReLU -> MaxPool 2x2:
    ``(b, c_in, h, w) -> (b, c_out, h // 2, w // 2)``."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    """Conv blocks, global average pool, linear head.

    Parameters
    ----------
    n_classes : int
        Number of emotion classes (>= 2).
    dropout : float
        Dropout before the linear head, in ``[0, 1)``.
    channels : tuple of int
        Output channels of each block (each block halves time and Mel).
    """

    def __init__(self, n_classes: int = 5, *, dropout: float = 0.3,
                 channels: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        if n_classes < 2:
            raise ModelError(f"n_classes={n_classes} must be at least 2")
        if not channels or any(int(c) < 1 for c in channels):
            raise ModelError(f"channels={channels} must be a non-empty tuple of positive integers")
        if not 0 <= dropout < 1:
            raise ModelError(f"dropout={dropout} must be in [0, 1)")
        self.n_classes = int(n_classes)
        self.min_size = 2 ** len(channels)
        widths = (1, *(int(c) for c in channels))
        self.features = nn.Sequential(*(_block(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], self.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[shape=(batch, n_classes)]`` of features ``[shape=(batch, T, n_mels)]``
        (or ``(batch, 1, T, n_mels)``); ``T`` and ``n_mels`` at least ``2 ** len(channels)``."""
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != 1 or min(x.shape[2:]) < self.min_size:
            raise ModelError(f"SmallCNN expects input of shape (batch, T, n_mels) with T, n_mels >= "
                             f"{self.min_size}, got {tuple(x.shape)}")
        maps = self.features(x)
        return self.head(self.dropout(maps.mean((2, 3))))
