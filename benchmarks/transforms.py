"""Benchmark: input-transformation defences on a trained run, non-adaptive vs adaptive waveform PGD (issue 15).

On the run's seeded test subset (``--limit`` segments, stratified as the grid), per transformation
(:mod:`seradv.defences.transforms`): clean accuracy through the real transformation; robust
accuracy of the defended model against the non-adaptive attack (SNR-PGD on the undefended
``WaveformModel``, then the defence) and against the adaptive one (SNR-PGD through the defence:
exact gradient, BPDA, EOT for random ones; :mod:`seradv.attacks.waveform.adaptive`), and the
worst case (a segment counts as robust only if it survives both). Every adversarial waveform is
delivered as 16-bit PCM (``quantize_pcm16 / 32768``) before the defence sees it. A random
defence's accuracy is one draw per segment (seed ``--seed``). Usage:
``.venv/bin/python benchmarks/transforms.py RUN_DIR --limit 32 --snr 30`` (a tone run of the tests'
tiny model: add ``--import tests.helpers.corpus`` with the repository root on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import importlib
import time

import numpy as np
import torch

from seradv.attacks.waveform.adaptive import adaptive_attack, non_adaptive_attack
from seradv.attacks.waveform.realize import quantize_pcm16
from seradv.attacks.waveform.segments import segment_waveforms
from seradv.defences.transforms import DefendedModel, build_transform, codec_available
from seradv.errors import ConfigError
from seradv.frontend import FrontEnd, WaveformModel
from seradv.grid.plan import select_subset
from seradv.prepare import load_subset
from seradv.rundir import load_model

DEFAULTS: tuple[tuple[str, dict], ...] = (
    ("resample", {"target_rate": 8000}),
    ("quantize", {"bits": 8}),
    ("lowpass", {"cutoff_hz": 4000.0, "order": 8}),
    ("noise", {"snr_db": 20.0}),
    ("vorbis", {"quality": 0.5}),
    ("mp3", {"quality": 0.5}),
)
"""The transformations measured, with their parameters."""


def delivered(x: np.ndarray) -> np.ndarray:
    """What an attacker delivers: the 16-bit PCM samples as float32 ``[shape=(n, n_samples)]``."""
    return (quantize_pcm16(x) / 32768.0).astype(np.float32)


def correct(d: DefendedModel, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Per-segment correctness ``[shape=(n,)]`` bool of the deployed defence."""
    return d.predict(x, seed=seed) == y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--snr", type=float, default=30.0, help="SNR budget of the attacks, dB")
    ap.add_argument("--max-iter", type=int, default=10)
    ap.add_argument("--step-frac", type=float, default=0.25)
    ap.add_argument("--eot", type=int, default=8, help="EOT draws per step for random transformations")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                    help="import MODULE first (one that registers the run's model, e.g. tests.helpers.corpus)")
    args = ap.parse_args()
    for mod in args.imports:
        importlib.import_module(mod)
    torch.set_num_threads(args.threads)
    model = load_model(args.run_dir).eval()
    wm = WaveformModel(FrontEnd.from_run(args.run_dir), model).eval()
    test = load_subset(args.run_dir, "test")
    rows = select_subset(test.meta, args.limit, args.seed)
    x = segment_waveforms(args.run_dir, test.meta.iloc[rows].reset_index(drop=True))
    y = np.asarray(test.y[rows], np.int64)
    pgd = {"snr_db": args.snr, "max_iter": args.max_iter, "step_frac": args.step_frac, "seed": args.seed,
           "batch_size": args.batch_size}

    none = DefendedModel(build_transform("quantize", bits=16), wm)  # the 16-bit file itself: no defence
    t = time.perf_counter()
    x_na = delivered(non_adaptive_attack(none, x, y, norm="snr", **pgd).x_adv)
    s_na = time.perf_counter() - t
    clean0, rob0 = correct(none, x, y, args.seed), correct(none, x_na, y, args.seed)
    print(f"n={len(y)} segments, SNR-PGD at {args.snr:g} dB, {args.max_iter} steps of {args.step_frac:g}, "
          f"EOT {args.eot} draws for random transformations; attacks delivered as 16-bit PCM")
    print("| defence | kind | clean | robust non-adaptive | robust adaptive | robust worst case | s (attack) |")
    print("|---|---|---|---|---|---|---|")
    r0 = f"{rob0.mean():.3f}"
    print(f"| none | - | {clean0.mean():.3f} | {r0} | {r0} | {r0} | {s_na:.0f} |", flush=True)
    for name, params in DEFAULTS:
        if name in ("vorbis", "mp3") and not codec_available(name):
            print(f"| {name} | skipped: this libsndfile cannot write it | | | | | |", flush=True)
            continue
        try:
            tr = build_transform(name, sample_rate=wm.frontend.sample_rate, **params)
        except ConfigError as e:
            print(f"| {name} | skipped: {e} | | | | | |", flush=True)
            continue
        d = DefendedModel(tr, wm, seed=args.seed)
        kind = ("exact" if tr.differentiable else "BPDA") + (f" + EOT {args.eot}" if tr.random else "")
        t = time.perf_counter()
        x_ad = delivered(adaptive_attack(d, x, y, norm="snr", eot_samples=args.eot if tr.random else 1, **pgd).x_adv)
        s_ad = time.perf_counter() - t
        clean = correct(d, x, y, args.seed)
        r_na, r_ad = correct(d, x_na, y, args.seed), correct(d, x_ad, y, args.seed)
        print(f"| {tr.describe()} | {kind} | {clean.mean():.3f} | {r_na.mean():.3f} | {r_ad.mean():.3f} | "
              f"{(r_na & r_ad).mean():.3f} | {s_ad:.0f} |", flush=True)


if __name__ == "__main__":
    main()
