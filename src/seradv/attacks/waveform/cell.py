"""One grid cell of a waveform attack on a trained run: per-sample rows in the grid's columns.

:func:`seradv.grid.run.run_grid` runs every cell of an attack with ``input="waveform"``
(:mod:`seradv.attacks.waveform.specs`) through :func:`waveform_attack_cell`, with the files in
``RUN/attacks/wav/<cell_id>/``. It cuts the audio of the cell's segments
(:func:`~seradv.attacks.waveform.segments.segment_waveforms`), attacks it through
:class:`~seradv.frontend.WaveformModel` (``FrontEnd.from_run`` + the run's model) with the
attack's registered backend, writes the adversarial waveforms as 16-bit WAVs and classifies the
*files* through the numpy pipeline (:func:`~seradv.attacks.waveform.realize.numpy_features`).
``pred_adv`` (and so ``robust`` / ``fooled_any``) is the prediction on the written files;
``pred_adv_float`` is the attack's own float-tensor verdict. Feature-space norms (``mean_abs``,
``l2``, ``linf``, ``l0``) are those of the written files' features against the clean features
(the grid's clean features, clipped to the run's threat box like every cell's); ``snr_db``,
``segsnr_db``, ``linf_dbfs``, ``stoi`` (and ``pesq`` where the optional package is installed,
wide band, 16 kHz) measure the written waveform against the clean one
(:mod:`seradv.attacks.waveform.metrics`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from seradv.attacks.context import kept_memory
from seradv.attacks.metrics import perturbation_norms
from seradv.attacks.spec import ATTACKS, get_attack
from seradv.attacks.waveform.metrics import (PESQ_SAMPLE_RATE, pesq_available, pesq_scores, segmental_snr_db, snr_db,
                                             stoi_scores)
from seradv.attacks.waveform.realize import fit_full_scale, numpy_features, read_wavs, write_pcm16_wavs
from seradv.attacks.waveform.segments import segment_waveforms
from seradv.errors import ParameterError
from seradv.evaluation import predict_logits, softmax
from seradv.frontend import FrontEnd, WaveformModel
from seradv.grid.results import robust_flags
from seradv.prepare import SplitData, read_standardizer

__all__ = ["WAVEFORM_ATTACKS", "WAVEFORM_GRIDS", "perceptual_columns", "waveform_attack_cell"]

WAVEFORM_ATTACKS = {n: s.backends[s.default_backend] for n, s in ATTACKS.items() if s.input == "waveform"}
"""Waveform attacks by registry name: their default backend's attack function (a view of the registry)."""

WAVEFORM_GRIDS: dict[str, dict[str, tuple[dict[str, Any], ...]]] = {
    n: {"quick": s.quick_grid, "standard": s.standard_grid} for n, s in ATTACKS.items() if s.input == "waveform"
}
"""The waveform attacks' grids (a view of the registry): quick, and standard (SNR 40 / 30 / 20 dB;
L-inf -60 / -50 / -40 dBFS)."""


