"""Benchmark: the attacks at fp32 and bf16 (issue 16, item 1) on the same seeded test segments.

For each attack (one parameter set: the first of its paper grid, or ``--params``) this runs
the grid's cell computation (:func:`seradv.grid.run.attack_cell`) once per precision on one
trained model and the same seeded, stratified subset of its test segments, and prints

* ``seconds``: the attack's own time (``AttackResult.seconds``) at fp32 and bf16, and the ratio;
* ``robust``: robust accuracy as the grid reports it, each precision judged by its own model
  passes (clean and adversarial predictions, watched iterates at that precision);
* ``robust@fp32``: the bf16 cell's examples judged by the float32 model (accuracy on the
  returned examples): does a bf16 attack find the study's model's adversarial examples?
* ``agree``: share of samples whose robust flag is the same at both precisions;

and first (``--passes N``) the model's per-input cost of a forward pass (no autograd) and of a
forward+backward of the input gradient (frozen weights, as in an attack) at each precision:
the fastest of ``N`` interleaved timings of a batch of ``--batch-size`` segments (the least
disturbed by other load).

The model: a run directory's ``model.safetensors`` (``RUN``), or with ``--state`` the best
weights of a training checkpoint (``train_state.pt``, read only: a live training's), with the
test segments of ``RUN`` (a run or fold directory). Rows go to ``--out`` as CSV and Markdown.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/precision.py \\
        runs/emodb-speaker_cv/folds/fold-1 --state runs/emodb-speaker_cv/folds/fold-1/train_state.pt \\
        --limit 16 --attacks fgsm,bim,pgd,deepfool,cw_linf,apgd_ce --out benchmarks/results/precision
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from seradv.attacks import get_attack
from seradv.grid.plan import Cell, parse_params, select_subset
from seradv.grid.run import attack_cell
from seradv.models import build_model
from seradv.precision import with_precision
from seradv.prepare import SplitData, load_subset
from seradv.rundir import load_model, read_preprocessing


def load_benchmark_model(run: Path, state: Path | None, n_classes: int) -> torch.nn.Module:
    """The run's model, or the best weights of the training checkpoint ``state`` (eval mode)."""
    if state is None:
        return load_model(run)
    st = torch.load(state, map_location="cpu", weights_only=True)
    model = build_model("cnn_lstm", n_classes)
    model.load_state_dict(st["best_model"])
    print(f"checkpoint {state}: epoch {st['epoch']}, best epoch {st['best_epoch']}, "
          f"best val_loss {st['best_loss']:.4f}")
    return model.eval()


def cell_of(name: str, params: str | None, precision: str) -> Cell:
    """The benchmark's cell of attack ``name``: ``params`` or its first paper-grid set, torch backend."""
    spec = get_attack(name)
    ps = parse_params(params, spec) if params else (spec.grid("paper") or [{}])[0]
    return Cell(attack=spec.name, params=spec.validate(ps), backend="torch", precision=precision)


def run_one(model: torch.nn.Module, data: SplitData, cell: Cell, clip: tuple[float, float],
            seed: int, batch_size: int) -> tuple[pd.DataFrame, np.ndarray, float]:
    """Per-sample results, adversarial examples ``[shape=(n, 261, 128)]`` and attack seconds."""
    samples, delta, facts = attack_cell(model, data, cell, clip=clip, seed=seed, batch_size=batch_size)
    return samples, data.x + delta, float(facts["seconds"])


