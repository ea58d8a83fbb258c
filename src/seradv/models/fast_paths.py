"""The CNN-LSTM's speed machinery: eval-mode ways to run its CNN with the declared layers'
numbers (bit for bit, or up to float round-off), and the one function that says which runs.

:func:`cnn_path` decides, for an input ``x``, which way :meth:`FastCNN.maps` runs the CNN:

* ``"declared"``: the model is in training mode: the layers as declared, each ``MaxPool2d`` on
  the CPU run on a channels-last copy of its input (:func:`run_declared`: the same values and
  gradients, bit for bit, ties included; 4x faster on the first pool's 16 x 25 x 124 maps).
* ``"onednn"``: eval mode, autograd off, a non-empty float32 CPU batch, oneDNN available and
  enabled, CPU autocast off (predictions, black-box queries): a oneDNN ("mkldnn") copy of the
  :func:`pool_first` layers, cached and rebuilt when a weight or a layer's mode changes.
* ``"input_grad"``: eval mode, a CPU input that requires grad, and the first convolution and
  max-pool (in :func:`pool_first` order) frozen -- no parameter requires grad, as while
  ``run_attack`` runs an attack -- with valid stride-1 geometry (:func:`conv_pool_input_only`):
  the convolution and pool differentiate the input only (:func:`conv2d_input_grad`), the rest
  runs in :func:`pool_first` order with channels-last maps.
* ``"pool_first"``: any other eval-mode input (white-box gradients with trainable weights,
  GPU, float64, CPU autocast): :func:`pool_first` order, channels-last maps after the first convolution on
  the CPU.

Under ``torch.autocast`` the paths run in the autocast dtype where
autocast casts (convolutions, matmuls); :class:`_ConvPoolInputGrad` casts its backward to the
output gradient's dtype and returns the input gradient in the input's dtype (float32).

Measured speed-ups: docs/benchmarks.md ("Model speed-ups", ``benchmarks/model_speed.py``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

with warnings.catch_warnings():  # torch.utils.mkldnn defines its modules with torch.jit.script_method
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch.utils import mkldnn as _mkldnn

__all__ = ["CNN_PATHS", "FastCNN", "cnn_path", "conv2d_input_grad", "conv_pool_input_only", "pool_first",
           "run_declared"]

DECLARED, ONEDNN, INPUT_GRAD, POOL_FIRST = "declared", "onednn", "input_grad", "pool_first"
CNN_PATHS = (DECLARED, ONEDNN, INPUT_GRAD, POOL_FIRST)
"""The ways :meth:`FastCNN.maps` runs a CNN (module docstring)."""


def cnn_path(x: torch.Tensor, *, training: bool, eval_layers: Callable[[], Sequence[nn.Module]]) -> str:
    """Which of :data:`CNN_PATHS` runs the CNN on ``x`` (module docstring): the one place where
    the fast paths' conditions are checked.

    ``training`` is the model's mode; ``eval_layers()`` gives the CNN's layers in
    :func:`pool_first` order (asked for only when the input-gradient path is possible).
    """
    if training:
        return DECLARED
    if (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and x.shape[0]
            and not torch.is_autocast_enabled("cpu")):
        return ONEDNN
    if x.device.type == "cpu" and x.requires_grad and conv_pool_input_only(eval_layers()[:2]):
        return INPUT_GRAD
    return POOL_FIRST


class FastCNN:
    """The fast paths of one model's CNN, with their caches.

    ``cnn`` (passed to every method) is the model's ``nn.Sequential`` CNN ending in a
    ``Flatten``; the maps are those of the layers before it. A plain object, not a submodule
    (no ``state_dict`` entry); a deep copy or an unpickled copy starts with empty caches
    (oneDNN tensors can be neither deep-copied nor pickled; both caches are rebuilt on demand).
    """

    def __init__(self) -> None:
        self._caches: dict[str, tuple[Any, Any]] = {}

    def __deepcopy__(self, memo: dict) -> FastCNN:
        return type(self)()

    def __getstate__(self) -> dict:
        """Pickled (e.g. a model sent to a Ray worker) without its caches: oneDNN tensors cannot
        be pickled, and the caches are rebuilt on demand."""
        return {}

    def __setstate__(self, state: dict) -> None:
        self._caches = {}

    def maps(self, cnn: nn.Sequential, x: torch.Tensor, *, training: bool) -> torch.Tensor:
        """CNN feature maps ``[shape=(m, 64, 1, w)]`` of inputs ``[shape=(m, 1, chunk, w_in)]``,
        the way :func:`cnn_path` picks."""
        path = cnn_path(x, training=training, eval_layers=lambda: self.eval_layers(cnn))
        if path == DECLARED:
            return run_declared(list(cnn[:-1]), x)
        if path == ONEDNN:
            return self.onednn_cnn(cnn)(x.contiguous().to_mkldnn()).to_dense()
        return run_pool_first(self.eval_layers(cnn), x, input_grad=path == INPUT_GRAD)

    def eval_layers(self, cnn: nn.Sequential) -> list[nn.Module]:
        """The CNN's layers (no Flatten) in :func:`pool_first` order (the model's own modules)."""
        return self._cached(cnn, "pool_first", lambda: pool_first(list(cnn[:-1])))

    def onednn_cnn(self, cnn: nn.Sequential) -> nn.Module:
        """oneDNN copy of :meth:`eval_layers`."""
        return self._cached(cnn, "onednn", lambda: _mkldnn.to_mkldnn(
            nn.Sequential(*copy.deepcopy(self.eval_layers(cnn)))).eval())

    def _cached(self, cnn: nn.Sequential, name: str, build: Callable[[], Any]) -> Any:
        """``build()``, kept until a parameter or buffer of ``cnn`` changes (storage or in-place
        version) or a layer's mode does."""
        tensors = [*cnn.parameters(), *cnn.buffers()]
        key = (tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for t in tensors),
               tuple(layer.training for layer in cnn))
        cached = self._caches.get(name)
        if cached is None or cached[0] != key:
            cached = (key, build())
            self._caches[name] = cached
        return cached[1]


