"""Benchmark: JSMA's rolling window against fixed batches, on a trained run's test segments.

Fixed batches (the previous runner: each batch of ``--batch`` samples runs until its slowest
sample finishes) against one rolling window of ``--batch`` rows over all samples (a finished
sample hands its slot to the next). Same samples, targets and theta; prints seconds, gradient
passes and whether the adversarial examples agree.

Usage: ``.venv/bin/python benchmarks/jsma_window.py runs/emodb-paper --n 128 --theta 1 --threads 1``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from seradv.attacks.context import QueryCounter
from seradv.attacks.jsma import jsma_batch, random_targets
from seradv.prepare import load_subset
from seradv.rundir import read_preprocessing
from seradv.rundir import load_model
from seradv.grid.plan import select_subset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--theta", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clip = read_preprocessing(args.run_dir).clip
    model = load_model(args.run_dir).eval()
    test = load_subset(args.run_dir, "test")
    idx = select_subset(test.meta, args.n, args.seed)
    x = torch.from_numpy(np.clip(test.x[idx], *clip).astype(np.float32))
    t = torch.from_numpy(random_targets(test.y[idx], int(test.y.max()) + 1, args.seed))
    kw = {"theta": args.theta, "gamma": 1.0, "clip": clip}

    c_fixed, t0 = QueryCounter(), time.perf_counter()
    fixed = torch.cat([jsma_batch(model, x[i:i + args.batch], t[i:i + args.batch], counter=c_fixed, **kw)
                       for i in range(0, len(x), args.batch)])
    s_fixed = time.perf_counter() - t0
    c_roll, t0 = QueryCounter(), time.perf_counter()
    rolling = jsma_batch(model, x, t, counter=c_roll, max_rows=args.batch, **kw)
    s_roll = time.perf_counter() - t0
    same = (fixed == rolling).flatten(1).all(1).float().mean().item()
    print(f"JSMA theta={args.theta}, {len(x)} segments of {args.run_dir}, window/batch {args.batch}, "
          f"{args.threads} thread(s)")
    print(f"fixed batches: {s_fixed:.1f} s, {c_fixed.n_grads} gradient rows")
    print(f"rolling window: {s_roll:.1f} s, {c_roll.n_grads} gradient rows ({s_fixed / s_roll:.2f}x)")
    print(f"identical adversarial examples: {100 * same:.0f} % of samples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
