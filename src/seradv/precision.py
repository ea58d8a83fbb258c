"""Numerical precision of the model's forward passes: ``fp32`` (the study's), ``bf16`` or ``fp16``
under ``torch.autocast``, for training, evaluation and the torch attack backends.

The rule of what runs in which dtype:

* inside :func:`autocast` the *model* runs: autocast casts its convolutions, matmuls and LSTM to
  the low-precision dtype (:mod:`seradv.models.fast_paths` runs its paths in it; the input-only
  convolution backward returns the input gradient in float32);
* everything after the model runs in float32: :class:`AutocastModel` returns the logits cast
  with ``.float()``, so the losses, softmax / log-softmax of the attack objectives, C&W's tanh
  space and margins, Boundary's and HopSkipJump's ratios, the optimisers' steps and the
  perturbations are float32 as under ``fp32``; inputs and gradients w.r.t. them are float32;
* ``fp32`` is no autocast at all: :func:`with_precision` returns the model itself, the same
  numbers bit for bit as before precision existed.

Where it can run: ``bf16`` on CPUs with AVX-512 (fast with AVX-512 bf16 / AMX, emulated
otherwise; on an AVX2-only CPU oneDNN cannot build its bf16 LSTM for every shape, so it is a
one-line error there: :func:`cpu_bf16_supported`) and on CUDA devices that support it; ``fp16`` on CUDA only (the CPU's fp16 autocast runs the linear
layers, but oneDNN's LSTM has no fp16 kernel on CPUs without AVX-512 fp16: "could not create
a primitive descriptor for the LSTM forward propagation primitive", torch 2.13, AMD EPYC);
fp16 training scales its loss (:func:`grad_scaler`). Only the torch attack backends take a
precision: ART's estimators run the model in float32 (:func:`check_backend`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seradv.config import PRECISION_NAMES
from seradv.errors import ParameterError

__all__ = [
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "AutocastModel",
    "autocast",
    "check_backend",
    "check_precision",
    "cpu_bf16_supported",
    "grad_scaler",
    "precision_dtype",
    "to_float",
    "with_precision",
]

PRECISIONS: dict[str, torch.dtype | None] = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16)))
"""Precision name (:data:`seradv.config.PRECISION_NAMES`) -> autocast dtype (``None``: no
autocast, float32 throughout)."""

DEFAULT_PRECISION = "fp32"
"""The study's precision, the default of every stage (docs/benchmarks.md, "Precision")."""


def check_precision(precision: Any, key: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line :class:`ParameterError`
    naming ``key`` (``"--precision"``, ``"train.precision"``...)."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ParameterError(f"{key}={precision!r} must be one of {', '.join(PRECISIONS)}")
    return precision


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bfloat16 on this CPU (AVX-512 or AMX; ``False`` on an AVX2-only CPU,
    where its bf16 LSTM primitive cannot be built for every shape). ``True`` where torch cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def precision_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None`` for fp32), or a one-line
    :class:`ParameterError` where that device cannot run it (module docstring)."""
    dtype = PRECISIONS[check_precision(precision)]
    kind = torch.device(device).type
    if dtype is None:
        return None
    if kind not in ("cpu", "cuda"):
        raise ParameterError(f"precision={precision!r} needs a cpu or cuda device, got {kind!r}; use fp32")
    if kind == "cpu" and dtype == torch.float16:
        raise ParameterError("precision='fp16' is not supported on the CPU (oneDNN has no fp16 LSTM kernel "
                             "on most CPUs); use bf16 on the CPU, fp16 on CUDA")
    if kind == "cpu" and dtype == torch.bfloat16 and not cpu_bf16_supported():
        raise ParameterError("precision='bf16' needs a CPU with AVX-512 or AMX; this one has neither "
                             f"({torch.backends.cpu.get_cpu_capability()}: oneDNN has no bf16 LSTM here, and "
                             "emulated bf16 ran 0.3x fp32); use fp32")
    if kind == "cuda" and dtype == torch.bfloat16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ParameterError("precision='bf16': this CUDA device does not support bfloat16; use fp16 or fp32")
    return dtype


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` of ``precision`` on ``device``'s type; ``fp32``: a null context."""
    dtype = precision_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def to_float(out: Any) -> Any:
    """``out`` with every floating tensor (also inside tuples, lists, dicts) cast to float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, (tuple, list)):
        return type(out)(to_float(o) for o in out)
    if isinstance(out, dict):
        return {k: to_float(v) for k, v in out.items()}
    return out


class AutocastModel(nn.Module):
    """``model`` run under :func:`autocast`, its outputs cast to float32 (:func:`to_float`).

    The model is a submodule (``inner``): parameters, modes, ``.to`` and ``state_dict`` (keys
    prefixed ``inner.``) are its own. Other attributes are the model's; its methods (e.g. the
    chunked-model protocol's ``encode_chunks`` / ``decode_chunks``) run under the same autocast
    and return float32.
    """

    def __init__(self, model: nn.Module, precision: str, device: str | torch.device) -> None:
        super().__init__()
        self.dtype = precision_dtype(precision, device)  # a device that cannot run it: an error now
        self.inner = model
        self.precision = precision
        self.device_type = torch.device(device).type
        self.train(model.training)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self._autocast():
            out = self.inner(*args, **kwargs)
        return to_float(out)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        inner = self.__dict__.get("_modules", {}).get("inner")
        if inner is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        attr = getattr(inner, name)
        if callable(attr) and not isinstance(attr, (nn.Module, type)):
            return self._autocast_call(attr)
        return attr

    def _autocast_call(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._autocast():
                out = fn(*args, **kwargs)
            return to_float(out)

        return call


def with_precision(model: nn.Module, precision: str, device: str | torch.device) -> nn.Module:
    """``model`` itself for ``fp32``; else an :class:`AutocastModel` of it (same parameters)."""
    if precision_dtype(precision, device) is None:
        return model
    return AutocastModel(model, precision, device)


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """The loss scaler of a training step: enabled for ``fp16`` only (bf16 has float32's range)."""
    dtype = precision_dtype(precision, device)
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)


def check_backend(precision: str, backend: str, attack: str = "") -> None:
    """A one-line :class:`ParameterError` unless ``precision`` is fp32 or ``backend`` is torch
    (ART's estimators run the model in float32; a precision there would be silently ignored)."""
    if check_precision(precision) != "fp32" and backend != "torch":
        who = f"{attack}: " if attack else ""
        raise ParameterError(f"{who}precision={precision!r} needs the torch backend (ART runs the model in "
                             f"float32); use --backend torch or --precision fp32")
