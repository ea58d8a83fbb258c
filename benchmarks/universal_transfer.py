"""Benchmark: universal waveform perturbations of trained runs and the transfer matrix between them (issue 14).

For each RUN: :func:`seradv.attacks.waveform.universal.universal_run` at each ``--snr`` (learned on
``--n-train`` seeded training segments, evaluated on the run's test segments or a seeded
``--limit`` of them, measured on the written 16-bit files; reused when already there), printed as
a markdown table with the same-norm random control. Then
:func:`seradv.grid.transfer.transfer_matrix` of every run's waveform grid cells and universal
perturbations played to every run (each through its own pipeline, utterances a target trained or
validated on left out), printed as markdown; ``--out DIR`` also writes ``transfer.csv`` and
``transfer.png``. Usage:
``.venv/bin/python benchmarks/universal_transfer.py RUN [RUN2 ...] --snr 30 --out /tmp/transfer``
(tone runs of the tests' tiny model: add ``--import tests.helpers.corpus`` with the repository
root on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

import torch

from seradv.attacks.waveform.universal import universal_run
from seradv.grid.transfer import run_labels, transfer_figure, transfer_matrix


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="RUN")
    ap.add_argument("--snr", type=float, action="append", help="SNR budget(s) in dB (default 30)")
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="folder for transfer.csv and transfer.png")
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                    help="import MODULE first (one that registers the runs' model, e.g. tests.helpers.corpus)")
    args = ap.parse_args()
    for mod in args.imports:
        importlib.import_module(mod)
    torch.set_num_threads(args.threads)
    snrs = args.snr or [30.0]
    labels = run_labels([Path(r) for r in args.runs])
    print("| run | SNR (ref) dB | ref RMS dBFS | n_train | n_test | clean | robust | fooling | flip | "
          "random robust | random fooling | segment SNR mean [min, max] | STOI | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        for snr in snrs:
            t = time.perf_counter()
            f = universal_run(run, snr_db=snr, n_train=args.n_train, limit=args.limit, seed=args.seed,
                              steps=args.steps, batch_size=args.batch_size, device=args.device)
            s = time.perf_counter() - t
            print(f"| {labels[Path(run).resolve()]} | {f['snr_ref_db']:.2f} | {f['reference_dbfs']:.1f} | "
                  f"{f['n_train']} | {f['n_test']} | {f['clean_accuracy']:.3f} | {f['robust_accuracy']:.3f} | "
                  f"{f['fooling_rate']:.3f} | {f['flip_rate']:.3f} | {f['random_robust_accuracy']:.3f} | "
                  f"{f['random_fooling_rate']:.3f} | {f['segment_snr_db_mean']:.1f} [{f['segment_snr_db_min']:.1f}, "
                  f"{f['segment_snr_db_max']:.1f}] | {f['mean_stoi']:.3f} | {s:.0f} |", flush=True)
    t = time.perf_counter()
    out = None if args.out is None else args.out / "transfer.csv"
    table = transfer_matrix(args.runs, args.runs, out=out, device=args.device)
    print(f"\nTransfer matrix ({time.perf_counter() - t:.0f} s): robust accuracy of the target on the source's "
          f"written files (n: segments the target neither trained nor validated on)\n")
    cols = ["source_run", "attack", "params", "target_run", "n", "clean_acc_target", "robust_acc_target",
            "fooling_rate_target", "source_robust_acc"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in table[cols].itertuples(index=False):
        print("| " + " | ".join(_fmt(v) for v in r) + " |")
    if args.out is not None and not table.empty:
        print(f"\n{out}\n{transfer_figure(table, args.out / 'transfer.png')}")


if __name__ == "__main__":
    main()
