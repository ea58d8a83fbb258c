"""The reference study's CNN-LSTM for log-Mel spectrograms (SPEC.md, "Model").

Input ``[shape=(batch, 261, 128)]`` (time x Mel) -> 9 chunks of 29 frames; per chunk, with
shared weights ("time distributed"): Conv 16 5x5 ReLU, BatchNorm, MaxPool 4x4 stride 2;
Conv 32 3x3 ReLU, MaxPool 2x2 stride 2; Conv 64 3x3 ReLU, MaxPool 2x2 stride 1;
flatten (1 x 26 x 64 = 1664); Dropout; bidirectional LSTM 256 over the 9 chunks, last state;
Dense to ``n_classes`` logits (softmax is applied by the loss / by ``predict_proba``).

About 3.96 M parameters (Keras count 3,960,389; PyTorch's LSTM has a second bias vector,
+2,048).
"""

from __future__ import annotations

import torch
from torch import nn

from seradv.errors import ModelError


class CNNLSTM(nn.Module):
    """Time-distributed CNN feeding a bidirectional LSTM.

    Parameters
    ----------
    n_classes : int
        Number of emotion classes (5 in the study).
    dropout : float
        Dropout after the flattened CNN features.
    lstm_dropout : float
        Dropout on the LSTM inputs (Keras ``LSTM(dropout=...)``).
    n_frames, n_mels : int
        Input shape (261 x 128 in the study).
    n_chunks : int
        Number of time chunks (9 chunks of 29 frames in the study).
    """

    def __init__(
        self,
        n_classes: int = 5,
        *,
        dropout: float = 0.3,
        lstm_dropout: float = 0.2,
        n_frames: int = 261,
        n_mels: int = 128,
        n_chunks: int = 9,
        lstm_units: int = 256,
    ) -> None:
        super().__init__()
        if n_frames % n_chunks:
            raise ModelError(f"n_frames={n_frames} is not divisible by n_chunks={n_chunks}")
        if n_classes < 2:
            raise ModelError(f"n_classes={n_classes} must be at least 2")
        self.input_shape = (n_frames, n_mels)
        self.n_classes = n_classes
        self.n_chunks = n_chunks
        self.chunk = n_frames // n_chunks
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 16, 5),
            nn.ReLU(),
            nn.BatchNorm2d(16, eps=1e-3, momentum=0.01),  # Keras defaults
            nn.MaxPool2d(4, stride=2),
            nn.Conv2d(16, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=1),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.cnn(torch.zeros(1, 1, self.chunk, n_mels)).shape[1]
        self.n_flat = n_flat
        self.dropout = nn.Dropout(dropout)
        self.lstm_dropout = nn.Dropout(lstm_dropout)
        self.lstm = nn.LSTM(n_flat, lstm_units, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * lstm_units, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[shape=(batch, n_classes)]`` for features ``[shape=(batch, 261, 128)]``."""
        if x.ndim == 4 and x.shape[1] == 1:  # (batch, 1, time, mel), e.g. from ART's 3-D shape
            x = x[:, 0]
        if x.ndim != 3 or tuple(x.shape[1:]) != self.input_shape:
            raise ModelError(
                f"CNNLSTM expects input of shape (batch, {self.input_shape[0]}, "
                f"{self.input_shape[1]}), got {tuple(x.shape)}"
            )
        b = x.shape[0]
        feats = self.encode_chunks(x.reshape(b * self.n_chunks, self.chunk, x.shape[2]))
        return self.decode_chunks(feats.reshape(b, self.n_chunks, self.n_flat))

    # The chunked-model protocol (see :mod:`seradv.models`): ``forward(x)`` equals
    # ``decode_chunks(encode_chunks(chunks of x))``, so that an attack whose queries change
    # a few cells re-encodes only the time chunks they fall in.
    @property
    def chunk_frames(self) -> int:
        """Frames per time chunk (29 in the study); chunk ``c`` is frames ``[29 c, 29 (c + 1))``."""
        return self.chunk

    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """CNN features ``[shape=(m, n_flat)]`` of time chunks ``[shape=(m, chunk_frames, n_mels)]``."""
        return self.cnn(chunks.unsqueeze(1))

    def decode_chunks(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits ``[shape=(b, n_classes)]`` from chunk features ``[shape=(b, n_chunks, n_flat)]``."""
        feats = self.lstm_dropout(self.dropout(feats))
        _, (h_n, _) = self.lstm(feats)
        last = torch.cat([h_n[0], h_n[1]], dim=1)  # forward last state, backward last state
        return self.head(last)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