def run_declared(layers: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``layers`` in order on ``x``, each ``MaxPool2d`` of a 4-D CPU tensor on a channels-last
    copy, its output contiguous again.

    PyTorch's channels-last CPU max-pool scans each window in the same order and keeps the
    first maximum, as the contiguous kernel does, so values, indices and gradients are
    identical (tests/models/test_fast_paths.py); it vectorizes over channels where the
    contiguous kernel loops over windows. The other layers see contiguous tensors and
    contiguous gradients (a channels-last gradient would change BatchNorm's backward
    summation order), so their algorithms (and numbers) are the declared ones.
    """
    h = x
    for layer in layers:
        if (isinstance(layer, nn.MaxPool2d) and h.device.type == "cpu" and h.ndim == 4
                and h.is_contiguous() and not layer.return_indices and not layer.ceil_mode):
            h = _ChannelsLastMaxPool.apply(h, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
        else:
            h = layer(h)
    return h


def _pair(v: Any) -> list[int]:
    """A pooling argument (an int or a pair) as ``[h, w]``."""
    return [v, v] if isinstance(v, int) else list(v)


def _pool_window(kernel: Any, stride: Any) -> tuple[list[int], list[int]]:
    """A max-pool's ``(kernel, stride)`` as ``[h, w]`` pairs, as ATen's pooling ops take them
    (no stride, or an empty one: the kernel's)."""
    k = _pair(kernel)
    return k, (k if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _pair(stride))


class _ChannelsLastMaxPool(torch.autograd.Function):
    """``max_pool2d`` of a contiguous CPU tensor, computed on a channels-last copy; output,
    indices and the backward are contiguous. The backward is PyTorch's own contiguous
    max-pool backward with those indices (the declared layer's, bit for bit)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kernel: Any, stride: Any, padding: Any, dilation: Any) -> torch.Tensor:
        y, idx = F.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last),
                                           kernel, stride, padding, dilation)
        idx = idx.contiguous()
        ctx.save_for_backward(idx)
        ctx.geometry = (tuple(x.shape), x.dtype, kernel, stride, padding, dilation)
        return y.contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (idx,) = ctx.saved_tensors
        shape, dtype, kernel, stride, padding, dilation = ctx.geometry
        k, s = _pool_window(kernel, stride)
        shell = gy.new_empty(shape, dtype=dtype)  # the input's shape and (contiguous) layout
        gx = torch.ops.aten.max_pool2d_with_indices_backward(
            gy.contiguous(), shell, k, s, _pair(padding), _pair(dilation), False, idx)
        return gx, None, None, None, None


def run_pool_first(layers: Sequence[nn.Module], x: torch.Tensor, *, input_grad: bool) -> torch.Tensor:
    """``layers`` (in :func:`pool_first` order) on ``x``, channels-last after the first
    convolution on the CPU; with ``input_grad`` the first convolution and pool run as
    :class:`_ConvPoolInputGrad` (only when :func:`conv_pool_input_only` holds)."""
    h, start = x, 0
    if input_grad:
        conv, pool = layers[0], layers[1]
        h, start = _ConvPoolInputGrad.apply(x, conv.weight, conv.bias, pool.kernel_size, pool.stride), 2
    for i, layer in enumerate(layers[start:], start):
        h = layer(h)
        if i == 0 and h.device.type == "cpu":
            h = h.contiguous(memory_format=torch.channels_last)
    return h


def _bn_scale_positive(layer: nn.Module) -> bool:
    if not isinstance(layer, nn.BatchNorm2d) or layer.training or layer.running_var is None:
        return False
    weight = layer.weight if layer.affine else torch.ones_like(layer.running_var)
    return bool((weight > 0).all())


def pool_first(layers: list[nn.Module]) -> list[nn.Module]:
    """Eval-mode layers with every ``MaxPool2d`` moved before the ReLUs and positive-scale
    BatchNorms that precede it: the same outputs, bit for bit (a non-decreasing elementwise
    map commutes with a max, rounding included), on 4-6x fewer elements."""
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


def conv_pool_input_only(layers: list[nn.Module]) -> bool:
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
    H W]`` per sample) and ``k k`` shifted adds (col2im): a 1-channel input gradient (the
    CNN-LSTM's first convolution) is the worst case of oneDNN's and PyTorch's own backward.
    Same numbers up to float round-off (tests/models/test_fast_paths.py). Under autocast the
    forward's convolution runs in the autocast dtype; the backward (which may run outside the
    autocast region) multiplies in the output gradient's dtype and returns the input gradient
    in the input's dtype (tests/models/test_precision.py).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                kernel: Any, stride: Any) -> torch.Tensor:
        y = F.conv2d(x, weight, bias).contiguous(memory_format=torch.channels_last)
        z, idx = F.max_pool2d_with_indices(y, kernel, stride)
        ctx.save_for_backward(weight, idx)
        ctx.geometry = (tuple(y.shape), kernel, stride)
        ctx.x_dtype = x.dtype
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gz: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, idx = ctx.saved_tensors
        y_shape, kernel, stride = ctx.geometry
        k, s = _pool_window(kernel, stride)
        shell = gz.new_empty(y_shape).contiguous(memory_format=torch.channels_last)
        gy = torch.ops.aten.max_pool2d_with_indices_backward(
            gz.contiguous(memory_format=torch.channels_last), shell, k, s, [0, 0], [1, 1],
            False, idx)
        return conv2d_input_grad(gy, weight, out_dtype=ctx.x_dtype), None, None, None, None


def conv2d_input_grad(gy: torch.Tensor, weight: torch.Tensor, *,
                      out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Gradient w.r.t. the input of a valid, stride-1 ``conv2d`` with ``weight`` ``[shape=(C_out,
    C_in, kh, kw)]``, given the output gradient ``gy`` ``[shape=(b, C_out, H, W)]``
    (= ``torch.nn.grad.conv2d_input``): ``W^T g`` per sample, then col2im by ``kh kw`` shifted adds.

    The matmul runs in ``gy``'s dtype (``weight`` is cast to it: a bfloat16 ``gy`` from an
    autocast forward); the shifted adds accumulate in, and the result has, ``out_dtype``
    (default ``gy``'s dtype): ``[shape=(b, C_in, H + kh - 1, W + kw - 1)]``."""
    b, c_out, h, w = gy.shape
    _, c_in, kh, kw = weight.shape
    g = gy.permute(0, 2, 3, 1).reshape(b, h * w, c_out)  # a view for channels-last ``gy``
    w_t = weight.reshape(c_out, -1).t().to(gy.dtype)
    cols = torch.matmul(w_t, g.transpose(1, 2)).view(b, c_in, kh, kw, h, w)
    out_dtype = gy.dtype if out_dtype is None else out_dtype
    if cols.dtype != out_dtype:
        cols = cols.to(out_dtype)
    out = gy.new_zeros(b, c_in, h + kh - 1, w + kw - 1, dtype=out_dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i : i + h, j : j + w] += cols[:, :, i, j]
    return out
