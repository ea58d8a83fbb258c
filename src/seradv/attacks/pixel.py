"""Pixel attack (study, black-box, score-based): set ``th`` cells to values found by differential evolution.

Papers: Su, Vargas, Sakurai (2019), "One pixel attack for fooling deep neural networks",
https://arxiv.org/abs/1710.08864; Vargas, Kotyan (2019), "Robustness assessment for adversarial
machine learning: problems, solutions and a survey of current neural networks and defenses",
https://arxiv.org/abs/1906.06026.

Threat model: score-based black-box: only the softmax scores of candidate inputs are used (the
probability of the true class ``y`` is minimised; no gradients); untargeted. Distance: L0,
``th`` changed time-Mel cells at most, each set to one of 256 levels ``lo + k (hi - lo) / 255``
of the clip box (ART rescales inputs to ``[0, 255]``). ART's DE population is about 400
candidates per generation, each one query: ~400 * (``max_iter`` + 1) queries per sample unless
it succeeds early.

Parameters:

th : int, default 1
    Cells the attack may set (the study: 1, 5, 10).
max_iter : int, default 20
    Differential-evolution generations (the study: 20).

Shapes: ``x`` ``[shape=(n, 261, 128)]`` float32, ``y`` ``[shape=(n,)]`` int64 -> ``x_adv``
``[shape=(n, 261, 128)]`` float32.

Backends: ``"art"``: ART 1.20.1 ``PixelAttack`` (``es=1``: differential evolution, as in the
study) on :class:`~seradv.attacks._art.GradientFreeClassifier` with ``input_shape=(1, 261,
128)`` (ART reads rows, columns and channels from a 3-D image shape; queries are reshaped back);
ART draws from NumPy's global RNG (seeded and restored by
:func:`~seradv.attacks.run.run_attack`). ART's ``[0, 255]`` round trip returns *unchanged* cells
with float32 round-off (~1e-6): cells that moved by less than :data:`ROUNDTRIP_TOL` get their
exact clean value back, so that L0 counts only the attacked cells. ``"torch"`` (default):
:func:`pixel_attack_torch`, ART's DE batched over samples (on a chunked model only the chunks a
candidate changes are re-encoded, :func:`seradv.models.chunked`); it reports
``AttackResult.fooled_any`` from the predictions of every candidate it evaluates (each in the
threat model), at no extra cost.

Example:

>>> run_attack("pixel", model, x, y, {"th": 10, "max_iter": 20}, clip=(-5, 7))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.attacks.evasion import PixelAttack
from torch import nn

from seradv.attacks._art import black_box_classifier
from seradv.attacks._torch import QUERY_ROWS
from seradv.attacks.context import AttackContext, IterateWatch, QueryCounter, map_batches_watched
from seradv.attacks.spec import AttackSpec, ParamSpec, register_attack
from seradv.models import chunked

__all__ = ["PIXEL", "ROUNDTRIP_TOL", "de_population_size", "pixel_attack_torch"]

#: Cells that moved less than this are ART's [0, 255] round-trip noise, not attacked cells.
ROUNDTRIP_TOL = 1e-4

# --------------------------------------------------------------------------------------
# Plain torch implementation
# --------------------------------------------------------------------------------------
#: ART's target number of DE candidates per generation (``popsize = max(1, 400 // len(bounds))``).
_POP_TARGET = 400


def de_population_size(th: int) -> int:
    """ART's DE population for ``th`` cells: ``max(5, max(1, 400 // (3 th)) * 3 th)``."""
    n_par = 3 * th
    return max(5, max(1, _POP_TARGET // n_par) * n_par)


def _cell_levels(k: torch.Tensor, clip: tuple[float, float]) -> torch.Tensor:
    """Value of level ``k`` (int 0..255) in model units: ART's ``rescale_input``, in float32."""
    lo, hi = clip
    kf = k.to(torch.float32)
    if hi == 255.0:  # ART only rescales when clip_max != 255
        return kf
    return kf / 255.0 * (hi - lo) + lo


def _rand(gen: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float64 draws from ``gen`` (CPU), moved to ``device``."""
    return torch.rand(shape, generator=gen, dtype=torch.float64).to(device)


def _randint(gen: torch.Generator, high: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=gen).to(device)


class _PixelProblem:
    """Decoding of DE candidates into cells and their evaluation (one batch of samples)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, th: int,
                 clip: tuple[float, float], counter: QueryCounter | None, max_rows: int) -> None:
        self.model, self.y, self.th, self.clip = model, y, th, clip
        self.shape = tuple(x.shape[1:])
        self.rows, self.cols = self.shape[-2], self.shape[-1]
        self.x_flat = x.reshape(x.shape[0], -1)
        self.counter, self.max_rows = counter, max_rows
        # chunked-model fast path (seradv.models.chunked): encode x's chunks once, re-encode
        # only the chunks a candidate's cells fall in; eval mode only (no dropout / BN updates)
        self.chunk = 0
        self.local = callable(getattr(model, "encode_chunks_local", None))
        if chunked(model) and not model.training and self.rows % model.chunk_frames == 0:
            self.chunk = model.chunk_frames
            self.n_chunks = self.rows // self.chunk
            self.x_chunks = x.reshape(x.shape[0] * self.n_chunks, self.chunk, self.cols)
            self.base = torch.cat([model.encode_chunks(self.x_chunks[s : s + max_rows])
                                   for s in range(0, self.x_chunks.shape[0], max_rows)])
            self.base = self.base.view(x.shape[0], self.n_chunks, -1)
        high = torch.tensor([self.rows, self.cols, 255] * th, dtype=torch.float64, device=x.device)
        # ART's _scale_parameters: 0.5 * (low + high) + (trial - 0.5) * |low - high|, low = 0
        self.arg1, self.arg2 = 0.5 * high, high.abs()

    def decode(self, trial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat cell index and float32 value of each of the ``th`` cells, ``[shape=(..., th)]``.

        ART: ``x.astype(int)`` (truncation), row ``% rows``, column ``% cols``, value level
        ``k`` in ``0..255``; cells are written in order, so of two cells at one position the
        later one wins: every cell takes the value of the last cell at its position.
        """
        par = (self.arg1 + (trial - 0.5) * self.arg2).to(torch.int64)
        pos = (par[..., 0::3] % self.rows) * self.cols + par[..., 1::3] % self.cols
        val = _cell_levels(par[..., 2::3], self.clip)
        if self.th > 1:
            idx = torch.arange(self.th, device=pos.device)
            same = (pos[..., :, None] == pos[..., None, :]) & (idx[None, :] >= idx[:, None])
            last = torch.where(same, idx, torch.zeros_like(idx)).amax(-1)
            val = val.gather(-1, last)
        return pos, val

    def perturb(self, sample: torch.Tensor, pos: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
        """Inputs ``[shape=(r, *shape)]``: ``x[sample]`` with cells ``pos`` set to ``val``."""
        out = self.x_flat.index_select(0, sample)
        out.scatter_(1, pos, val)
        return out.view(-1, *self.shape)

    def logits(self, sample: torch.Tensor, pos: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
        """Model logits of ``x[sample]`` with cells ``pos`` set to ``val`` (one forward pass).

        On a chunked model only the (candidate, chunk) pairs holding a changed cell go through
        :meth:`encode_chunks`; the other chunks' features are the clean ones, encoded once.
        """
        if not self.chunk:
            return self.model(self.perturb(sample, pos, val))
        n, c = pos.shape[0], self.n_chunks
        frame_len = self.chunk * self.cols
        chunk_of = pos // frame_len  # [n, th]
        keys = (torch.arange(n, device=pos.device)[:, None] * c + chunk_of).flatten()
        uniq, inv = keys.unique(return_inverse=True)
        cand, ch = uniq // c, uniq % c
        xin = self.x_chunks.index_select(0, sample.index_select(0, cand) * c + ch).reshape(uniq.numel(), -1)
        # cells at one position carry one value (decode: the last cell wins), so order is moot
        xin[inv, (pos - chunk_of * frame_len).flatten()] = val.flatten()
        feats = self.base.index_select(0, sample)  # a copy
        xin = xin.view(-1, self.chunk, self.cols)
        if self.local:  # the model re-encodes only the Mel columns the cells can reach
            col = (pos % self.cols).flatten()
            lo = torch.full((uniq.numel(),), self.cols, dtype=col.dtype, device=col.device)
            hi = torch.full_like(lo, -1)
            lo.scatter_reduce_(0, inv, col, "amin")
            hi.scatter_reduce_(0, inv, col, "amax")
            feats[cand, ch] = self.model.encode_chunks_local(xin, lo, hi, feats[cand, ch])
        else:
            feats[cand, ch] = self.model.encode_chunks(xin)
        return self.model.decode_chunks(feats)

    def evaluate(self, sample: torch.Tensor, trial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """True-class probability and predicted class of each candidate.

        ``sample`` ``[shape=(a,)]`` (batch rows), ``trial`` ``[shape=(a, m, 3 th)]`` in [0, 1];
        returns two ``[shape=(a, m)]`` tensors. One forward pass per ``max_rows`` candidates.
        """
        a, m = trial.shape[:2]
        pos, val = self.decode(trial.reshape(a * m, -1))
        rows = sample.repeat_interleave(m)
        y_rows = self.y.index_select(0, rows)
        p_true = torch.empty(a * m, dtype=torch.float32, device=trial.device)
        pred = torch.empty(a * m, dtype=torch.int64, device=trial.device)
        for s in range(0, a * m, self.max_rows):
            e = min(s + self.max_rows, a * m)
            probs = torch.softmax(self.logits(rows[s:e], pos[s:e], val[s:e]), -1)
            if self.counter is not None:
                self.counter.n_queries += e - s
            p_true[s:e] = probs.gather(1, y_rows[s:e, None])[:, 0].float()
            pred[s:e] = probs.argmax(1)
        return p_true.view(a, m), pred.view(a, m)


@torch.inference_mode()
def pixel_attack_torch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    th: int,
    max_iter: int,
    clip: tuple[float, float],
    generator: torch.Generator,
    counter: QueryCounter | None = None,
    max_rows: int = QUERY_ROWS,
    watch: IterateWatch | None = None,
) -> torch.Tensor:
    """ART 1.20.1's ``PixelAttack(es=1)`` (differential evolution), batched over samples.

    Per sample, as ART: a population of :func:`de_population_size` candidates, each ``th``
    cells encoded as ``(row, column, level)`` scaled to ``[0, 1]`` (bounds ``[0, rows]``,
    ``[0, cols]``, ``[0, 255]``), Latin-hypercube start, then ``max_iter`` generations of
    ``best1bin`` with dithered mutation factor ``U(0.5, 1)`` drawn once per generation,
    recombination 1 (the trial is the mutant), out-of-range parameters redrawn uniformly,
    greedy replacement (ART's order: each improved member, then the best of the trials into
    slot 0); fitness = softmax probability of the true class ``y`` (minimised). A sample stops
    after the first generation whose best member is misclassified (success: that member's
    cells are written into ``x``); after ``max_iter`` generations without success it is
    returned clean. All candidates of all running samples of a generation are evaluated
    together, ``max_rows`` per forward pass.

    Parameters
    ----------
    model : nn.Module
        In eval mode on ``x``'s device; ``[shape=(b, 261, 128)]`` -> logits.
    x : Tensor ``[shape=(b, rows, cols)]`` float32
    y : Tensor ``[shape=(b,)]`` int64
        True classes (untargeted).
    th : int
        Cells changed per candidate.
    max_iter : int
        DE generations.
    clip : (float, float)
        Clip box; levels ``k`` in ``0..255`` map to ``lo + k (hi - lo) / 255``.
    generator : torch.Generator
        CPU generator of every random draw (drawn on the CPU, then moved to the device).
    counter : QueryCounter or None
        ``n_queries`` += rows of each forward pass.
    max_rows : int
        Most candidates per forward pass.
    watch : IterateWatch or None
        Told which rows had a misclassified candidate (w.r.t. ``y``) in each generation (the
        predictions DE computes anyway; every candidate changes at most ``th`` cells).

    Returns
    -------
    Tensor ``[shape=(b, rows, cols)]`` float32
    """
    dev = x.device
    b = x.shape[0]
    prob = _PixelProblem(model, x, y, th, clip, counter, max_rows)
    n_par, n_pop = 3 * th, de_population_size(th)
    cand = torch.arange(n_pop, device=dev)

    # Latin hypercube initialisation (ART's init_population_lhs), per sample
    seg = _rand(generator, (b, n_pop, n_par), dev) * (1.0 / n_pop)
    seg = seg + (torch.arange(n_pop, dtype=torch.float64, device=dev) / n_pop)[:, None]
    order = _rand(generator, (b, n_par, n_pop), dev).argsort(-1).transpose(1, 2)
    pop = seg.gather(1, order)
    everyone = torch.arange(b, device=dev)
    energy, pred = prob.evaluate(everyone, pop)
    if watch is not None:
        watch.mark(everyone, (pred != y[:, None]).any(1))
    best = energy.argmin(1)
    # put the lowest energy first (ART swaps slots 0 and argmin)
    p0, pb = pop[everyone, 0].clone(), pop[everyone, best].clone()
    pop[everyone, 0], pop[everyone, best] = pb, p0
    e0, eb = energy[everyone, 0].clone(), energy[everyone, best].clone()
    energy[everyone, 0], energy[everyone, best] = eb, e0
    best_pred = pred[everyone, best]

    success = torch.zeros(b, dtype=torch.bool, device=dev)
    active = everyone
    for _ in range(max_iter):
        a = active.numel()
        if a == 0:
            break
        p_a, e_a = pop[active], energy[active]
        scale = _rand(generator, (a,), dev) * 0.5 + 0.5  # dither (0.5, 1)
        # r0, r1: distinct, uniform, both different from the candidate itself
        r0 = _randint(generator, n_pop - 1, (a, n_pop), dev)
        r0 = r0 + (r0 >= cand)
        r1 = _randint(generator, n_pop - 2, (a, n_pop), dev)
        lo_i, hi_i = torch.minimum(cand, r0), torch.maximum(cand, r0)
        r1 = r1 + (r1 >= lo_i)
        r1 = r1 + (r1 >= hi_i)
        take = lambda r: p_a.gather(1, r[..., None].expand(-1, -1, n_par))  # noqa: E731
        trial = p_a[:, :1] + scale[:, None, None] * (take(r0) - take(r1))
        redraw = _rand(generator, (a, n_pop, n_par), dev)
        trial = torch.where((trial < 0) | (trial > 1), redraw, trial)

        e_t, pred_t = prob.evaluate(active, trial)
        if watch is not None:  # some candidate of the row misclassified (all in the threat model)
            watch.mark(active, (pred_t != y[active, None]).any(1))
        improved = e_t < e_a
        p_a = torch.where(improved[..., None], trial, p_a)
        e_new = torch.where(improved, e_t, e_a)
        jmin = e_t.argmin(1)
        e_min = e_t.gather(1, jmin[:, None])[:, 0]
        better = e_min < e_a[:, 0]
        p_a[:, 0] = torch.where(better[:, None], trial[torch.arange(a, device=dev), jmin], p_a[:, 0])
        e_new[:, 0] = torch.where(better, e_min, e_new[:, 0])
        bp = torch.where(better, pred_t.gather(1, jmin[:, None])[:, 0], best_pred[active])
        pop[active], energy[active], best_pred[active] = p_a, e_new, bp
        fooled = bp != y[active]  # ART's callback: stop once the best member fools the model
        success[active[fooled]] = True
        active = active[~fooled]

    x_adv = x.clone()
    won = success.nonzero()[:, 0]
    if won.numel():
        pos, val = prob.decode(pop[won, 0])
        x_adv[won] = prob.perturb(won, pos, val)
    return x_adv


def _pixel_torch(ctx: AttackContext, p: dict[str, Any]) -> np.ndarray:
    gen = torch.Generator().manual_seed(ctx.seed)
    return map_batches_watched(ctx, lambda xb, yb, watch: pixel_attack_torch(
        ctx.model, xb, yb, th=p["th"], max_iter=p["max_iter"], clip=ctx.clip.as_tuple(),
        generator=gen, counter=ctx.counter, watch=watch))


# --------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------
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
    backends={"art": _pixel_art, "torch": _pixel_torch},
    default_backend="torch",
    notes="~400 queries per generation and sample; estimator shape (1, 261, 128)",
))
