"""Pixel attack (study, black-box): set ``th`` cells to new values found by differential evolution.

Papers: Su, Vargas, Sakurai (2019), "One pixel attack for fooling deep neural networks",
https://arxiv.org/abs/1710.08864; Vargas, Kotyan (2019), "Robustness assessment for
adversarial machine learning: problems, solutions and a survey of current neural networks and
defenses", https://arxiv.org/abs/1906.06026.

Distance: L0 (``th`` changed time-Mel cells at most). Score-based black-box: it only sees the
softmax scores of candidate inputs (minimises the probability of the true class ``y``).

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` -> ``x_adv`` like ``x``.

Backend ``"art"``: ART 1.20.1 ``PixelAttack`` (``es=1``: differential evolution, as in the
study) on :class:`~seradv.attacks._art.GradientFreeClassifier` (a predict function only,
under ``torch.inference_mode()``). ART 1.20.1 quirks handled here:

* ``PixelAttack`` reads rows, columns and channels from a 3-D image shape; the estimator gets
  ``input_shape=(1, 261, 128)`` (channels first) and ``x`` is reshaped to ``(n, 1, 261, 128)``;
  the predict function reshapes queries back to the model's ``(261, 128)``.
* ART rescales inputs to ``[0, 255]`` and back (``(x - lo) / (hi - lo) * 255``), so new cell
  values are one of 256 levels ``lo + k (hi - lo) / 255`` and *unchanged* cells come back with
  float32 round-off (~1e-6). seradv restores cells that moved by less than ``1e-4`` to their
  exact clean value so that L0 counts only the attacked cells.
* The DE population is fixed by ART at ``max(1, 400 // (3 * th)) * 3 * th`` (about 400)
  candidates per generation, each one model query: ~400 * (``max_iter`` + 1) queries per sample
  unless it succeeds early. ART draws from NumPy's global RNG (seeded and restored by
  :func:`~seradv.attacks.base.run_attack`).

Measured speed (seradv benchmark, /tmp script, not in the repo): the study's CNN-LSTM
(3.96 M parameters, 4 classes) trained to saturation on synthetic band-offset features (loss
~0, so attacks that stop on success run their full course), ART backend, batch 16,
``torch.set_num_threads(2)`` on an otherwise idle 2-core CPU (load < 2); the same runs on the
machine loaded by other jobs (load 4-6) were 2-8x slower.
Pixel ``th 1, max_iter 20``: 0.028 samples/s (35 s per sample, 8,400 queries per sample, ~240
queries/s; no sample flipped on this saturated model, so no early stop); 0.004 samples/s on
the loaded machine.

Example
-------
>>> run_attack("pixel", model, x, y, {"th": 10, "max_iter": 20}, clip=(-5, 7))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
from art.attacks.evasion import PixelAttack

from seradv.attacks._art import black_box_classifier
from seradv.attacks.base import AttackContext, AttackSpec, ParamSpec, register_attack

__all__ = ["PIXEL", "ROUNDTRIP_TOL"]

#: Cells that moved less than this are ART's [0, 255] round-trip noise, not attacked cells.
ROUNDTRIP_TOL = 1e-4


def _pixel_art(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    shape3 = (1, *ctx.input_shape)
    clf = black_box_classifier(ctx, input_shape=shape3)
    atk = PixelAttack(clf, th=p["th"], es=1, max_iter=p["max_iter"], targeted=False, verbose=False)
    x4 = ctx.x.reshape((ctx.n, *shape3))
    x_adv = atk.generate(x4, y=ctx.y).reshape(ctx.x.shape).astype(np.float32)
    noise = np.abs(x_adv - ctx.x) < ROUNDTRIP_TOL
    x_adv[noise] = ctx.x[noise]
    return x_adv


PIXEL = register_attack(AttackSpec(
    name="pixel", family="pixel", kind="black-box", norm="l0",
    title="Pixel attack with differential evolution (Su et al. 2019; Vargas et al. 2019)",
    params=(
        ParamSpec("th", int, 1, low=1, high=1000, doc="number of cells the attack may set"),
        ParamSpec("max_iter", int, 20, low=1, doc="differential-evolution generations"),
    ),
    paper_grid=tuple({"th": t, "max_iter": 20} for t in (1, 5, 10)),
    quick_grid=({"th": 10, "max_iter": 1},),
    backends={"art": _pixel_art},
    notes="~400 queries per generation and sample; estimator shape (1, 261, 128)",
))
