"""Benchmark: the CNN-LSTM's own speed-ups, each against the plain PyTorch path it replaces.

On a trained run's model (or a fresh CNN-LSTM) and random inputs of the study's shape:

* forward without autograd: the strided CNN as declared vs the oneDNN copy (``pool_first``);
* forward+backward (input gradient) in eval mode: the layers as declared vs max-pools first
  and channels-last maps, then with frozen weights (as attacks run the model): the first
  convolution and pool's input-only backward;
* Pixel-attack queries (``_PixelProblem.evaluate``, 400 candidates x 4 samples) for th 1, 5,
  10: full forward passes vs the chunked path vs the chunked path with local (cropped) chunk
  encoding.

The "declared" paths are the model's training-mode code with BatchNorm in eval mode and no
dropout, i.e. the same function. Prints a Markdown table (median of ``--repeats``).

Usage: ``.venv/bin/python benchmarks/model_speed.py [RUN_DIR] --threads 1``
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from datetime import date

import torch

from seradv.attacks.pixel import _PixelProblem
from seradv.models import CNNLSTM


@contextlib.contextmanager
def declared_layers(model: CNNLSTM):
    """The model's layers as declared: training flag set, BatchNorm eval, dropout 0."""
    state = [(m, m.training) for m in model.modules()]
    drop = (model.dropout.p, model.lstm_dropout.p)
    model.train()
    model.dropout.p = model.lstm_dropout.p = 0.0
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    try:
        yield
    finally:
        for m, t in state:
            m.train(t)
        model.dropout.p, model.lstm_dropout.p = drop


class Unchunked(torch.nn.Module):
    """The model without the chunked protocol (Pixel then runs full forward passes)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NoLocal(Unchunked):
    """The model with the chunked protocol but without local chunk encoding."""

    def __init__(self, model: CNNLSTM) -> None:
        super().__init__(model)
        self.chunk_frames = model.chunk_frames

    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        return self.model.encode_chunks(chunks)

    def decode_chunks(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.decode_chunks(feats)


def median_seconds(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", default=None, help="trained run (default: a fresh CNN-LSTM)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.run_dir:
        from seradv.rundir import load_model

        model = load_model(args.run_dir).eval()
    else:
        model = CNNLSTM(5).eval()
    x = torch.randn(args.batch, 261, 128)
    rows = []

    def fwd() -> None:
        with torch.no_grad():
            model(x)

    def fwd_bwd() -> None:
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xr).sum(), xr)

    with declared_layers(model):
        t_fwd_old, t_fb_old = median_seconds(fwd, args.repeats), median_seconds(fwd_bwd, args.repeats)
    t_fwd, t_fb = median_seconds(fwd, args.repeats), median_seconds(fwd_bwd, args.repeats)
    rows.append(("forward, no autograd (per sample)", t_fwd_old / args.batch, t_fwd / args.batch))
    rows.append(("forward+backward, eval (per sample)", t_fb_old / args.batch, t_fb / args.batch))
    for p in model.parameters():  # as attacks run it (run_attack freezes the weights)
        p.requires_grad_(False)
    t_fb_frozen = median_seconds(fwd_bwd, args.repeats)
    rows.append(("forward+backward, frozen weights (per sample): autograd's conv backward -> "
                 "input-only conv+pool backward", t_fb / args.batch, t_fb_frozen / args.batch))
    rows.append(("forward+backward (per sample): declared layers -> frozen fast path",
                 t_fb_old / args.batch, t_fb_frozen / args.batch))

    y = torch.arange(4) % model.n_classes
    xs = torch.randn(4, 261, 128).clamp(-5, 10)
    for th in (1, 5, 10):
        trial = torch.rand(4, 400, 3 * th, generator=torch.Generator().manual_seed(th), dtype=torch.float64)
        per = {}
        for name, m in (("full", Unchunked(model).eval()), ("chunked", NoLocal(model).eval()), ("local", model)):
            with torch.inference_mode():
                prob = _PixelProblem(m, xs, y, th, (-5.0, 10.0), None, 1024)
                per[name] = median_seconds(lambda: prob.evaluate(torch.arange(4), trial), args.repeats) / 1600
        rows.append((f"Pixel query th={th}: full forward -> chunked", per["full"], per["chunked"]))
        rows.append((f"Pixel query th={th}: full forward -> chunked + local", per["full"], per["local"]))

    print(f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); "
          f"date {date.today().isoformat()}; model {args.run_dir or 'fresh CNN-LSTM'}; batch {args.batch}.\n")
    print("| operation | before (ms) | after (ms) | speed-up |")
    print("|---|---|---|---|")
    for name, before, after in rows:
        print(f"| {name} | {1e3 * before:.2f} | {1e3 * after:.2f} | {before / after:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
