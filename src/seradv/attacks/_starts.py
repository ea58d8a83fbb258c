"""Starting points of the decision-based attacks (Boundary, HopSkipJump), both backends.

These attacks walk from a misclassified start towards the clean sample. ART draws starts from an
unseeded RNG; seradv draws them seeded (:func:`random_adversarial_init` for ART,
:func:`random_adversarial_start` for the torch backends), falls back to the nearest sample of
another predicted class, then to noise blends (:func:`fallback_starts`), and marks samples
without a start as not attacked (:func:`mark_starts`). :func:`run_from_random_start` and
:func:`run_from_random_start_torch` run an attack from such starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from seradv.attacks._art import black_box_classifier, make_predict_fn
from seradv.attacks._torch import QUERY_ROWS, predict_classes, query_rows
from seradv.attacks.context import AttackContext, QueryCounter

logger = logging.getLogger(__name__)

__all__ = [
    "BLEND_DRAWS",
    "BLEND_STEPS",
    "INIT_CHUNK",
    "START_BLEND",
    "START_NONE",
    "START_SAMPLE",
    "fallback_rng",
    "fallback_starts",
    "mark_starts",
    "random_adversarial_init",
    "random_adversarial_start",
    "run_from_random_start",
    "run_from_random_start_torch",
    "warn_start_sources",
]


# --------------------------------------------------------------------------------------
# Seeded uniform starts, fallbacks, flags
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# The torch backends' starts
# --------------------------------------------------------------------------------------
#: Uniform draws per sample and round of the random start (as random_adversarial_init).
INIT_CHUNK = 10


@torch.inference_mode()
def random_adversarial_start(
    model: nn.Module,
    x: torch.Tensor,
    preds: torch.Tensor,
    *,
    init_size: int,
    clip: tuple[float, float],
    generator: torch.Generator,
    counter: QueryCounter | None = None,
    max_rows: int = QUERY_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched version of ART's (and seradv's seeded) search for a misclassified start.

    Up to ``init_size`` uniform draws in the clip box per sample, ``INIT_CHUNK`` per sample and
    round, all samples still searching in one forward pass; each keeps its first draw whose
    predicted class differs from ``preds``. Returns ``(x_init, found)``; ``x_init`` is the
    clean sample where none was found.
    """
    lo, hi = clip
    x_init, found = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    drawn = 0
    while drawn < init_size:
        todo = (~found).nonzero()[:, 0]
        if todo.numel() == 0:
            break
        k = min(INIT_CHUNK, init_size - drawn)
        u = torch.rand((todo.numel(), k, *x.shape[1:]), generator=generator).to(x.device)
        cand = (lo + (hi - lo) * u).to(torch.float32)
        hit = predict_classes(model, cand.flatten(0, 1), counter, max_rows).view(-1, k) != preds[todo, None]
        drawn += k
        ok = hit.any(1)
        first = hit.to(torch.int8).argmax(1)
        x_init[todo[ok]] = cand[ok, first[ok]]
        found[todo[ok]] = True
    return x_init, found



def run_from_random_start_torch(ctx: AttackContext, init_size: int, attack: Callable[..., torch.Tensor]
                                ) -> np.ndarray:
    """Run a decision-based torch attack (Boundary, HopSkipJump) from seeded misclassified starts
    (the torch twin of :func:`run_from_random_start`).

    The predictions of all samples; per batch :func:`random_adversarial_start`, then, for the
    samples uniform noise gave no start, :func:`fallback_starts` (the
    nearest sample of ``ctx.x`` predicted as another class, else a noise blend), then
    ``attack(x, x_init, preds, generator=, max_rows=)`` on the samples that have a start; the
    others come back unchanged, marked not attacked (one warning). Uniform noise from one
    generator seeded with ``ctx.seed`` (the fallback's blends from their own seeded stream);
    :func:`query_rows` rows per forward pass; every query counted.
    """
    gen = torch.Generator().manual_seed(ctx.seed)
    rng = fallback_rng(ctx.seed)
    rows = query_rows(ctx.device)
    clip = ctx.clip.as_tuple()
    with torch.inference_mode():
        preds_all = predict_classes(ctx.model, torch.from_numpy(ctx.x).to(ctx.device), ctx.counter, rows)
    preds_np = preds_all.cpu().numpy()
    found_all = np.zeros(ctx.n, dtype=bool)
    sources: list[np.ndarray] = []
    offset = 0

    def predict_labels(arr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return predict_classes(ctx.model, torch.from_numpy(arr).to(ctx.device), ctx.counter, rows).cpu().numpy()

    def one_batch(xb: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        nonlocal offset
        b = xb.shape[0]
        preds = preds_all[offset : offset + b]
        x_init, found = random_adversarial_start(ctx.model, xb, preds, init_size=init_size, clip=clip,
                                                 generator=gen, counter=ctx.counter, max_rows=rows)
        missing = (~found).nonzero()[:, 0]
        if missing.numel():
            starts, source = fallback_starts(ctx.x, preds_np, offset + missing.cpu().numpy(), predict_labels,
                                             clip=clip, rng=rng)
            ok = torch.from_numpy(source > 0).to(xb.device)
            x_init[missing[ok]] = torch.from_numpy(starts[source > 0]).to(xb.device)
            found[missing[ok]] = True
            sources.append(source)
        found_all[offset : offset + b] = found.cpu().numpy()
        offset += b
        adv = xb.clone()
        idx = found.nonzero()[:, 0]
        if idx.numel():
            adv[idx] = attack(xb[idx], x_init[idx], preds[idx], generator=gen, max_rows=rows)
        return adv

    with torch.inference_mode():
        out = ctx.map_batches(one_batch)
    mark_starts(ctx, preds_np, found_all)
    if sources:
        warn_start_sources(init_size, np.concatenate(sources), ctx.n)
    return out

