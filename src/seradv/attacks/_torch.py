"""Torch helpers several attacks share (no attack module imports a sibling's internals).

* batched outputs of a model on a NumPy array (:func:`batched_outputs`, :func:`predict_labels`):
  the one batched prediction of :mod:`seradv.attacks` (run_attack's labels, ``metrics.predict``,
  the ART predict function, DeepFool's top classes);
* the differentiated output of the white-box attacks (:data:`OUTPUT_PARAM`, :func:`model_output`,
  :func:`forward_with_graph`, :func:`refit_rows`): DeepFool, JSMA, C&W;
* C&W's tanh space, margin and Adam (:func:`to_tanh`, :func:`from_tanh`, :func:`margin`,
  :func:`adam_pass`, :class:`Adam`), shared parameters and batching (:data:`CW_PARAMS`,
  :func:`cw_batched`, :func:`warn_if_inert`): C&W L2 and C&W L-inf;
* chunked class queries of the black-box torch backends (:func:`predict_classes`,
  :func:`query_rows`): Boundary, HopSkipJump, Pixel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from seradv.attacks.context import AttackContext, QueryCounter, map_batches_watched
from seradv.attacks.spec import ParamSpec

__all__ = [
    "CPU_QUERY_ROWS",
    "CW_PARAMS",
    "OUTPUTS",
    "OUTPUT_PARAM",
    "QUERY_ROWS",
    "TANH_SMOOTHER",
    "Adam",
    "adam_pass",
    "as_output",
    "batched_outputs",
    "cw_batched",
    "forward_with_graph",
    "from_tanh",
    "margin",
    "model_output",
    "predict_classes",
    "predict_labels",
    "query_rows",
    "refit_rows",
    "to_tanh",
    "warn_if_inert",
]


# --------------------------------------------------------------------------------------
# Batched outputs
# --------------------------------------------------------------------------------------
def batched_outputs(
    model: nn.Module,
    x: np.ndarray,
    device: torch.device,
    batch_size: int,
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``fn(model(x_batch))`` of every ``batch_size`` slice of ``x`` under inference mode, on the CPU.

    Parameters
    ----------
    model : nn.Module
        On ``device``; its train/eval flags are the caller's business.
    x : np.ndarray ``[shape=(n, *input_shape)]`` float32, contiguous, ``n >= 1``
    fn : callable
        Maps the logits of a batch ``[shape=(b, n_classes)]`` to what is kept (rows first).

    Returns
    -------
    Tensor ``[shape=(n, ...)]``: the batches' ``fn`` outputs, concatenated.
    """
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(fn(model(torch.from_numpy(x[i : i + batch_size]).to(device))).cpu())
    return torch.cat(outs)


def predict_labels(model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int) -> np.ndarray:
    """Predicted class (argmax of the logits) of every sample ``[shape=(n,)]`` int64."""
    return batched_outputs(model, x, device, batch_size, lambda z: z.argmax(1)).numpy().astype(np.int64)


# --------------------------------------------------------------------------------------
# What the white-box attacks differentiate
# --------------------------------------------------------------------------------------
#: The outputs a white-box attack may differentiate: the logits or the softmax probabilities
#: (the study's Keras model ends in a softmax, and ART differentiated that).
OUTPUTS = ("logits", "probabilities")

OUTPUT_PARAM = ParamSpec(
    "output", str, "logits", choices=OUTPUTS,
    doc="differentiate logits (default: the attack as designed) or softmax probabilities",
)

#: Assumed cost of one backward pass relative to one forward pass of the model, used only to
#: decide whether re-running the forward pass on the still-active rows is cheaper than
#: back-propagating through rows that just finished (the numbers are the same either way).
_BACKWARD_OVER_FORWARD = 2.0


def as_output(z: torch.Tensor, output: str) -> torch.Tensor:
    """Logits ``z`` as they are (``"logits"``) or their softmax (``"probabilities"``) ``[shape=(b, C)]``."""
    return torch.softmax(z, dim=-1) if output == "probabilities" else z