def perceptual_columns(clean: np.ndarray, written: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
    """Per-sample measures of the written waveforms against the clean ones, each ``[shape=(n,)]``:
    ``snr_db``, ``segsnr_db``, ``linf_dbfs`` (peak |delta| in dBFS, ``-inf`` when unchanged),
    ``stoi``, and ``pesq`` (wide band) when the ``pesq`` package is importable and the rate is 16 kHz."""
    clean = np.asarray(clean, np.float64)
    written = np.asarray(written, np.float64)
    peak = np.abs(written - clean).max(1) if clean.size else np.zeros(len(clean))
    with np.errstate(divide="ignore"):
        linf_dbfs = 20.0 * np.log10(peak)
    out = {"snr_db": snr_db(clean, written), "segsnr_db": segmental_snr_db(clean, written), "linf_dbfs": linf_dbfs,
           "stoi": stoi_scores(clean, written, sample_rate)}
    if pesq_available() and int(sample_rate) == PESQ_SAMPLE_RATE:
        out["pesq"] = pesq_scores(clean, written, sample_rate)
    return out


def _float_predictions(wm: WaveformModel, x_adv: np.ndarray, batch_size: int, device: str) -> np.ndarray:
    """The waveform model's top class of each float waveform ``[shape=(n,)]`` int64, in batches."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(x_adv), batch_size):
            out.append(wm(torch.as_tensor(x_adv[i:i + batch_size], device=device)).argmax(1).cpu().numpy())
    return np.concatenate(out).astype(np.int64)


def waveform_attack_cell(run_dir: str | Path, model: torch.nn.Module, data: SplitData, attack: str,
                         params: dict[str, Any], *, wav_dir: str | Path, seed: int = 0, batch_size: int = 16,
                         device: str = "cpu", backend: str | None = None,
                         clean_logits: np.ndarray | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-sample results ``[one row per segment of data]`` and run facts of one waveform cell.

    Parameters
    ----------
    run_dir : path
        The trained run (its front end, standardizer and audio).
    model : nn.Module
        The run's feature-space model.
    data : SplitData
        The (subset of the) run's test split as the grid loads it; the clean predictions come
        from its features ``data.x [shape=(n, T, n_mels)]`` (or ``clean_logits [shape=(n, k)]``).
    attack, params : a registered attack with ``input="waveform"`` and its parameters (validated)
    wav_dir : path
        Where the adversarial files go (``wav_dir/<segment_id>.wav``, 16-bit PCM).
    seed, batch_size, device : the attack's seed, waveforms per pass, torch device
    backend : str or None
        The attack's backend (``None``: its default).

    Returns
    -------
    (samples, facts): the per-sample frame (the grid's columns, then ``pred_adv_float`` and the
    perceptual columns of :func:`perceptual_columns`, ``attacked``, ``fooled_any``, ``robust``
    last) and the run facts (``seconds``, ``backend``, ``input``, ``float_success_rate`` ...).
    """
    spec = get_attack(attack)
    if spec.input != "waveform":
        raise ParameterError(f"{spec.name} attacks {spec.input}, not the waveform; waveform attacks: "
                             f"{', '.join(WAVEFORM_ATTACKS)}")
    params = spec.validate(params)
    backend = spec.default_backend if backend is None else backend
    if backend not in spec.backends:
        raise ParameterError(f"{spec.name}: backend={backend!r} is not available; choose one of "
                             f"{', '.join(spec.backends)}")
    fe = FrontEnd.from_run(run_dir).to(device)
    model = model.to(device).eval()
    wm = WaveformModel(fe, model).eval()
    wav, gain_db = fit_full_scale(segment_waveforms(run_dir, data.meta))  # attacks start inside [-1, 1]
    t0 = time.perf_counter()
    with kept_memory(spec.kind):
        res = spec.backends[backend](wm, wav, data.y, seed=seed, batch_size=batch_size, **params)
    seconds = time.perf_counter() - t0
    names = [str(s) for s in data.meta["segment_id"]]
    written = read_wavs(write_pcm16_wavs(res.x_adv, wav_dir, names, sample_rate=fe.sample_rate),
                        sample_rate=fe.sample_rate)
    z_adv = numpy_features(written, sample_rate=fe.sample_rate, features=fe.features,
                           standardizer=read_standardizer(run_dir))
    if clean_logits is None:
        clean_logits = predict_logits(model, data.x, batch_size=batch_size, device=device)
    clean_logits = np.asarray(clean_logits, np.float64)
    adv_logits = predict_logits(model, z_adv, batch_size=batch_size, device=device).astype(np.float64)
    pc, pa = softmax(clean_logits), softmax(adv_logits)
    y = data.y
    samples = data.meta[["segment_id", "utterance", "speaker", "gender", "emotion", "corpus", "language"]].copy()
    samples["label"] = y
    samples["pred_clean"] = clean_logits.argmax(1)
    samples["pred_adv"] = adv_logits.argmax(1)
    samples["pred_adv_float"] = _float_predictions(wm, res.x_adv, batch_size, device)
    samples["conf_clean"] = pc.max(1)
    samples["conf_adv"] = pa.max(1)
    samples["loss_clean"] = -np.log(np.clip(pc[np.arange(len(y)), y], 1e-12, None))
    samples["loss_adv"] = -np.log(np.clip(pa[np.arange(len(y)), y], 1e-12, None))
    for k, v in perturbation_norms(data.x, z_adv).items():
        samples[k] = v
    for k, v in perceptual_columns(wav, written, fe.sample_rate).items():
        samples[k] = v
    samples["clean_gain_db"] = gain_db  # < 0 where the clean segment was scaled into [-1, 1]
    samples["attacked"] = True
    samples["fooled_any"] = samples["pred_adv"].to_numpy() != y  # realizability: the written files decide
    samples["robust"] = robust_flags(samples)
    n_grads = int(params["max_iter"]) * len(y) if "max_iter" in params else None  # one backward pass per step
    facts = {"seconds": seconds, "n_queries": None, "n_grads": n_grads, "backend": backend, "early_stop": False,
             "input": "waveform", "float_success_rate": float(np.mean(res.success))}
    return samples.reset_index(drop=True), facts
