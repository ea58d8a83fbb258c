"""The reference study's CNN-LSTM for log-Mel spectrograms (SPEC.md, "Model").

Input ``[shape=(batch, 261, 128)]`` (time x Mel) -> 9 chunks of 29 frames; per chunk, with
shared weights ("time distributed"): Conv 16 5x5 ReLU, BatchNorm, MaxPool 4x4 stride 2;
Conv 32 3x3 ReLU, MaxPool 2x2 stride 2; Conv 64 3x3 ReLU, MaxPool 2x2 stride 1;
flatten (1 x 26 x 64 = 1664); Dropout; bidirectional LSTM 256 over the 9 chunks, last state;
Dense to ``n_classes`` logits (softmax is applied by the loss / by ``predict_proba``).

About 3.96 M parameters (Keras count 3,960,389; PyTorch's LSTM has a second bias vector,
+2,048).

Speed-ups in eval mode (same numbers up to float round-off, ~1e-6; training runs the layers
as declared). With autograd (white-box attacks): max-pools before the ReLUs and the
BatchNorm, channels-last maps after the first convolution; forward+backward 1.5x faster
(`benchmarks/model_speed.py`, one thread). With frozen CNN weights as well (``run_attack``
freezes them): the first convolution and max-pool differentiate the input only
(:class:`_ConvPoolInputGrad`), another 1.3x (1.9x in all).
Without autograd, on float32 CPU tensors (predictions, black-box queries): the CNN runs on oneDNN ("mkldnn") tensors through
:func:`torch.utils.mkldnn.to_mkldnn` (a cached copy of the CNN, rebuilt when a weight
changes): 2.0x faster than the strided CNN on this project's 2-core CPU, because PyTorch's
strided 4x4 max-pool alone took 40 % of the CNN's time; the copy's max-pools run before the
ReLUs and the BatchNorm (:func:`pool_first`, exact), another 1.9x (3.6x together in
`benchmarks/model_speed.py`, one thread). The chunked-model
protocol's chunk features are the CNN features *and* the LSTM's input projections (the gate
pre-activations of both directions), so a Pixel-attack query that changes one chunk re-runs
that chunk's CNN (on a 50-column crop around the changed Mel columns,
:meth:`CNNLSTM.encode_chunks_local`) and projection and the 9-step recurrence, not the CNN
and the 1664 x 2048 projection of every chunk.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

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
            maps = self.cnn[:-1](torch.zeros(1, 1, self.chunk, n_mels))
        self.map_shape = tuple(maps.shape[1:])  # (64, 1, 26): channels, rows, Mel columns
        n_flat = maps[0].numel()
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

    def _cached(self, name: str, build: Callable[[], Any]) -> Any:
        """``build()``, kept in ``__dict__[name]`` (not a submodule: no state_dict entry) until a
        CNN parameter or buffer changes (storage or in-place version) or a layer's mode does."""
        tensors = [*self.cnn.parameters(), *self.cnn.buffers()]
        key = (tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for t in tensors),
               tuple(layer.training for layer in self.cnn))
        cached = self.__dict__.get(name)
        if cached is None or cached[0] != key:
            cached = (key, build())
            self.__dict__[name] = cached
        return cached[1]

    def _eval_layers(self) -> list[nn.Module]:
        """The CNN's layers (no Flatten) in :func:`pool_first` order (the model's own modules)."""
        return self._cached("_pool_first_cache", lambda: pool_first(list(self.cnn[:-1])))

    def _mkldnn_cnn(self) -> nn.Module:
        """oneDNN copy of :meth:`_eval_layers`."""
        return self._cached("_mkldnn_cache", lambda: _mkldnn.to_mkldnn(
            nn.Sequential(*copy.deepcopy(self._eval_layers()))).eval())

    def _cnn(self, x: torch.Tensor) -> torch.Tensor:
        """Flat CNN features ``[shape=(m, n_flat)]`` of chunks ``[shape=(m, 1, chunk, n_mels)]``."""
        return self._cnn_maps(x).flatten(1)

    def _cnn_maps(self, x: torch.Tensor) -> torch.Tensor:
        """CNN feature maps ``[shape=(m, 64, 1, w)]`` of inputs ``[shape=(m, 1, chunk, w_in)]``.

        Training: the layers as declared. Eval mode with autograd on the CPU (white-box
        attacks): :func:`pool_first` order, the first convolution's output in channels-last
        layout (PyTorch's max-pool is 4x faster there): the same logits up to float round-off,
        1.4x faster model forward+backward. Eval without autograd: the oneDNN copy.
        """
        if self.training:
            return self.cnn[:-1](x)
        if self._fast_inference(x) and x.shape[0]:
            return self._mkldnn_cnn()(x.contiguous().to_mkldnn()).to_dense()
        layers = self._eval_layers()
        h, start = x, 0
        if x.device.type == "cpu" and x.requires_grad and _conv_pool_input_only(layers[:2]):
            conv, pool = layers[0], layers[1]
            h, start = _ConvPoolInputGrad.apply(x, conv.weight, conv.bias, pool.kernel_size, pool.stride), 2
        for i, layer in enumerate(layers[start:], start):
            h = layer(h)
            if i == 0 and h.device.type == "cpu":
                h = h.contiguous(memory_format=torch.channels_last)
        return h

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

    def __deepcopy__(self, memo: dict) -> "CNNLSTM":
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k not in ("_mkldnn_cache", "_pool_first_cache"):  # oneDNN tensors cannot be
                new.__dict__[k] = copy.deepcopy(v, memo)  # deep-copied; both rebuilt on demand
        return new

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


