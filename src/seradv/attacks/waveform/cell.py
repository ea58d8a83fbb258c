"""One grid cell of a waveform attack on a trained run: per-sample rows in the grid's columns.

Not yet wired into :func:`seradv.grid.run.run_grid` (see the module's ``WAVEFORM_GRIDS`` for
the planned grids). :func:`waveform_attack_cell` cuts the audio of the cell's segments
(:func:`~seradv.attacks.waveform.segments.segment_waveforms`), attacks it through
:class:`~seradv.frontend.WaveformModel` (``FrontEnd.from_run`` + the run's model), writes the
adversarial waveforms as 16-bit WAVs and classifies the *files* through the numpy pipeline
(:func:`~seradv.attacks.waveform.realize.realized_predictions`). ``pred_adv`` (and so
``robust`` / ``fooled_any``) is the prediction on the written files; ``pred_adv_float`` is the
attack's own float-tensor verdict. Feature-space norms (``mean_abs``, ``l2``, ``linf``, ``l0``)
are those of the written files' features against the clean features; ``snr_db``,
``segsnr_db`` and ``linf_dbfs`` measure the written waveform against the clean one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from seradv.attacks.metrics import perturbation_norms
from seradv.attacks.waveform.metrics import segmental_snr_db, snr_db
from seradv.attacks.waveform.pgd import pgd_linf_waveform, pgd_snr_waveform
from seradv.attacks.waveform.realize import numpy_features, read_wavs, write_pcm16_wavs
from seradv.attacks.waveform.segments import segment_waveforms
from seradv.errors import ParameterError
from seradv.evaluation import predict_logits, softmax
from seradv.frontend import FrontEnd, WaveformModel
from seradv.grid.results import robust_flags
from seradv.prepare import SplitData, read_standardizer

__all__ = ["WAVEFORM_ATTACKS", "WAVEFORM_GRIDS", "waveform_attack_cell"]

WAVEFORM_ATTACKS = {"pgd_linf_wave": pgd_linf_waveform, "pgd_snr_wave": pgd_snr_waveform}
"""Waveform attacks by grid name."""

WAVEFORM_GRIDS: dict[str, dict[str, tuple[dict[str, Any], ...]]] = {
    "pgd_linf_wave": {
        "quick": ({"eps_dbfs": -40.0, "step_frac": 0.25, "max_iter": 10},),
        "standard": tuple({"eps_dbfs": d, "step_frac": 0.1, "max_iter": 50} for d in (-60.0, -50.0, -40.0)),
    },
    "pgd_snr_wave": {
        "quick": ({"snr_db": 30.0, "step_frac": 0.25, "max_iter": 10},),
        "standard": tuple({"snr_db": s, "step_frac": 0.1, "max_iter": 50} for s in (40.0, 30.0, 20.0)),
    },
}
"""The issue's grids: quick, and standard (SNR 40 / 30 / 20 dB; L-inf -60 / -50 / -40 dBFS)."""


def waveform_attack_cell(run_dir: str | Path, model: torch.nn.Module, data: SplitData, attack: str,
                         params: dict[str, Any], *, wav_dir: str | Path, seed: int = 0, batch_size: int = 16,
                         device: str = "cpu") -> tuple[pd.DataFrame, dict]:
    """Per-sample results ``[one row per segment of data]`` and run facts of one waveform cell.

    ``data`` is the (subset of the) run's test split as the grid loads it; the clean predictions
    come from its features (``data.x``). Files go to ``wav_dir/<segment_id>.wav``.
    """
    if attack not in WAVEFORM_ATTACKS:
        raise ParameterError(f"unknown waveform attack {attack!r}; choose one of {', '.join(WAVEFORM_ATTACKS)}")
    fe = FrontEnd.from_run(run_dir).to(device)
    model = model.to(device).eval()
    wm = WaveformModel(fe, model).eval()
    wav = segment_waveforms(run_dir, data.meta)
    t0 = time.perf_counter()
    res = WAVEFORM_ATTACKS[attack](wm, wav, data.y, seed=seed, batch_size=batch_size, **params)
    seconds = time.perf_counter() - t0
    names = [str(s) for s in data.meta["segment_id"]]
    written = read_wavs(write_pcm16_wavs(res.x_adv, wav_dir, names, sample_rate=fe.sample_rate),
                        sample_rate=fe.sample_rate)
    z_adv = numpy_features(written, sample_rate=fe.sample_rate, features=fe.features,
                           standardizer=read_standardizer(run_dir))
    clean_logits = predict_logits(model, data.x, batch_size=batch_size, device=device).astype(np.float64)
    adv_logits = predict_logits(model, z_adv, batch_size=batch_size, device=device).astype(np.float64)
    pc, pa = softmax(clean_logits), softmax(adv_logits)
    y = data.y
    samples = data.meta[["segment_id", "utterance", "speaker", "gender", "emotion", "corpus", "language"]].copy()
    samples["label"] = y
    samples["pred_clean"] = clean_logits.argmax(1)
    samples["pred_adv"] = adv_logits.argmax(1)
    with torch.no_grad():
        samples["pred_adv_float"] = wm(torch.as_tensor(res.x_adv, device=device)).argmax(1).cpu().numpy()
    samples["conf_clean"] = pc.max(1)
    samples["conf_adv"] = pa.max(1)
    samples["loss_clean"] = -np.log(np.clip(pc[np.arange(len(y)), y], 1e-12, None))
    samples["loss_adv"] = -np.log(np.clip(pa[np.arange(len(y)), y], 1e-12, None))
    for k, v in perturbation_norms(data.x, z_adv).items():
        samples[k] = v
    samples["snr_db"] = snr_db(wav, written)
    samples["segsnr_db"] = segmental_snr_db(wav, written)
    peak = np.abs(written.astype(np.float64) - wav).max(1)
    with np.errstate(divide="ignore"):
        samples["linf_dbfs"] = 20.0 * np.log10(peak)
    samples["attacked"] = True
    samples["fooled_any"] = samples["pred_adv"].to_numpy() != y  # realizability: the written files decide
    samples["robust"] = robust_flags(samples)
    facts = {"seconds": seconds, "n_queries": None, "n_grads": None, "backend": "torch", "early_stop": False,
             "input": "waveform", "float_success_rate": float(np.mean(res.success))}
    return samples.reset_index(drop=True), facts
