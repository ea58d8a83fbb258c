"""The reference study's CNN-LSTM for log-Mel spectrograms (SPEC.md, "Model").

Input ``[shape=(batch, 261, 128)]`` (time x Mel) -> 9 chunks of 29 frames; per chunk, with
shared weights ("time distributed"): Conv 16 5x5 ReLU, BatchNorm, MaxPool 4x4 stride 2;
Conv 32 3x3 ReLU, MaxPool 2x2 stride 2; Conv 64 3x3 ReLU, MaxPool 2x2 stride 1;
flatten (1 x 26 x 64 = 1664); Dropout; bidirectional LSTM 256 over the 9 chunks, last state;
Dense to ``n_classes`` logits (softmax is applied by the loss / by ``predict_proba``).

About 3.96 M parameters (Keras count 3,960,389; PyTorch's LSTM has a second bias vector,
+2,048).

Inference speed-ups (same numbers up to float round-off, ~1e-6; used only without autograd,
in eval mode, on float32 CPU tensors): the CNN runs on oneDNN ("mkldnn") tensors through
:func:`torch.utils.mkldnn.to_mkldnn` (a cached copy of the CNN, rebuilt when a weight
changes): 2.0x faster than the strided CNN on this project's 2-core CPU, because PyTorch's
strided 4x4 max-pool alone took 40 % of the CNN's time. The chunked-model protocol's chunk
features are the LSTM's input projections (the gate pre-activations of both directions), so
a Pixel-attack query that changes one chunk re-runs one chunk's CNN and projection and the
cheap 9-step recurrence, not the 1664 x 2048 projection of every chunk.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():  # torch.utils.mkldnn defines its modules with torch.jit.script_method
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch.utils import mkldnn as _mkldnn

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
        feats = self._cnn(x.reshape(b * self.n_chunks, 1, self.chunk, x.shape[2]))
        feats = self.lstm_dropout(self.dropout(feats.reshape(b, self.n_chunks, self.n_flat)))
        _, (h_n, _) = self.lstm(feats)
        last = torch.cat([h_n[0], h_n[1]], dim=1)  # forward last state, backward last state
        return self.head(last)

    # ----------------------------------------------------------------------------------
    # CNN: strided, or oneDNN for inference (module docstring)
    # ----------------------------------------------------------------------------------
    def _fast_inference(self, x: torch.Tensor) -> bool:
        return (not self.training and not torch.is_grad_enabled() and x.device.type == "cpu"
                and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
                and torch.backends.mkldnn.enabled)

    def _mkldnn_cnn(self) -> nn.Module:
        """oneDNN copy of the CNN (no Flatten), rebuilt when a parameter or buffer changed."""
        tensors = [*self.cnn.parameters(), *self.cnn.buffers()]
        key = tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for t in tensors)
        cached = self.__dict__.get("_mkldnn_cache")
        if cached is None or cached[0] != key:
            cached = (key, _mkldnn.to_mkldnn(copy.deepcopy(self.cnn[:-1])).eval())
            self.__dict__["_mkldnn_cache"] = cached  # not a submodule: no state_dict entry
        return cached[1]

    def _cnn(self, x: torch.Tensor) -> torch.Tensor:
        """Flat CNN features ``[shape=(m, n_flat)]`` of chunks ``[shape=(m, 1, chunk, n_mels)]``."""
        if self._fast_inference(x) and x.shape[0]:
            return self._mkldnn_cnn()(x.contiguous().to_mkldnn()).to_dense().flatten(1)
        return self.cnn(x)

    def __deepcopy__(self, memo: dict) -> "CNNLSTM":
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k != "_mkldnn_cache":  # oneDNN tensors cannot be deep-copied; rebuilt on demand
                new.__dict__[k] = copy.deepcopy(v, memo)
        return new

    # ----------------------------------------------------------------------------------
    # The chunked-model protocol (see :mod:`seradv.models`): ``forward(x)`` equals
    # ``decode_chunks(encode_chunks(chunks of x))``, so that an attack whose queries change
    # a few cells re-encodes only the time chunks they fall in. The chunk features are the
    # LSTM's input projections (gate pre-activations, both directions, biases included).
    # ----------------------------------------------------------------------------------
    @property
    def chunk_frames(self) -> int:
        """Frames per time chunk (29 in the study); chunk ``c`` is frames ``[29 c, 29 (c + 1))``."""
        return self.chunk

    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """Gate pre-activations ``[shape=(m, 8 lstm_units)]`` of chunks ``[shape=(m, chunk_frames, n_mels)]``.

        Forward direction's four gates, then the backward direction's (PyTorch's i, f, g, o).
        """
        feats = self.lstm_dropout(self.dropout(self._cnn(chunks.unsqueeze(1))))
        lstm = self.lstm
        fwd = F.linear(feats, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
        bwd = F.linear(feats, lstm.weight_ih_l0_reverse, lstm.bias_ih_l0_reverse + lstm.bias_hh_l0_reverse)
        return torch.cat([fwd, bwd], dim=1)

    def decode_chunks(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits ``[shape=(b, n_classes)]`` from :meth:`encode_chunks` ``[shape=(b, n_chunks, 8 lstm_units)]``."""
        g = 4 * self.lstm.hidden_size
        h_fwd = _lstm_last_state(feats[..., :g], self.lstm.weight_hh_l0, reverse=False)
        h_bwd = _lstm_last_state(feats[..., g:], self.lstm.weight_hh_l0_reverse, reverse=True)
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