def model_output(model: nn.Module, x: torch.Tensor, output: str) -> torch.Tensor:
    """``model(x)`` (``"logits"``) or ``softmax(model(x))`` (``"probabilities"``) ``[shape=(b, C)]``.

    The same output :func:`~seradv.attacks._art.white_box_classifier` hands to ART.
    """
    return as_output(model(x), output)


def refit_rows(m: int, m_keep: int, n_backward: int) -> bool:
    """Whether a fresh forward pass on ``m_keep`` of ``m`` rows beats back-propagating all ``m``.

    ``n_backward`` backward passes follow the forward pass (classes of a Jacobian). A graph of
    ``m`` rows costs ``m * (1 + n_backward * r)`` forward units to differentiate (``r`` =
    backward / forward cost); dropping rows costs the extra forward ``m`` but saves
    ``(m - m_keep) * (1 + n_backward * r)``.
    """
    return (m - m_keep) * (1.0 + n_backward * _BACKWARD_OVER_FORWARD) > m


def forward_with_graph(
    model: nn.Module, x: torch.Tensor, output: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leaf copy of ``x`` that requires grad, and :func:`model_output` on it with its graph."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        return xg, model_output(model, xg, output)


# --------------------------------------------------------------------------------------
# C&W: tanh space, margin, Adam
# --------------------------------------------------------------------------------------
#: ART's ``_tanh_smoother``: ``arctanh`` of ``(2u - 1) * 0.999999`` so the box edges stay finite.
TANH_SMOOTHER = 0.999999
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


def to_tanh(x: torch.Tensor, clip: tuple[float, float]) -> torch.Tensor:
    """ART's ``original_to_tanh``: ``arctanh((2 (x - lo) / (hi - lo) - 1) * 0.999999)``."""
    lo, hi = clip
    u = (x.clamp(lo, hi) - lo) / (hi - lo)
    return torch.atanh((u * 2 - 1) * TANH_SMOOTHER)


def from_tanh(w: torch.Tensor, clip: tuple[float, float]) -> torch.Tensor:
    """ART's ``tanh_to_original``: ``(tanh(w) + 1) / 2 * (hi - lo) + lo`` (always inside the box)."""
    lo, hi = clip
    return (torch.tanh(w) + 1.0) / 2.0 * (hi - lo) + lo


def margin(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``Z_y - max_{k != y} Z_k`` per row ``[shape=(b,)]`` (ART's ``z_target - z_other``)."""
    z_y = z.gather(1, y[:, None])[:, 0]
    z_other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - z_other


def adam_pass(model: nn.Module, wl: torch.Tensor, clip: tuple[float, float], output: str,
              counter: QueryCounter, objective: Any | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One pass of a tanh-space Adam run at ``w`` rows ``wl``: ``(x_adv, Z, grad)``, detached.

    ``objective(x_adv, Z) -> [shape=(m,)]``: forward+backward, ``grad`` = its gradient w.r.t.
    ``wl`` (``n_grads += m``). ``objective=None`` (a run's last iterate): a forward pass
    without a graph, ``grad`` None (``n_queries += m``).
    """
    m = wl.shape[0]
    if objective is None:
        with torch.inference_mode():
            xa = from_tanh(wl, clip)
            z = model_output(model, xa, output)
        counter.n_queries += m
        return xa.clone(), z.clone(), None  # clones: normal tensors, usable outside inference mode
    wl = wl.detach().requires_grad_(True)
    with torch.enable_grad():
        xa = from_tanh(wl, clip)
        z = model_output(model, xa, output)
        (grad,) = torch.autograd.grad(objective(xa, z).sum(), wl)
    counter.n_grads += m
    return xa.detach(), z.detach(), grad


class Adam:
    """Adam on rows of a batch (ART's ``art.optimizers.Adam`` = torch's rule, no weight decay).

    All rows share the step count (they start together); ``rows`` selects the rows updated.
    """

    def __init__(self, w: torch.Tensor, lr: float) -> None:
        self.m = torch.zeros_like(w)
        self.v = torch.zeros_like(w)
        self.lr = lr
        self.t = 0

    def step(self, w: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> None:
        b1, b2 = _ADAM_BETAS
        self.t += 1
        m = self.m[rows].mul_(b1).add_(grad, alpha=1 - b1)
        v = self.v[rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.m[rows], self.v[rows] = m, v
        m_hat = m / (1 - b1**self.t)
        v_hat = v / (1 - b2**self.t)
        w[rows] = w[rows] - self.lr * m_hat / (v_hat.sqrt() + _ADAM_EPS)


def warn_if_inert(name: str, ctx: AttackContext, x_adv: np.ndarray) -> None:
    """Warn (logger ``seradv.attacks.<name>``) where a C&W attack changed no sample at all."""
    changed = np.abs(x_adv - ctx.x).reshape(ctx.n, -1).max(axis=1) > 0
    if not changed.any():
        logging.getLogger(f"seradv.attacks.{name}").warning(
            "%s changed no sample at all (ART returns the clean input where it found no adversarial "
            "example): raise binary_search_steps / max_iter / initial_const / learning_rate",
            name,
        )


#: The parameters C&W L2 and C&W L-inf share (each adds its own).
CW_PARAMS = (
    ParamSpec("confidence", float, 0.0, low=0.0, doc="required logit margin (kappa)"),
    ParamSpec("learning_rate", float, 0.01, low=0.0, low_open=True, doc="initial step size"),
    ParamSpec("max_iter", int, 10, low=1, doc="optimisation steps per constant"),
)


def cw_batched(ctx: AttackContext, fn: Any, **kw: Any) -> np.ndarray:
    """A C&W batch function ``fn(model, x, y, clip=, counter=, early_stop=, watch=, **kw)`` on
    every batch of ``ctx`` (:func:`~seradv.attacks.context.map_batches_watched`)."""
    return map_batches_watched(ctx, lambda xb, yb, watch: fn(
        ctx.model, xb, yb, clip=ctx.clip.as_tuple(), counter=ctx.counter, early_stop=ctx.early_stop,
        watch=watch, **kw))


# --------------------------------------------------------------------------------------
# Class queries of the black-box torch backends
# --------------------------------------------------------------------------------------
#: Most query rows per forward pass of the black-box torch backends (a memory bound: 1,024
#: inputs of (261, 128) float32 are 137 MB; the CNN-LSTM's first convolution holds ~16x that).
QUERY_ROWS = 1024
#: The same on the CPU, where a smaller pass is cheaper per row (it stays in cache; the EmoDB
#: CNN-LSTM's forward took 3.3 / 3.5 / 3.9 / 4.2 / 5.1 ms per input at 32 / 64 / 128 / 256 /
#: 1,024 rows, one thread, 2026-11-27).
CPU_QUERY_ROWS = 64


def query_rows(device: torch.device) -> int:
    """Rows per forward pass of the decision-based attacks' queries on ``device``."""
    return CPU_QUERY_ROWS if torch.device(device).type == "cpu" else QUERY_ROWS


def predict_classes(model: nn.Module, xs: torch.Tensor, counter: QueryCounter | None, max_rows: int
                    ) -> torch.Tensor:
    """Predicted class (argmax of the softmax, as ART's predict function) of ``xs``, chunked."""
    out = torch.empty(xs.shape[0], dtype=torch.int64, device=xs.device)
    for s in range(0, xs.shape[0], max_rows):
        e = min(s + max_rows, xs.shape[0])
        out[s:e] = torch.softmax(model(xs[s:e]), -1).argmax(1)
        if counter is not None:
            counter.n_queries += e - s
    return out
