"""Benchmark: the waveform PGD attacks on a trained run's seeded test subset (issue 14).

Robust accuracy measured on the written 16-bit WAVs read back through the numpy features (and
on the float tensor the attack ended with), SNR / segmental SNR / peak dBFS / STOI (and PESQ
where the optional ``pesq`` package is installed) of the written perturbation, seconds per
cell. The grids are the registry's (``pgd_linf_wave``, ``pgd_snr_wave``); the same cells, kept
in the run, come from ``seradv attack RUN_DIR --attacks pgd_linf_wave,pgd_snr_wave --grid
standard --limit 64``. Usage:
``.venv/bin/python benchmarks/waveform_first.py RUN_DIR --limit 32 --grid quick``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from seradv.attacks.waveform.cell import WAVEFORM_GRIDS, waveform_attack_cell
from seradv.grid.plan import select_subset
from seradv.prepare import SplitData, load_subset
from seradv.rundir import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", default="quick", choices=["quick", "standard"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.run_dir)
    test = load_subset(args.run_dir, "test")
    rows = select_subset(test.meta, args.limit, args.seed)
    data = SplitData(test.x[rows], test.y[rows], test.meta.iloc[rows].reset_index(drop=True), test.classes)
    print("| attack | params | n | clean | robust (written 16-bit files) | robust (float tensor) | mean SNR dB | "
          "mean segSNR dB | max peak dBFS | mean STOI | mean PESQ | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for attack, grids in WAVEFORM_GRIDS.items():
        for params in grids[args.grid]:
            t = time.perf_counter()
            samples, _ = waveform_attack_cell(args.run_dir, model, data, attack, params,
                                              wav_dir=f"{args.run_dir}/attacks/wav-bench/{attack}", seed=args.seed)
            ok = samples["pred_clean"] == samples["label"]
            rob = ok & (samples["pred_adv"] == samples["label"])
            rob_f = ok & (samples["pred_adv_float"] == samples["label"])
            print(f"| {attack} | {params} | {len(samples)} | {ok.mean():.3f} | {rob.mean():.3f} | {rob_f.mean():.3f} | "
                  f"{samples['snr_db'].mean():.1f} | {samples['segsnr_db'].mean():.1f} | "
                  f"{samples['linf_dbfs'].max():.1f} | {samples['stoi'].mean():.3f} | "
                  f"{samples['pesq'].mean() if 'pesq' in samples else float('nan'):.2f} | "
                  f"{time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
