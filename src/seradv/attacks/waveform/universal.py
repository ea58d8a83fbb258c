"""A universal waveform perturbation: one ``v [shape=(n_samples,)]`` per model, added to every segment.

Paper: Moosavi-Dezfooli, Fawzi, Fawzi, Frossard (2017), "Universal adversarial perturbations",
https://arxiv.org/abs/1610.08401; for audio, Neekhara et al. (2019), "Universal adversarial
perturbations for speech recognition systems", https://arxiv.org/abs/1905.03828. Here learned
by projected stochastic gradient ascent of the mean cross-entropy (not the papers' DeepFool
iteration):

* Data: a seeded subset of ``n_train`` of the run's TRAINING segments (stratified by gender x
  emotion, :func:`seradv.grid.plan.select_subset`; augmented variants included, they are
  training data too), cut from the audio as ``seradv prepare`` cut them
  (:func:`~seradv.attacks.waveform.segments.segment_waveforms`). The test speakers' audio is
  never seen.
* Budget (one meaning for all segments): the *reference level* is the mean RMS of those
  training segments, ``ref = mean_i sqrt(mean_t x_i[t] ** 2)``, and ``v`` is kept in the L2
  ball ``||v||_2 <= sqrt(n_samples) * ref * 10 ** (-snr_db / 20)``, i.e.
  ``SNR_ref = 20 log10(ref / rms(v)) >= snr_db`` (shrunk by 1e-6 relative against float
  rounding). A segment quieter than ``ref`` hears ``v`` at a lower SNR than ``snr_db``: the
  per-segment SNR of each test segment (``10 log10(||x||^2 / ||written - x||^2)``, with the
  clipping and 16-bit rounding of the file) is reported beside it.
* Steps: each step draws ``batch_size`` training segments (seeded), takes the gradient ``g`` of
  the mean cross-entropy of ``clip(x + v, -1, 1)`` with respect to ``v`` through
  :class:`~seradv.frontend.WaveformModel`, steps ``v += a_t g / ||g||_2`` and projects on the
  ball; ``a_t`` decays linearly from ``step_frac * radius`` to a tenth of it. The last iterate
  is returned.
* Evaluation on the held-out TEST segments (all, or a seeded stratified ``limit``):
  ``clip(x + v, -1, 1)`` written as 16-bit WAVs, read back and classified through the numpy
  feature pipeline (:func:`~seradv.attacks.waveform.realize.realized_predictions`); clean
  predictions from the prepared test features, as the grid's cells. ``fooling_rate``: share of
  the clean-correct test segments misclassified on the files (the grid's ``success_rate``);
  ``flip_rate``: share whose prediction changed (Moosavi-Dezfooli et al.'s fooling rate);
  ``robust_accuracy``: correct clean and on the file. A control: a Gaussian perturbation with
  the same L2 norm as ``v`` (seeded), evaluated the same way (``random_*``).

Layout (:func:`universal_run`), written into a temporary folder and renamed into place::

    RUN/attacks/universal/snr<snr_db>/
        universal.json   the facts: settings, fingerprints, budget, rates, SNR (written last)
        v.npy            v [shape=(n_samples,)] float32
        v.wav            v as a 16-bit WAV at its true level; v_loud.wav peak-normalised to -1 dBFS
        samples.csv      one row per test segment (predictions, per-segment SNR, STOI, ...)
        wav/<segment_id>.wav, wav_random/<segment_id>.wav   the written test segments

reused while the settings and the run's model and preparation fingerprints
(:func:`seradv.rundir.run_fingerprints`) are unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seradv.attacks.context import gradient_context
from seradv.attacks.waveform.cell import perceptual_columns
from seradv.attacks.waveform.pgd import _model_device
from seradv.attacks.waveform.realize import read_wavs, realized_predictions, write_pcm16_wavs
from seradv.attacks.waveform.segments import segment_waveforms
from seradv.errors import ParameterError, RunDirError
from seradv.evaluation import predict_logits
from seradv.fileio import atomic_write_json, atomic_write_text, npy_is_complete, read_json, save_npy
from seradv.frontend import FrontEnd, WaveformModel
from seradv.grid.plan import select_subset
from seradv.prepare import load_subset, read_segments, read_standardizer
from seradv.rundir import attacks_dir, load_model, run_fingerprints

log = logging.getLogger(__name__)

__all__ = ["FACTS_JSON", "SAMPLES_CSV", "UNIVERSAL_DIR", "add_perturbation", "budget_radius", "learn_universal",
           "reference_rms", "universal_dir", "universal_run"]

UNIVERSAL_DIR = "universal"
FACTS_JSON = "universal.json"
SAMPLES_CSV = "samples.csv"
WAV_SUBDIR = "wav"
RANDOM_SUBDIR = "wav_random"


def universal_dir(run_dir: str | Path, snr_db: float) -> Path:
    """``RUN/attacks/universal/snr<snr_db>`` (``snr30``, ``snr27.5``)."""
    return attacks_dir(run_dir) / UNIVERSAL_DIR / f"snr{float(snr_db):g}"


def reference_rms(waves: np.ndarray) -> float:
    """The reference level: mean over segments of each segment's RMS, of ``waves [shape=(n, n_samples)]``."""
    w = np.asarray(waves, np.float64)
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise ParameterError(f"waveforms must have shape (n, n_samples) with n >= 1, got {w.shape}")
    ref = float(np.sqrt((w * w).mean(1)).mean())
    if not ref > 0:
        raise ParameterError("the reference waveforms are all silent: no SNR budget")
    return ref