def markdown(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table (no tabulate needed)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def pass_costs(model: torch.nn.Module, x: np.ndarray, precisions: list[str], repeats: int) -> pd.DataFrame:
    """Milliseconds per input of a forward and of a forward+backward (input gradient of the
    cross-entropy, frozen weights) on the batch ``x`` at each precision: the fastest of
    ``repeats`` interleaved timings."""
    xt = torch.from_numpy(x)
    y = torch.zeros(len(x), dtype=torch.long)
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)

    def forward(net: torch.nn.Module) -> None:
        with torch.inference_mode():
            net(xt)

    def forward_backward(net: torch.nn.Module) -> None:
        xg = xt.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(net(xg), y).backward()

    best: dict[tuple[str, str], float] = {}
    nets = {p: with_precision(model, p, "cpu") for p in precisions}
    for _ in range(repeats + 1):  # the first round warms up
        for p, net in nets.items():
            for what, fn in (("forward", forward), ("forward+backward", forward_backward)):
                t = time.perf_counter()
                fn(net)
                ms = (time.perf_counter() - t) * 1e3 / len(x)
                if _:
                    best[(what, p)] = min(best.get((what, p), float("inf")), ms)
    for p, flag in zip(model.parameters(), frozen):
        p.requires_grad_(flag)
    rows = [{"pass": what, **{f"ms_{p}": best[(what, p)] for p in precisions}} for what in ("forward", "forward+backward")]
    table = pd.DataFrame(rows)
    for p in precisions[1:]:
        table[f"speedup_{p}"] = table[f"ms_{precisions[0]}"] / table[f"ms_{p}"]
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run or fold directory (test segments, clip values)")
    ap.add_argument("--state", type=Path, default=None, help="train_state.pt: use its best weights")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--attacks", default="fgsm,bim,pgd,deepfool,cw_linf,apgd_ce")
    ap.add_argument("--params", default=None, help="one parameter set for every attack (default: first paper cell)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--passes", type=int, default=0, help="time the model's passes N times per precision first")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each cell per precision, interleaved; median seconds")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = read_preprocessing(args.run)
    test = load_subset(args.run, "test")
    idx = select_subset(test.meta, args.limit, args.seed)
    lo, hi = info.clip_values
    data = SplitData(x=np.clip(test.x[idx], lo, hi).astype(np.float32), y=test.y[idx],
                     meta=test.meta.iloc[idx].reset_index(drop=True), classes=test.classes)
    model = load_benchmark_model(args.run, args.state, len(info.classes))
    precisions = [p.strip() for p in args.precisions.split(",")]
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{len(data)} segments (seed {args.seed}) of {args.run}, batch {args.batch_size}")
    if args.passes:
        passes = pass_costs(model, data.x[: args.batch_size], precisions, args.passes)
        print(passes.round(3).to_string(index=False), flush=True)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            passes.to_csv(args.out / "passes.csv", index=False)
            (args.out / "passes.md").write_text(markdown(passes.round(3)))
    rows = []
    for name in [a.strip() for a in args.attacks.split(",") if a.strip()]:
        out, times = {}, {p: [] for p in precisions}
        for _ in range(args.repeats):  # interleaved: a change of load hits both precisions
            for p in precisions:
                cell = cell_of(name, args.params, p)
                samples, x_adv, seconds = run_one(model, data, cell, (lo, hi), args.seed, args.batch_size)
                out.setdefault(p, (samples, x_adv))
                times[p].append(seconds)
                print(f"  {name} {cell.label} {p}: {seconds:.2f} s, robust {samples['robust'].mean():.3f}",
                      flush=True)
        out = {p: (*out[p], float(np.median(times[p]))) for p in precisions}
        s32, x32, t32 = out[precisions[0]]
        row = {"attack": name, "params": cell_of(name, args.params, "fp32").label,
               "n": len(data), "clean_fp32": float((s32["pred_clean"] == s32["label"]).mean())}
        for p in precisions:
            s, x_adv, sec = out[p]
            row[f"seconds_{p}"] = sec
            row[f"robust_{p}"] = float(s["robust"].mean())
            if p != precisions[0]:
                with torch.inference_mode():
                    pred = model(torch.from_numpy(x_adv.astype(np.float32))).argmax(1).numpy()
                row[f"speedup_{p}"] = t32 / sec
                row[f"clean_{p}"] = float((s["pred_clean"] == s["label"]).mean())
                row[f"robust_{p}@fp32"] = float(np.mean(pred == data.y))
                row[f"agree_{p}"] = float(np.mean(s["robust"].to_numpy() == s32["robust"].to_numpy()))
        rows.append(row)
    if not rows:
        return
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.round(3).to_string(index=False))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "precision.csv", index=False)
        (args.out / "precision.md").write_text(markdown(table.round(3)))
        print(f"wrote {args.out / 'precision.csv'} and precision.md")


if __name__ == "__main__":
    main()