def _bn_scale_positive(layer: nn.Module) -> bool:
    if not isinstance(layer, nn.BatchNorm2d) or layer.training or layer.running_var is None:
        return False
    weight = layer.weight if layer.affine else torch.ones_like(layer.running_var)
    return bool((weight > 0).all())


def pool_first(layers: list[nn.Module]) -> list[nn.Module]:
    """Eval-mode layers with every ``MaxPool2d`` moved before the ReLUs and positive-scale
    BatchNorms that precede it: the same outputs, bit for bit (a non-decreasing elementwise
    map commutes with a max, rounding included), on 4-6x fewer elements. oneDNN's ReLU on
    the first convolution's full output alone took 40 % of the oneDNN CNN's time."""
    out = list(layers)
    moved = True
    while moved:
        moved = False
        for i in range(1, len(out)):
            prev = out[i - 1]
            if isinstance(out[i], nn.MaxPool2d) and (isinstance(prev, nn.ReLU) or _bn_scale_positive(prev)):
                out[i - 1], out[i] = out[i], prev
                moved = True
    return out


def _conv_pool_input_only(layers: list[nn.Module]) -> bool:
    """Whether ``layers`` are a frozen valid stride-1 ``Conv2d`` then a plain ``MaxPool2d``
    (the case :class:`_ConvPoolInputGrad` handles)."""
    if len(layers) < 2 or not isinstance(layers[0], nn.Conv2d) or not isinstance(layers[1], nn.MaxPool2d):
        return False
    conv, pool = layers
    return (not any(p.requires_grad for p in conv.parameters())
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding in ((0, 0), "valid") and conv.padding_mode == "zeros"
            and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1)) and not pool.ceil_mode
            and not pool.return_indices)


class _ConvPoolInputGrad(torch.autograd.Function):
    """``max_pool2d(conv2d(x, weight, bias), k, s)``, differentiable in ``x`` only (frozen
    weights, as in an attack), in channels-last layout.

    The backward's convolution input gradient is one batched matmul ``W^T g`` (``[C_in k k,
    H W]`` per sample) and ``k k`` shifted adds (col2im). For the CNN-LSTM's first
    convolution (1 -> 16 channels, 5x5, 25 x 124 outputs) oneDNN's and PyTorch's backward
    take 2-3x longer: a 1-channel input gradient is their worst case. Same numbers up to float
    round-off (tests/test_fast_blackbox.py).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                kernel: Any, stride: Any) -> torch.Tensor:
        y = F.conv2d(x, weight, bias).contiguous(memory_format=torch.channels_last)
        z, idx = F.max_pool2d_with_indices(y, kernel, stride)
        ctx.save_for_backward(weight, idx)
        ctx.geometry = (tuple(y.shape), kernel, stride)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gz: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, idx = ctx.saved_tensors
        y_shape, kernel, stride = ctx.geometry
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        s = k if stride is None else (stride, stride) if isinstance(stride, int) else tuple(stride)
        shell = gz.new_empty(y_shape).contiguous(memory_format=torch.channels_last)
        gy = torch.ops.aten.max_pool2d_with_indices_backward(
            gz.contiguous(memory_format=torch.channels_last), shell, list(k), list(s), [0, 0], [1, 1],
            False, idx)
        return conv2d_input_grad(gy, weight), None, None, None, None


def conv2d_input_grad(gy: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. the input of a valid, stride-1 ``conv2d`` with ``weight`` ``[shape=(C_out,
    C_in, kh, kw)]``, given the output gradient ``gy`` ``[shape=(b, C_out, H, W)]``
    (= ``torch.nn.grad.conv2d_input``): ``W^T g`` per sample, then col2im by ``kh kw`` shifted adds."""
    b, c_out, h, w = gy.shape
    _, c_in, kh, kw = weight.shape
    g = gy.permute(0, 2, 3, 1).reshape(b, h * w, c_out)  # a view for channels-last ``gy``
    cols = torch.matmul(weight.reshape(c_out, -1).t(), g.transpose(1, 2)).view(b, c_in, kh, kw, h, w)
    out = gy.new_zeros(b, c_in, h + kh - 1, w + kw - 1)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i : i + h, j : j + w] += cols[:, :, i, j]
    return out


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