def budget_radius(reference: float, snr_db: float, n_samples: int) -> float:
    """L2 radius ``sqrt(n_samples) * reference * 10 ** (-snr_db / 20)`` (shrunk by 1e-6 relative)."""
    if not math.isfinite(snr_db):
        raise ParameterError(f"snr_db={snr_db} must be finite")
    if not (math.isfinite(reference) and reference > 0):
        raise ParameterError(f"reference={reference} must be a positive RMS level")
    return float(math.sqrt(int(n_samples)) * reference * 10.0 ** (-snr_db / 20.0) * (1.0 - 1e-6))


def add_perturbation(waves: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``clip(waves + v, -1, 1)`` ``[shape=(n, n_samples)]`` float32 (``v [shape=(n_samples,)]``)."""
    w = np.asarray(waves, np.float32)
    v = np.asarray(v, np.float32)
    if w.ndim != 2 or v.shape != (w.shape[1],):
        raise ParameterError(f"perturbation of shape {v.shape} does not fit waveforms of shape {w.shape}")
    return np.clip(w + v[None], -1.0, 1.0)


def _project(v: torch.Tensor, radius: float) -> torch.Tensor:
    nrm = float(v.norm())
    return v * (radius / nrm) if nrm > radius else v


def learn_universal(wm: nn.Module, waves: np.ndarray, labels: np.ndarray, *, snr_db: float, steps: int = 200,
                    batch_size: int = 16, seed: int = 0, step_frac: float = 0.1,
                    reference: float | None = None) -> np.ndarray:
    """A universal perturbation ``v [shape=(n_samples,)]`` float32 (module docstring).

    Parameters
    ----------
    wm : nn.Module
        A :class:`~seradv.frontend.WaveformModel` (waveforms ``[shape=(b, n_samples)]`` -> logits);
        its device is used, it runs in eval mode and its train flag is restored.
    waves : array ``[shape=(n, n_samples)]`` float in ``[-1, 1]``, the training segments
    labels : array ``[shape=(n,)]`` int, their true labels
    snr_db : float
        ``20 log10(reference / rms(v))`` is at least this.
    steps, batch_size : int
        Gradient steps, and segments per step (all of them when fewer).
    seed : int
        Seed of the batch draws.
    step_frac : float
        First step's L2 length as a fraction of the budget's radius, in ``(0, 1]``.
    reference : float or None
        The reference RMS level; ``None``: :func:`reference_rms` of ``waves``.
    """
    x = np.array(waves, np.float32)  # a writable copy (torch.from_numpy below)
    y = np.array(labels, np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] < 1:
        raise ParameterError(f"waveforms {x.shape} and labels {y.shape} must be (n, n_samples) and (n,), n >= 1")
    if not np.isfinite(x).all() or np.abs(x).max() > 1.0:
        raise ParameterError("waveforms must be finite and inside [-1, 1]")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"{name}={value!r} must be an integer >= 1")
    if not 0.0 < step_frac <= 1.0:
        raise ParameterError(f"step_frac={step_frac} must be in (0, 1]")
    ref = reference_rms(x) if reference is None else float(reference)
    radius = budget_radius(ref, snr_db, x.shape[1])
    device = _model_device(wm)
    rng = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    v = torch.zeros(x.shape[1], dtype=torch.float32, device=device)
    was_training = wm.training
    wm.eval()
    try:
        with gradient_context(device):
            for t in range(int(steps)):
                idx = rng.choice(len(x), size=min(int(batch_size), len(x)), replace=False)
                xb, yb = xt[idx].to(device), yt[idx].to(device)
                va = v.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = nn.functional.cross_entropy(wm((xb + va).clamp(-1.0, 1.0)).float(), yb)
                    (grad,) = torch.autograd.grad(loss, va)
                grad = torch.nan_to_num(grad, nan=0.0)
                g = float(grad.norm())
                if g == 0.0:
                    continue
                step = step_frac * radius * (1.0 - 0.9 * t / max(int(steps) - 1, 1))
                v = _project(v + step * grad / g, radius).detach()
    finally:
        wm.train(was_training)
    return v.cpu().numpy().astype(np.float32)


# ---------------------------------------------------------------------------------- a run's universal perturbation


def _settings(snr_db: float, n_train: int, limit: int | None, seed: int, steps: int, batch_size: int,
              step_frac: float) -> dict[str, Any]:
    return {"snr_db": float(snr_db), "n_train": int(n_train), "limit": None if limit is None else int(limit),
            "seed": int(seed), "steps": int(steps), "batch_size": int(batch_size), "step_frac": float(step_frac)}


def _reusable(out: Path, settings: dict, fingerprint: dict) -> dict | None:
    """The facts of a finished folder computed with ``settings`` on ``fingerprint``, else ``None``."""
    path = out / FACTS_JSON
    if not path.is_file():
        return None
    try:
        facts = read_json(path)
        ok = (facts["settings"] == settings and facts["fingerprint"] == fingerprint
              and npy_is_complete(out / "v.npy")
              and len(list((out / WAV_SUBDIR).glob("*.wav"))) == int(facts["n_test"])
              and (out / SAMPLES_CSV).is_file())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return facts if ok else None


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out`` (an older ``out`` is moved aside first, then removed)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _rates(label: np.ndarray, clean: np.ndarray, adv: np.ndarray) -> dict[str, float]:
    ok = clean == label
    return {"robust_accuracy": float(np.mean(ok & (adv == label))),
            "fooling_rate": float(np.mean(adv[ok] != label[ok])) if ok.any() else float("nan"),
            "flip_rate": float(np.mean(adv != clean))}


def _finite_stats(values: np.ndarray, prefix: str) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {f"{prefix}_{k}": float("nan") for k in ("mean", "min", "max")}
    return {f"{prefix}_mean": float(v.mean()), f"{prefix}_min": float(v.min()), f"{prefix}_max": float(v.max())}


def universal_run(run_dir: str | Path, *, snr_db: float = 30.0, n_train: int = 256, limit: int | None = None,
                  seed: int = 0, steps: int = 200, batch_size: int = 16, step_frac: float = 0.1,
                  device: str = "cpu") -> dict[str, Any]:
    """Learn, write and evaluate a trained run's universal perturbation (module docstring); return its facts.

    Parameters
    ----------
    run_dir : path
        A trained run (one fold's directory of a speaker-fold CV run).
    snr_db : float
        The budget relative to the reference level (the training segments' mean RMS).
    n_train : int
        Training segments learned on (a seeded stratified subset; all when fewer).
    limit : int or None
        Test segments evaluated on (seeded stratified subset); ``None``: every test segment.
    seed, steps, batch_size, step_frac : as :func:`learn_universal` (``seed`` also draws the
        subsets and the random control)
    device : str
        Torch device of the learning and of the classification.

    Returns
    -------
    dict: the content of ``universal.json`` (``settings``, ``fingerprint``, ``reference_rms``,
    ``v_rms``, ``snr_ref_db``, ``n_train``, ``n_test``, ``clean_accuracy``, ``robust_accuracy``,
    ``fooling_rate``, ``flip_rate``, the ``random_*`` control, per-segment SNR and STOI stats ...).
    """
    run_dir = Path(run_dir)
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
        raise ParameterError(f"n_train={n_train!r} must be an integer >= 1")
    settings = _settings(snr_db, n_train, limit, seed, steps, batch_size, step_frac)
    fe = FrontEnd.from_run(run_dir)  # refuses a CV run's top folder with a one-line error
    fingerprint = run_fingerprints(run_dir)
    if fingerprint["model"] is None:
        raise RunDirError(f"{run_dir} has no trained model (model.safetensors); run `seradv train {run_dir}`")
    out = universal_dir(run_dir, snr_db)
    facts = _reusable(out, settings, fingerprint)
    if facts is not None:
        log.info("universal perturbation at SNR %g dB reused from %s", snr_db, out)
        return facts
    model = load_model(run_dir, device=device)
    wm = WaveformModel(fe.to(device), model).eval()
    segs = read_segments(run_dir)
    train_meta = segs[segs["subset"] == "train"].reset_index(drop=True)
    if train_meta.empty:
        raise RunDirError(f"{run_dir}: the train subset is empty")
    train_meta = train_meta.iloc[select_subset(train_meta, int(n_train), seed)].reset_index(drop=True)
    x_train = segment_waveforms(run_dir, train_meta)
    ref = reference_rms(x_train)
    v = learn_universal(wm, x_train, train_meta["label"].to_numpy(np.int64), snr_db=snr_db, steps=steps,
                        batch_size=batch_size, seed=seed, step_frac=step_frac, reference=ref)

    test = load_subset(run_dir, "test")
    pos = select_subset(test.meta, limit, seed)
    meta = test.meta.iloc[pos].reset_index(drop=True)
    y = test.y[pos]
    clean_pred = predict_logits(model, test.x[pos], device=device).argmax(1)
    x_test = segment_waveforms(run_dir, meta)
    g = np.random.default_rng([seed, 1]).standard_normal(v.shape[0])
    v_random = (g * (np.linalg.norm(v.astype(np.float64)) / np.linalg.norm(g))).astype(np.float32)
    names = [str(s) for s in meta["segment_id"]]
    kw = dict(model=model, sample_rate=fe.sample_rate, features=fe.features, standardizer=read_standardizer(run_dir),
              device=device)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        adv_pred, paths = realized_predictions(add_perturbation(x_test, v), tmp / WAV_SUBDIR, names, **kw)
        rnd_pred, _ = realized_predictions(add_perturbation(x_test, v_random), tmp / RANDOM_SUBDIR, names, **kw)
        written = read_wavs(paths, sample_rate=fe.sample_rate)
        samples = meta[["segment_id", "utterance", "speaker", "gender", "emotion", "corpus", "language"]].copy()
        samples["label"] = y
        samples["pred_clean"] = clean_pred
        samples["pred_adv"] = adv_pred
        samples["pred_random"] = rnd_pred
        for k, col in perceptual_columns(x_test, written, fe.sample_rate).items():
            samples[k] = col
        samples["robust"] = (clean_pred == y) & (adv_pred == y)
        save_npy(tmp / "v.npy", v)
        write_pcm16_wavs(v[None], tmp, ["v"], sample_rate=fe.sample_rate)
        peak = float(np.abs(v).max())
        loud = v * (10 ** (-1 / 20) / peak) if peak > 0 else v
        write_pcm16_wavs(loud[None], tmp, ["v_loud"], sample_rate=fe.sample_rate)
        atomic_write_text(tmp / SAMPLES_CSV, samples.to_csv(index=False))
        v_rms = float(np.sqrt(np.mean(v.astype(np.float64) ** 2)))
        facts = {
            "settings": settings, "fingerprint": fingerprint,
            "reference": "mean RMS of the n_train training segments",
            "reference_rms": ref, "reference_dbfs": 20 * math.log10(ref), "v_rms": v_rms,
            "v_peak_dbfs": 20 * math.log10(peak) if peak > 0 else float("-inf"),
            "snr_ref_db": 20 * math.log10(ref / v_rms) if v_rms > 0 else float("inf"),
            "n_train": int(len(train_meta)), "n_test": int(len(meta)),
            "clean_accuracy": float(np.mean(clean_pred == y)),
            **_rates(y, clean_pred, adv_pred),
            **{f"random_{k}": val for k, val in _rates(y, clean_pred, rnd_pred).items()},
            **_finite_stats(samples["snr_db"].to_numpy(), "segment_snr_db"),
            "mean_stoi": float(np.nanmean(samples["stoi"])),
        }
        atomic_write_json(tmp / FACTS_JSON, facts)
        _publish(tmp, out)
        facts = read_json(out / FACTS_JSON)  # what a reuse returns, to the bit (NaN, inf as JSON gives them)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("universal perturbation at SNR %g dB (ref %.4f RMS): fooling rate %.3f on %d test segments "
             "(random control %.3f)", snr_db, ref, facts["fooling_rate"], facts["n_test"], facts["random_fooling_rate"])
    return facts
