"""Adapters between seradv models and ART 1.20.1 estimators (the reference backend).

White-box attacks get a :class:`SeradvPyTorchClassifier`, a thin subclass of ART's
``PyTorchClassifier`` that

* counts forward samples and input gradients (:class:`~seradv.attacks.context.QueryCounter`);
* takes gradients with the model in **eval mode**. ART, for any model containing an RNN,
  switches the whole model to train mode and then freezes ``nn.Dropout``/batch-norm modules
  (``is_rnn`` branch of ``loss_gradient``/``class_gradient``) because cuDNN cannot
  backpropagate an RNN in eval mode. That leaves an ``nn.LSTM(num_layers>1, dropout>0)``
  stochastic; seradv sets ``is_rnn = False`` (plain eval mode) and disables cuDNN around the
  backward pass on CUDA instead (:func:`~seradv.attacks.context.gradient_context`);
* optionally differentiates softmax probabilities instead of logits (``output=
  "probabilities"``): the study's Keras model ends in ``Dense(5, softmax)`` and ART's
  ``KerasClassifier`` differentiates that output, so the study's DeepFool, JSMA and C&W saw
  probabilities, not logits.

Black-box attacks get a :class:`GradientFreeClassifier`: ART's
``BlackBoxClassifierNeuralNetwork`` around a predict function that casts queries to float32,
runs the model under ``torch.inference_mode()`` and returns softmax scores. Its
``loss_gradient``/``class_gradient`` raise :class:`~seradv.errors.AttackError`; the model itself
is never handed to ART.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from art.estimators.classification.blackbox import BlackBoxClassifierNeuralNetwork
from torch import nn

from seradv.attacks._torch import OUTPUTS, as_output, batched_outputs
from seradv.attacks.context import AttackContext, QueryCounter, gradient_context
from seradv.errors import AttackError


class ProbabilityModel(nn.Module):
    """``softmax(model(x))``: the model seen as a probability output (the study's Keras head)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[shape=(batch, n_classes)]``."""
        return torch.softmax(self.model(x), dim=-1)


class ProbabilityNLLLoss(nn.NLLLoss):
    """Cross-entropy on probability outputs: ``nll(log(p))`` (an ``NLLLoss``, so ART passes indices)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.log(input.clamp_min(1e-12)), target)


class SeradvPyTorchClassifier(PyTorchClassifier):
    """ART ``PyTorchClassifier`` with eval-mode gradients and work counters (see module doc)."""

    def __init__(self, *args: Any, counter: QueryCounter, torch_device: torch.device, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._seradv_counter = counter
        self._seradv_device = torch_device
        # Gradients in plain eval mode; see the module docstring.
        self.is_rnn = False

    def predict(self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs: Any):
        self._seradv_counter.n_queries += int(x.shape[0])
        return super().predict(
            np.asarray(x, dtype=np.float32), batch_size=batch_size, training_mode=False, **kwargs
        )

    def class_gradient(self, x: np.ndarray, label: Any = None, training_mode: bool = False, **kwargs: Any):
        per = self.nb_classes if label is None else 1
        self._seradv_counter.n_grads += int(x.shape[0]) * per
        with gradient_context(self._seradv_device):
            return super().class_gradient(
                np.asarray(x, dtype=np.float32), label=label, training_mode=False, **kwargs
            )

    def loss_gradient(self, x: Any, y: Any, training_mode: bool = False, **kwargs: Any):
        self._seradv_counter.n_grads += int(x.shape[0])
        if isinstance(x, np.ndarray):
            x = np.asarray(x, dtype=np.float32)
        with gradient_context(self._seradv_device):
            return super().loss_gradient(x, y, training_mode=False, **kwargs)


def white_box_classifier(
    ctx: AttackContext,
    *,
    output: str = "logits",
    input_shape: tuple[int, ...] | None = None,
) -> SeradvPyTorchClassifier:
    """ART estimator for a white-box attack.

    Parameters
    ----------
    ctx : AttackContext
    output : {"logits", "probabilities"}
        What ``predict``/``class_gradient`` return: the model's logits, or softmax
        probabilities as in the study's Keras model. Loss gradients (FGSM/BIM/PGD) are the
        same cross-entropy either way.
    input_shape : tuple or None
        Per-sample shape ART sees; default ``ctx.input_shape``.
    """
    if output not in OUTPUTS:
        raise AttackError(f"output={output!r} must be one of {OUTPUTS}")
    if output == "probabilities":
        model: nn.Module = ProbabilityModel(ctx.model)
        loss: nn.Module = ProbabilityNLLLoss()
    else:
        model, loss = ctx.model, nn.CrossEntropyLoss()
    return SeradvPyTorchClassifier(
        model=model,
        loss=loss,
        input_shape=input_shape or ctx.input_shape,
        nb_classes=ctx.n_classes,
        clip_values=ctx.clip.as_tuple(),
        channels_first=True,
        device_type="gpu" if ctx.device.type == "cuda" else "cpu",
        counter=ctx.counter,
        torch_device=ctx.device,
    )


class GradientFreeClassifier(BlackBoxClassifierNeuralNetwork):
    """ART black-box estimator that only holds a predict function; gradients raise."""

    def loss_gradient(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> np.ndarray:
        raise AttackError("a black-box attack asked for loss gradients; it must only query predictions")

    def class_gradient(self, x: np.ndarray, label: Any = None, **kwargs: Any) -> np.ndarray:
        raise AttackError("a black-box attack asked for class gradients; it must only query predictions")


def make_predict_fn(ctx: AttackContext, *, output: str = "probabilities") -> Callable[[np.ndarray], np.ndarray]:
    """Query function ``(m, *any shape with ctx's cell count) -> (m, n_classes)`` float32.

    Queries are cast to float32 (ART's BoundaryAttack produces float64 arrays under NumPy 2
    promotion rules, which a float32 torch model rejects), reshaped to the model's per-sample
    shape (e.g. from ART's ``(1, 261, 128)`` image shape), batched by ``ctx.batch_size`` and run
    under ``torch.inference_mode()``; every queried sample is counted.
    """
    if output not in OUTPUTS:
        raise AttackError(f"output={output!r} must be one of {OUTPUTS}")
    model, device, shape, bs = ctx.model, ctx.device, ctx.input_shape, ctx.batch_size
    counter = ctx.counter

    def predict_fn(batch: np.ndarray) -> np.ndarray:
        arr = np.ascontiguousarray(batch, dtype=np.float32).reshape((-1, *shape))
        counter.n_queries += int(arr.shape[0])
        return batched_outputs(model, arr, device, bs, lambda z: as_output(z, output)).float().numpy()

    return predict_fn


def black_box_classifier(
    ctx: AttackContext, *, input_shape: tuple[int, ...] | None = None, output: str = "probabilities"
) -> GradientFreeClassifier:
    """ART estimator for a black-box attack; ``input_shape`` e.g. ``(1, 261, 128)`` for image attacks."""
    return GradientFreeClassifier(
        predict_fn=make_predict_fn(ctx, output=output),
        input_shape=input_shape or ctx.input_shape,
        nb_classes=ctx.n_classes,
        channels_first=True,
        clip_values=ctx.clip.as_tuple(),
    )
