"""Adapters between seradv models and ART 1.20.1 estimators (the reference backend).

White-box attacks get a :class:`SeradvPyTorchClassifier`, a thin subclass of ART's
``PyTorchClassifier`` that

* counts forward samples and input gradients (:class:`~seradv.attacks.base.QueryCounter`);
* takes gradients with the model in **eval mode**. ART, for any model containing an RNN,
  switches the whole model to train mode and then freezes ``nn.Dropout``/batch-norm modules
  (``is_rnn`` branch of ``loss_gradient``/``class_gradient``) because cuDNN cannot
  backpropagate an RNN in eval mode. That leaves an ``nn.LSTM(num_layers>1, dropout>0)``
  stochastic; seradv sets ``is_rnn = False`` (plain eval mode) and disables cuDNN around the
  backward pass on CUDA instead (:func:`~seradv.attacks.base.gradient_context`);
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

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from art.estimators.classification.blackbox import BlackBoxClassifierNeuralNetwork
from torch import nn

from seradv.attacks.base import AttackContext, QueryCounter, gradient_context
from seradv.errors import AttackError

logger = logging.getLogger(__name__)

OUTPUTS = ("logits", "probabilities")


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
        outs = []
        with torch.inference_mode():
            for i in range(0, arr.shape[0], bs):
                logits = model(torch.from_numpy(arr[i : i + bs]).to(device))
                outs.append(torch.softmax(logits, -1) if output == "probabilities" else logits)
        return torch.cat(outs).float().cpu().numpy()

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


def random_adversarial_init(
    ctx: AttackContext,
    predict_fn: Callable[[np.ndarray], np.ndarray],
    preds: np.ndarray,
    *,
    init_size: int,
    chunk: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded version of ART's initialisation of decision-based attacks.

    ART's BoundaryAttack and HopSkipJump draw up to ``init_size`` uniform images in the clip box
    per sample from an *unseeded* ``np.random.RandomState()`` and keep the first one whose
    predicted class differs from the sample's prediction. seradv draws them from
    ``np.random.default_rng(ctx.seed)`` (``chunk`` at a time) and hands them to ART as
    ``x_adv_init``, so runs are reproducible. Samples still without a start then get one from
    :func:`fallback_starts` where it finds one (another sample of a different predicted class,
    else a blend of the sample with noise; seradv's addition, so that fewer samples stay
    unattacked); one warning counts them.

    Parameters
    ----------
    ctx : AttackContext
    predict_fn : callable
        Scores ``(m, *input_shape) -> (m, n_classes)``.
    preds : np.ndarray ``[shape=(n,)]``
        Predicted class of each clean sample.
    init_size : int
        Draws per sample at most.

    Returns
    -------
    x_init : np.ndarray ``[shape=(n, *input_shape)]`` float32
        Starting points (the clean sample where none was found).
    found : np.ndarray ``[shape=(n,)]`` bool
    """
    rng = np.random.default_rng(ctx.seed)
    lo, hi = ctx.clip.as_tuple()
    x_init = ctx.x.copy()
    found = np.zeros(ctx.n, dtype=bool)
    for i in range(ctx.n):
        drawn = 0
        while drawn < init_size and not found[i]:
            k = min(chunk, init_size - drawn)
            cand = rng.uniform(lo, hi, size=(k, *ctx.input_shape)).astype(np.float32)
            hit = np.flatnonzero(np.argmax(predict_fn(cand), axis=1) != preds[i])
            drawn += k
            if hit.size:
                x_init[i] = cand[hit[0]]
                found[i] = True
    missing = np.flatnonzero(~found)
    if missing.size:
        starts, source = fallback_starts(
            ctx.x, preds, missing, lambda a: np.argmax(predict_fn(a), axis=1), clip=(lo, hi),
            rng=fallback_rng(ctx.seed))
        x_init[missing[source > 0]] = starts[source > 0]
        found[missing] = source > 0
        warn_start_sources(init_size, source, ctx.n)
    return x_init, found


#: Noise draws per sample, and blend strengths ``k / BLEND_STEPS`` (``k = 1 .. BLEND_STEPS - 1``),
#: of the last start search (:func:`fallback_starts`).
BLEND_DRAWS = 10
BLEND_STEPS = 20
#: :func:`fallback_starts` ``source`` codes.
START_NONE, START_SAMPLE, START_BLEND = 0, 1, 2


def fallback_rng(seed: int) -> np.random.Generator:
    """The seeded generator of :func:`fallback_starts` (its own stream: the uniform draws, and
    so every start they find, stay what they were without the fallback)."""
    return np.random.default_rng([seed, 0xB1E4D])


