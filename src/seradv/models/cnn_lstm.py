"""The reference study's CNN-LSTM for log-Mel spectrograms (SPEC.md, "Model"): the architecture.

Input ``[shape=(batch, 261, 128)]`` (time x Mel) -> 9 chunks of 29 frames; per chunk, with
shared weights ("time distributed"): Conv 16 5x5 ReLU, BatchNorm, MaxPool 4x4 stride 2;
Conv 32 3x3 ReLU, MaxPool 2x2 stride 2; Conv 64 3x3 ReLU, MaxPool 2x2 stride 1;
flatten (1 x 26 x 64 = 1664); Dropout; bidirectional LSTM 256 over the 9 chunks, last state;
Dense to ``n_classes`` logits (softmax is applied by the loss / by ``predict_proba``).

About 3.96 M parameters (Keras count 3,960,389; PyTorch's LSTM has a second bias vector,
+2,048).

Training runs the layers as declared; in eval mode the CNN runs through
:mod:`seradv.models.fast_paths` (same numbers up to float round-off), which says which fast
path runs when. The chunked-model protocol's chunk features are the CNN features *and* the
LSTM's input projections (the gate pre-activations of both directions), so a Pixel-attack
query that changes one chunk re-runs that chunk's CNN (on a 50-column crop around the changed
Mel columns, :meth:`CNNLSTM.encode_chunks_local`) and projection and the 9-step recurrence,
not the CNN and the 1664 x 2048 projection of every chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seradv.errors import ModelError
from seradv.models.fast_paths import FastCNN


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
            maps = self.cnn[:-1](torch.zeros(1, 1, self.chunk, n_mels))
        self.map_shape = tuple(maps.shape[1:])  # (64, 1, 26): channels, rows, Mel columns
        n_flat = maps[0].numel()
        self.n_flat = n_flat
        self.dropout = nn.Dropout(dropout)
        self.lstm_dropout = nn.Dropout(lstm_dropout)
        self.lstm = nn.LSTM(n_flat, lstm_units, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * lstm_units, n_classes)
        self._fast = FastCNN()  # eval-mode fast paths and their caches (not a submodule)

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
        feats = self._cnn(x.reshape(b * self.n_chunks, 1, self.chunk, x.shape[2]))
        feats = self.lstm_dropout(self.dropout(feats.reshape(b, self.n_chunks, self.n_flat)))
        _, (h_n, _) = self.lstm(feats)
        last = torch.cat([h_n[0], h_n[1]], dim=1)  # forward last state, backward last state
        return self.head(last)

    def _cnn(self, x: torch.Tensor) -> torch.Tensor:
        """Flat CNN features ``[shape=(m, n_flat)]`` of chunks ``[shape=(m, 1, chunk, n_mels)]``."""
        return self._cnn_maps(x).flatten(1)

    def _cnn_maps(self, x: torch.Tensor) -> torch.Tensor:
        """CNN feature maps ``[shape=(m, 64, 1, w)]`` of inputs ``[shape=(m, 1, chunk, w_in)]``:
        the layers as declared in training, a fast path in eval mode (:func:`~seradv.models.fast_paths.cnn_path`)."""
        return self._fast.maps(self.cnn, x, training=self.training)

    def column_geometry(self) -> tuple[int, int]:
        """``(stride, field)``: CNN output column ``j`` sees exactly input Mel columns
        ``[stride j, stride j + field)`` (valid convolutions and poolings, no padding)."""
        field, jump = 1, 1
        for layer in self.cnn:
            if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                k, s = layer.kernel_size, layer.stride
                k = k if isinstance(k, int) else k[-1]
                s = s if isinstance(s, int) else s[-1]
                field += (k - 1) * jump
                jump *= s
        return jump, field

    # ----------------------------------------------------------------------------------
    # The chunked-model protocol (see :mod:`seradv.models`): ``forward(x)`` equals
    # ``decode_chunks(encode_chunks(chunks of x))``, so that an attack whose queries change
    # a few cells re-encodes only the time chunks they fall in. The chunk features are the
    # flat CNN features and the LSTM's input projections (gate pre-activations, both
    # directions, biases included); encode_chunks_local re-runs the CNN on a crop only.
    # ----------------------------------------------------------------------------------
    @property
    def chunk_frames(self) -> int:
        """Frames per time chunk (29 in the study); chunk ``c`` is frames ``[29 c, 29 (c + 1))``."""
        return self.chunk

    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """Chunk features ``[shape=(m, n_flat + 8 lstm_units)]`` of chunks ``[shape=(m, chunk_frames, n_mels)]``.

        The flat CNN features, then the LSTM's gate pre-activations: the forward direction's four
        gates, then the backward direction's (PyTorch's i, f, g, o), biases included.
        """
        return self._project(self._cnn(chunks.unsqueeze(1)))

    def _project(self, cnn_feats: torch.Tensor) -> torch.Tensor:
        feats = self.lstm_dropout(self.dropout(cnn_feats))
        lstm = self.lstm
        fwd = F.linear(feats, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
        bwd = F.linear(feats, lstm.weight_ih_l0_reverse, lstm.bias_ih_l0_reverse + lstm.bias_hh_l0_reverse)
        return torch.cat([cnn_feats, fwd, bwd], dim=1)

    def encode_chunks_local(self, chunks: torch.Tensor, col_lo: torch.Tensor, col_hi: torch.Tensor,
                            base: torch.Tensor) -> torch.Tensor:
        """:meth:`encode_chunks` of chunks that differ from those of ``base`` only in Mel columns
        ``col_lo..col_hi`` (``[shape=(m,)]`` each, inclusive).

        A chunk whose changed columns reach at most ``field // stride + 1`` CNN output columns
        (one changed column always does: 7 of 26) re-runs the CNN on a crop of
        ``stride (K - 1) + field`` input columns (50 of 128) that starts on a multiple of the
        stride, so that the crop's output columns are exactly the full output's columns
        ``j0 .. j0 + K - 1``; they replace those columns of ``base``'s CNN features. Other
        chunks take :meth:`encode_chunks`. Same numbers up to float round-off.
        """
        stride, field = self.column_geometry()
        c, h, w = self.map_shape
        k = field // stride + 1
        width = stride * (k - 1) + field
        j_lo = torch.div(col_lo - field + stride, stride, rounding_mode="floor").clamp(min=0)
        j_hi = torch.div(col_hi, stride, rounding_mode="floor").clamp(max=w - 1)
        local = (j_hi - j_lo + 1 <= k) & (h == 1) & (k <= w)  # a crop narrower than the chunk
        out = torch.empty(chunks.shape[0], base.shape[1], dtype=base.dtype, device=base.device)
        far = (~local).nonzero()[:, 0]
        if far.numel():
            out[far] = self.encode_chunks(chunks[far])
        near = local.nonzero()[:, 0]
        if near.numel():
            j0 = j_lo[near].clamp(max=w - k)
            cols = stride * j0[:, None] + torch.arange(width, device=chunks.device)
            crop = chunks[near].gather(2, cols[:, None, :].expand(-1, chunks.shape[1], -1))
            maps = self._cnn_maps(crop.unsqueeze(1))[:, :, 0, :]  # [m, c, k]
            cnn = base[near, : self.n_flat].reshape(-1, c, w).clone()
            out_cols = j0[:, None] + torch.arange(k, device=chunks.device)
            cnn.scatter_(2, out_cols[:, None, :].expand(-1, c, -1), maps)
            out[near] = self._project(cnn.flatten(1))
        return out

    def decode_chunks(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits ``[shape=(b, n_classes)]`` from :meth:`encode_chunks` ``[shape=(b, n_chunks, F)]``."""
        g = 4 * self.lstm.hidden_size
        gates = feats[..., self.n_flat :]
        h_fwd = _lstm_last_state(gates[..., :g], self.lstm.weight_hh_l0, reverse=False)
        h_bwd = _lstm_last_state(gates[..., g:], self.lstm.weight_hh_l0_reverse, reverse=True)
        return self.head(torch.cat([h_fwd, h_bwd], dim=1))


def _lstm_last_state(gates_in: torch.Tensor, w_hh: torch.Tensor, *, reverse: bool) -> torch.Tensor:
    """Last hidden state of one LSTM direction from input projections ``[shape=(b, T, 4 units)]``.

    PyTorch's ``nn.LSTM`` cell (gate order i, f, g, o), zero initial state; ``reverse`` runs
    from the last step to the first (the backward direction; its "last" state is at step 0).
    """
    b, steps, four_u = gates_in.shape
    h = gates_in.new_zeros(b, four_u // 4)
    c = torch.zeros_like(h)
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        i, f, gg, o = torch.addmm(gates_in[:, t], h, w_hh.t()).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
