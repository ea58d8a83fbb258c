"""Benchmark: where a training step of the study's CNN-LSTM spends its time (issue 16, item 2).

One training step is what :func:`seradv.training.fit` does per batch: forward in train mode
(dropout, batch statistics), cross-entropy, backward, Adam. On random inputs of the study's
shape ``(batch, 261, 128)`` (the cost does not depend on the values), this prints

* samples/s of the step as seradv trains (the layers as declared, contiguous tensors);
* the torch profiler's top operators by self time;
* the CNN part's forward+backward with channels-last tensors, beside the contiguous one, and
  both paths' error against a float64 reference (a speed-up is only taken if it changes the
  numbers by round-off alone: "same batches, same updates").

``--precision bf16`` (or ``fp16`` on CUDA) runs the step as :func:`seradv.training.fit` does
at that precision (:mod:`seradv.precision`: the forward under autocast, the loss in float32);
``--precision fp32,bf16`` times the steps of each, same weights and batches, and prints their
ratio (``--skip-profile``: the step times only).

Usage: ``.venv/bin/python benchmarks/training_profile.py --batch 8 --steps 20 --threads 1``
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from seradv.models import CNNLSTM
from seradv.precision import with_precision


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step; ``model`` may be :func:`~seradv.precision.with_precision`'s (float32 logits)."""
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _step_times(model: nn.Module, x: torch.Tensor, y: torch.Tensor, b: int, steps: int,
                precisions: list[str]) -> dict[str, float]:
    """Seconds per training step at each precision, each from the same weights and batches
    (a fresh copy of ``model`` and its own Adam per precision; one warm-up step)."""
    out = {}
    for p in precisions:
        m = copy.deepcopy(model)
        net = with_precision(m, p, "cpu")
        opt = torch.optim.Adam(m.parameters(), lr=1e-4, eps=1e-7)
        _step(net, opt, x[:b], y[:b])  # warm-up
        t = time.perf_counter()
        for i in range(1, steps + 1):
            _step(net, opt, x[i * b:(i + 1) * b], y[i * b:(i + 1) * b])
        out[p] = (time.perf_counter() - t) / steps
    return out


def _cnn_fwd_bwd(cnn: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor, list[torch.Tensor]]:
    """Median seconds of forward+backward of ``cnn`` on ``x``; its output and weight gradients."""
    times = []
    for i in range(repeats + 1):
        for p in cnn.parameters():
            p.grad = None
        t = time.perf_counter()
        out = cnn(x)
        out.sum().backward()
        if i:
            times.append(time.perf_counter() - t)
    times.sort()
    return (times[len(times) // 2] if times else float("nan")), out.detach(), [p.grad.detach().clone() for p in cnn.parameters()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lstm-dropout", type=float, default=0.0)
    ap.add_argument("--precision", default="fp32", help="fp32, bf16, or a list (fp32,bf16): step time of each")
    ap.add_argument("--skip-profile", action="store_true", help="only the step times")
    args = ap.parse_args()
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CNNLSTM(5, dropout=0.3, lstm_dropout=args.lstm_dropout).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)
    b = args.batch
    x = torch.randn(b * (args.steps + 1), 261, 128)
    y = torch.randint(0, 5, (len(x),))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), batch {b}")
    times = _step_times(model, x, y, b, args.steps, precisions)
    for p, dt in times.items():
        ratio = f", {times[precisions[0]] / dt:.2f}x {precisions[0]}" if p != precisions[0] else ""
        print(f"training step ({p}): {dt * 1e3:.1f} ms, {b / dt:.1f} samples/s{ratio}")
    if args.skip_profile:
        return
    net = with_precision(model, precisions[-1], "cpu")
    _step(net, opt, x[:b], y[:b])  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(1, min(args.steps, 5) + 1):
            _step(net, opt, x[i * b:(i + 1) * b], y[i * b:(i + 1) * b])
    print(f"profile ({precisions[-1]}):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    chunks = torch.randn(b * model.n_chunks, 1, model.chunk, 128)
    cnn = copy.deepcopy(model.cnn)
    t_c, out_c, g_c = _cnn_fwd_bwd(cnn, chunks, 10)
    cnn_cl = copy.deepcopy(model.cnn).to(memory_format=torch.channels_last)
    t_l, out_l, g_l = _cnn_fwd_bwd(cnn_cl, chunks.contiguous(memory_format=torch.channels_last), 10)
    ref = copy.deepcopy(model.cnn).double()
    _, out_r, g_r = _cnn_fwd_bwd(ref, chunks.double(), 0)
    print("| CNN forward+backward | ms | max abs output error vs float64 | max rel. weight-gradient error |")
    print("|---|---|---|---|")
    for name, tt, out, grads in (("contiguous (as trained)", t_c, out_c, g_c), ("channels-last", t_l, out_l, g_l)):
        err = (out.double() - out_r).abs().max().item()
        gerr = max(((g.double() - h).abs().max() / h.abs().max()).item() for g, h in zip(grads, g_r))
        print(f"| {name} | {tt * 1e3:.1f} | {err:.1e} | {gerr:.1e} |")


if __name__ == "__main__":
    main()