def fallback_starts(
    x: np.ndarray,
    preds: np.ndarray,
    rows: np.ndarray,
    predict_labels: Callable[[np.ndarray], np.ndarray],
    *,
    clip: tuple[float, float],
    rng: np.random.Generator,
    blend_draws: int = BLEND_DRAWS,
    blend_steps: int = BLEND_STEPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Adversarial starts for the samples ``rows`` of ``x`` that uniform noise did not give one.

    (a) The nearest (L2) other sample of ``x`` whose clean prediction differs from the
    sample's: adversarial by what is already known (no query; the usual "start from another
    class" of Foolbox's ``DatasetAttack`` / ART's targeted initialisation). (b) Where ``x``
    holds no other class: blends ``(1 - a) x_i + a u`` with ``blend_draws`` uniform noises
    ``u`` in the clip box at increasing strength ``a = 1/blend_steps, 2/blend_steps, ...``,
    the first adversarial one (Foolbox's ``LinearSearchBlendedUniformNoiseAttack``);
    ``blend_draws`` queries per strength, counted by ``predict_labels``' counter.

    Parameters
    ----------
    x : np.ndarray ``[shape=(n, *input_shape)]`` float32
    preds : np.ndarray ``[shape=(n,)]``
        Clean predictions of ``x`` (adversarial: a different predicted class).
    rows : np.ndarray ``[shape=(m,)]`` int
    predict_labels : callable
        ``(k, *input_shape) float32 -> (k,)`` predicted classes (a counted query).
    clip : (float, float)
    rng : np.random.Generator
        Seeded (:func:`fallback_rng`).

    Returns
    -------
    starts : np.ndarray ``[shape=(m, *input_shape)]`` float32
        The start per row (the clean sample where none was found).
    source : np.ndarray ``[shape=(m,)]`` int8
        ``START_SAMPLE``, ``START_BLEND`` or ``START_NONE``.
    """
    lo, hi = clip
    rows = np.asarray(rows, dtype=np.int64)
    starts = x[rows].copy()
    source = np.full(rows.size, START_NONE, dtype=np.int8)
    flat = x.reshape(x.shape[0], -1)
    for k, i in enumerate(rows):
        other = np.flatnonzero(preds != preds[i])
        if other.size:
            dist = np.concatenate([
                np.square(flat[other[s : s + 64]].astype(np.float64) - flat[i]).sum(1)
                for s in range(0, other.size, 64)])
            starts[k] = x[other[int(np.argmin(dist))]]
            source[k] = START_SAMPLE
    for k in np.flatnonzero(source == START_NONE):
        i = rows[k]
        u = rng.uniform(lo, hi, size=(blend_draws, *x.shape[1:])).astype(np.float32)
        for step in range(1, blend_steps):
            a = step / blend_steps
            cand = np.clip((1 - a) * x[i] + a * u, lo, hi).astype(np.float32)
            hit = np.flatnonzero(np.asarray(predict_labels(cand)) != preds[i])
            if hit.size:
                starts[k] = cand[hit[0]]
                source[k] = START_BLEND
                break
    return starts, source


def warn_start_sources(init_size: int, source: np.ndarray, n: int) -> None:
    """One warning for the samples uniform noise gave no start: how many the fallbacks
    started (from another sample / a blend) and how many stay clean (not attacked)."""
    logger.warning(
        "no adversarial starting point in %d uniform draws for %d of %d samples: %d start from "
        "the nearest sample of another class, %d from a noise blend, %d stay clean (not attacked)",
        init_size, source.size, n, int((source == START_SAMPLE).sum()), int((source == START_BLEND).sum()),
        int((source == START_NONE).sum()),
    )


def mark_starts(ctx: AttackContext, preds: np.ndarray, found: np.ndarray) -> None:
    """Robust-accuracy flags of a decision-based attack (Boundary, HopSkipJump).

    Samples without a start are not attacked (``ctx.mark_not_attacked``). A start is a point of
    the clip box (the only bound of these minimum-distance attacks) predicted unlike the clean
    sample, and so, where the clean prediction is the true label, misclassified: those samples
    are fooled (``ctx.mark_fooled``); every later iterate of the attack stays adversarial.
    """
    ctx.mark_not_attacked(np.flatnonzero(~found))
    ctx.mark_fooled(np.arange(ctx.n), found & (preds == ctx.y))


def run_from_random_start(
    ctx: AttackContext, init_size: int, make_attack: Callable[[Any], Any]
) -> np.ndarray:
    """Run a decision-based ART attack (Boundary, HopSkipJump) from seeded starting points.

    ``make_attack(classifier)`` builds the ART attack on the predict-only classifier. Samples
    for which no misclassified start was found (uniform draws, then :func:`fallback_starts`)
    come back unchanged and are marked not attacked (:func:`mark_starts`).
    """
    clf = black_box_classifier(ctx)
    predict_fn = make_predict_fn(ctx)
    preds = np.argmax(predict_fn(ctx.x), axis=1)
    x_init, found = random_adversarial_init(ctx, predict_fn, preds, init_size=init_size)
    mark_starts(ctx, preds, found)
    x_adv = ctx.x.copy()
    if found.any():
        x_adv[found] = make_attack(clf).generate(ctx.x[found], x_adv_init=x_init[found])
    return x_adv
