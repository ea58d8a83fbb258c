"""Benchmark: training steps of the study's CNN-LSTM before and after issue 16's speed-ups.

Two ways to take the same training steps (same initial weights, same batches, same dropout
masks), timed in interleaved rounds so that a noisy machine slows both alike:

* ``before``: the CNN's layers as one ``nn.Sequential`` (every max-pool on the contiguous
  tensor) and glibc's default allocator (a fresh ``mmap`` for every tensor above 32 MiB);
* ``now``: what :func:`seradv.training.fit` runs: :func:`seradv.models.fast_paths.run_declared`
  (max-pools on channels-last copies, the declared backward) inside
  :func:`seradv.allocator.reuse_freed_memory`.

It prints the median step time and samples/s of each, their ratio, and whether the weights
after all steps are identical, bit for bit (they must be: "same batches, same updates").

With ``--attack-batch B`` it also times what every gradient attack repeats: the input
gradient of a batch of ``B`` inputs through the eval-mode model with frozen weights (as
:func:`seradv.attacks.run_attack` runs it), with glibc's default allocator and inside
:func:`~seradv.allocator.reuse_freed_memory`, and checks that both gradients are identical.

Usage: ``.venv/bin/python benchmarks/training_speed.py --batch 32 --steps 6 --rounds 4 --threads 1 --attack-batch 64``
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
import time
from collections.abc import Iterator

import torch
from torch import nn

from seradv.allocator import reuse_freed_memory
from seradv.models import CNNLSTM
from seradv.models import fast_paths


@contextlib.contextmanager
def _before() -> Iterator[None]:
    """The training path as it was: the layers as one ``nn.Sequential``, the default allocator."""
    saved = fast_paths.run_declared
    fast_paths.run_declared = lambda layers, x: nn.Sequential(*layers)(x)
    try:
        yield
    finally:
        fast_paths.run_declared = saved


_VARIANTS = {"before": _before, "now": reuse_freed_memory}


def _steps(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, b: int,
           first: int, count: int, seed: int) -> float:
    """Seconds per step of ``count`` training steps on batches ``first .. first + count - 1``."""
    torch.manual_seed(seed)  # the dropout masks
    t = time.perf_counter()
    for i in range(first, first + count):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[i * b:(i + 1) * b]), y[i * b:(i + 1) * b]).backward()
        opt.step()
    return (time.perf_counter() - t) / count


def _attack_gradients(model: nn.Module, x: torch.Tensor, rounds: int) -> tuple[dict[str, float], bool]:
    """Median seconds of one input gradient of ``x`` through the frozen eval-mode ``model``
    without and with :func:`reuse_freed_memory` (interleaved rounds), and whether the two
    gradients are identical."""
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    y = torch.zeros(len(x), dtype=torch.long)

    def grad() -> torch.Tensor:
        xr = x.clone().requires_grad_(True)
        nn.functional.cross_entropy(model(xr), y).backward()
        return xr.grad

    times: dict[str, list[float]] = {"default allocator": [], "reuse_freed_memory": []}
    grads = {}
    for _ in range(rounds + 1):  # the first round warms up
        for k, ctx in (("default allocator", contextlib.nullcontext), ("reuse_freed_memory", reuse_freed_memory)):
            with ctx():
                t = time.perf_counter()
                grads[k] = grad()
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    return med, torch.equal(*grads.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="EmoDB's batch (the study's): 32")
    ap.add_argument("--steps", type=int, default=6, help="steps per round and variant")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lstm-dropout", type=float, default=0.0)
    ap.add_argument("--attack-batch", type=int, default=0, help="also time an attack's input gradient (0: no)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = CNNLSTM(5, dropout=0.3, lstm_dropout=args.lstm_dropout).train()
    b, n = args.batch, args.steps * args.rounds
    x = torch.randn(b * n, 261, 128)
    y = torch.randint(0, 5, (len(x),))
    models = {k: copy.deepcopy(base) for k in _VARIANTS}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4, eps=1e-7) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in _VARIANTS}
    for r in range(args.rounds):
        for k, ctx in _VARIANTS.items():
            with ctx():
                times[k].append(_steps(models[k], opts[k], x, y, b, r * args.steps, args.steps, seed=r))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), batch {b}, {args.rounds} rounds of {args.steps} steps")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, dt in med.items():
        spread = f"{min(times[k]) * 1e3:.0f}-{max(times[k]) * 1e3:.0f}"
        print(f"{k:7s} {dt * 1e3:7.1f} ms per step (rounds {spread}), {b / dt:6.1f} samples/s")
    print(f"speed-up now / before: {med['before'] / med['now']:.2f}x")
    same = all(torch.equal(p, q) for p, q in zip(models["before"].state_dict().values(),
                                                 models["now"].state_dict().values()))
    print(f"weights after {n} steps identical, bit for bit: {same}")
    if args.attack_batch:
        med, same = _attack_gradients(base, x[: args.attack_batch], args.rounds)
        a, r = med["default allocator"], med["reuse_freed_memory"]
        print(f"attack input gradient, batch {args.attack_batch}, frozen weights: {a * 1e3:.0f} ms "
              f"(default allocator) -> {r * 1e3:.0f} ms (reuse_freed_memory), {a / r:.2f}x; "
              f"identical: {same}")


if __name__ == "__main__":
    main()
