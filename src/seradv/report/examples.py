"""The report's examples to look at and listen to, computed before the report is rendered.

Per run: pick a few attacks at their strongest setting (one white-box and one black-box first),
pick one test segment that all of them attacked (clean correct, fooled by as many as possible),
draw its spectrograms (original, adversarial, difference), re-run the model on every version,
and render every version as audio (:func:`seradv.features.features_to_audio`, Griffin-Lim) into
``audio/*.wav``. The result, :class:`RunExamples`, describes files that exist; the section
(:mod:`seradv.report.sections.examples`) only describes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from seradv.attacks import ATTACKS
from seradv.fileio import load_npy
from seradv.prepare import load_subset, read_segments
from seradv.errors import ParameterError, RunDirError
from seradv.evaluation import predict_logits
from seradv.features import Standardizer, features_to_audio
from seradv.report import analysis, plots
from seradv.report.data import RunData
from seradv.report.render import slug
from seradv.attacks.waveform.segments import segment_waveforms
from seradv.rundir import load_model, load_run_config, wav_dir

log = logging.getLogger(__name__)

__all__ = ["RunExamples", "Spectrogram", "WaveExample", "compute_examples", "compute_wave_examples", "clip_outliers",
           "write_wavs"]


@dataclass(frozen=True)
class Spectrogram:
    """A written figure of one attacked version of the example segment."""

    path: str
    """Relative to the report folder (``figures/example-...png``)."""
    attack: str
    params: str
    series: str
    mean_abs_delta: float
    max_abs_delta: float


@dataclass
class RunExamples:
    """The example of one run, or ``note``: why it has none (then nothing else is set)."""

    run: str
    note: str = ""
    segment: int = -1
    facts: dict = field(default_factory=dict)
    """``utterance``, ``corpus``, ``language``, ``speaker``, ``emotion`` of the segment."""
    spectrograms: list[Spectrogram] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    """One per version of the segment: the original, then per attack adversarial and clipped."""
    predicted: list[str] | None = None
    """The class the model predicts for each version (``None``: the model could not be loaded)."""
    audio: list[tuple[str, str]] | None = None
    """``(label, relative wav path)`` per version (``None``: audio not asked for)."""
    sample_rate: int = 0


def clip_outliers(delta: np.ndarray, *, quantile: float = 0.99) -> tuple[np.ndarray, float]:
    """The perturbation with its outliers clipped: ``|delta|`` limited to its ``quantile``.

    Returns the clipped perturbation and the limit. Sparse attacks (few large changes) and
    attacks that leave a few extreme cells are made audible this way without the clicks
    the extremes produce.
    """
    if not 0 < quantile <= 1:
        raise ParameterError(f"quantile={quantile} must be in (0, 1]")
    delta = np.asarray(delta, np.float32)
    limit = float(np.quantile(np.abs(delta), quantile))
    if limit == 0.0:  # a sparse perturbation: keep its non-zero part, limited to its own quantile
        nz = np.abs(delta[delta != 0])
        limit = float(np.quantile(nz, quantile)) if nz.size else 0.0
    return np.clip(delta, -limit, limit), limit


def write_wavs(signals: dict[str, np.ndarray], folder: Path, *, sr: int, peak: float = 0.9) -> dict[str, Path]:
    """Write ``{name: audio}`` as 16-bit wav files with one common gain (loudest peak = ``peak``)."""
    folder.mkdir(parents=True, exist_ok=True)
    top = max((float(np.abs(y).max()) for y in signals.values() if y.size), default=0.0)
    gain = peak / top if top > 0 else 1.0
    out = {}
    for name, y in signals.items():
        path = folder / f"{name}.wav"
        sf.write(path, np.clip(y * gain, -1, 1), sr, subtype="PCM_16")
        out[name] = path
    return out


def _fooled_counts(samples: dict[str, pd.DataFrame]) -> dict[int, int]:
    """Per segment every cell attacked and the model got right when clean: how many of the
    cells fooled it (the example is the segment fooled by the most)."""
    common = set.intersection(*[set(s["segment_id"]) for s in samples.values()])
    score: dict[int, int] = {}
    for sid in sorted(common):
        rows = [s[s["segment_id"] == sid].iloc[0] for s in samples.values()]
        if all(r["pred_clean"] == r["label"] for r in rows):
            score[sid] = sum(int(r["pred_adv"] != r["label"]) for r in rows)
    return score


def _strongest_cells(rows: pd.DataFrame):
    """``(attack, series, rows of its strongest setting, that cell's id)`` per attack series of
    ``rows`` (results-table rows; series without a strongest setting are left out)."""
    for attack, series, part in analysis.series_rows(rows):
        pj = analysis.strongest(part)
        if pj is not None:
            at = part[part["params_json"] == pj]
            yield attack, series, at, at["cell_id"].iloc[0]


def _pick_attacks(run: RunData, table: pd.DataFrame, n_examples: int) -> list[dict]:
    """Up to ``n_examples`` attacks (strongest setting, one white-box and one black-box first)."""
    rows = table[(table["run"] == run.name) & (table["attack"] != "worst_case")]
    cands = []
    for attack, series, at, cid in _strongest_cells(rows):
        if run.adv_path(cid).exists() and run.samples(cid) is not None:
            cands.append({"attack": attack, "series": series, "cell_id": cid,
                          "params": at["params"].iloc[0], "n": int(at["n"].max()),
                          "kind": ATTACKS[attack].kind if attack in ATTACKS else ""})
    best: dict[str, dict] = {}
    for c in cands:  # one series per attack: the one with the most samples
        if c["attack"] not in best or c["n"] > best[c["attack"]]["n"]:
            best[c["attack"]] = c
    ordered = list(best.values())
    first = [next((c for c in ordered if c["kind"] == k), None) for k in ("white-box", "black-box")]
    picked = [c for c in first if c is not None]
    picked += [c for c in ordered if c not in picked]
    return picked[:n_examples]


def compute_examples(runs: list[RunData], table: pd.DataFrame, out: Path, *, n_examples: int, audio: bool,
                     seed: int) -> list[RunExamples]:
    """The example of every run, its figures and wav files written into ``out``; ``[]`` when no
    example is asked for (``n_examples <= 0``) or there are no attack results."""
    if n_examples <= 0 or table.empty:
        return []
    return [_run_example(run, table, out, n_examples, audio, seed) for run in runs]


def _run_example(run: RunData, table: pd.DataFrame, out: Path, n_examples: int, audio: bool,
                 seed: int) -> RunExamples:
    picks = _pick_attacks(run, table, n_examples)
    if not picks:
        return RunExamples(run.name, note=f"{run.name}: no saved perturbations (attacks/adv/*.npy): no examples.")
    try:
        test = load_subset(run.run_dir, "test")
    except RunDirError as exc:
        return RunExamples(run.name, note=f"{run.name}: the test features cannot be loaded ({exc}); no examples. "
                                          f"For a run made elsewhere set SERADV_CACHE_DIR to its feature cache.")
    cfg = load_run_config(run.run_dir)
    scaler = Standardizer.load(run.run_dir / "standardizer.safetensors")
    lo, hi = run.clip
    samples = {p["cell_id"]: run.samples(p["cell_id"]) for p in picks}
    # one segment for all picked attacks: clean correct, fooled by as many of them as possible
    score = _fooled_counts(samples)
    if not score:
        return RunExamples(run.name, note=f"{run.name}: no segment attacked by all of "
                                          f"{', '.join(p['attack'] for p in picks)} was classified correctly when "
                                          f"clean; no examples.")
    sid = max(sorted(score), key=lambda k: score[k])
    pos = int(np.flatnonzero(test.meta["segment_id"].to_numpy() == sid)[0])
    x = np.clip(test.x[pos], lo, hi).astype(np.float32)
    meta = test.meta.iloc[pos]
    classes = run.classes
    example = RunExamples(run.name, segment=sid, sample_rate=cfg.audio.sample_rate,
                          facts={k: meta[k] for k in ("utterance", "corpus", "language", "speaker", "emotion")})
    versions: dict[str, np.ndarray] = {"original": x}
    labels: dict[str, str] = {"original": "original"}
    for p in picks:
        s = samples[p["cell_id"]]
        i = int(np.flatnonzero(s["segment_id"].to_numpy() == sid)[0])
        delta = np.asarray(load_npy(run.adv_path(p["cell_id"]), mmap=True)[i], np.float32)
        x_adv = np.clip(x + delta, lo, hi)
        dc, limit = clip_outliers(delta)
        x_clip = np.clip(x + dc, lo, hi)
        key = slug(p["attack"])
        versions[f"{key}-adversarial"] = x_adv
        versions[f"{key}-clipped"] = x_clip
        labels[f"{key}-adversarial"] = f"{p['attack']} {p['params']}"
        labels[f"{key}-clipped"] = f"{p['attack']} {p['params']}, outliers clipped (|δ| ≤ {limit:.3g})"
        rel = f"figures/example-{slug(run.name)}-{sid}-{key}.png"
        plots.spectrograms(x, x_adv, out / rel, seconds_per_frame=cfg.features.hop_length / cfg.audio.sample_rate,
                           title=f"segment {sid}: {p['attack']} {p['params']} ({p['series']}); predicted "
                                 f"{classes[int(s.iloc[i]['pred_clean'])]} → {classes[int(s.iloc[i]['pred_adv'])]}")
        example.spectrograms.append(Spectrogram(rel, p["attack"], p["params"], p["series"],
                                                np.abs(delta).mean(), np.abs(delta).max()))
    example.labels = list(labels.values())
    preds = _predict(run, versions)
    if preds is not None:
        example.predicted = [classes[int(preds[j])] for j in range(len(versions))]
    if audio:
        ref_db = float(scaler.inverse(x).max())
        signals = {k: features_to_audio(v, scaler, sr=cfg.audio.sample_rate, features=cfg.features, ref_db=ref_db,
                                        seed=seed)
                   for k, v in versions.items()}
        stem = f"{slug(run.name)}-seg{sid}"
        paths = write_wavs({f"{stem}-{k}": y for k, y in signals.items()}, out / "audio", sr=cfg.audio.sample_rate)
        example.audio = [(labels[k], f"audio/{paths[f'{stem}-{k}'].name}") for k in versions]
    return example


def _predict(run: RunData, versions: dict[str, np.ndarray]) -> np.ndarray | None:
    try:
        model = load_model(run.run_dir)
    except Exception as exc:  # noqa: BLE001 - a model this process cannot build: skip the check
        log.info("%s: model not loaded for the example check (%s)", run.name, exc)
        return None
    x = np.stack(list(versions.values())).astype(np.float32)
    return predict_logits(model, x).argmax(1)


# ----------------------------------------------------------------------------- waveform attacks


@dataclass
class WaveExample:
    """Listenable audio of one segment under the run's waveform attacks (what an attacker would
    deliver: the written 16-bit files), or ``note``: why there is none."""

    run: str
    note: str = ""
    segment: int = -1
    facts: dict = field(default_factory=dict)
    audio: list[tuple[str, str]] = field(default_factory=list)
    """``(label, relative wav path)``: the original, then per attack the adversarial file as
    written and the difference (amplified, gain in the label)."""
    rows: list[list[str]] = field(default_factory=list)
    """Per attack: attack and budget, predicted class on the written file, SNR, STOI."""


def _pick_wave_cells(run: RunData, table: pd.DataFrame) -> list[dict]:
    """Per waveform attack of the run, its strongest setting's cell with its WAVs on disk."""
    rows = table[(table["run"] == run.name) & table["attack"].isin(
        [a for a, s in ATTACKS.items() if s.input == "waveform"])]
    picks = []
    for attack, _, at, cid in _strongest_cells(rows):
        if wav_dir(run.run_dir, cid).is_dir() and run.samples(cid) is not None:
            picks.append({"attack": attack, "cell_id": cid, "params": at["params"].iloc[0]})
    return list({p["attack"]: p for p in picks}.values())


def compute_wave_examples(runs: list[RunData], table: pd.DataFrame, out: Path, *, audio: bool) -> list[WaveExample]:
    """One :class:`WaveExample` per run that has waveform cells with written files (``[]`` when
    audio is not asked for or no run has any)."""
    if not audio or table.empty:
        return []
    found = []
    for run in runs:
        picks = _pick_wave_cells(run, table)
        if picks:
            found.append(_wave_example(run, picks, out))
    return found


def _wave_example(run: RunData, picks: list[dict], out: Path) -> WaveExample:
    samples = {p["cell_id"]: run.samples(p["cell_id"]) for p in picks}
    score = _fooled_counts(samples)
    if not score:
        return WaveExample(run.name, note=f"{run.name}: no segment of the waveform attacks was classified correctly "
                                          f"when clean; no audio example.")
    sid = max(sorted(score), key=lambda k: score[k])
    meta = next(iter(samples.values()))
    meta = meta[meta["segment_id"] == sid].iloc[0]
    cfg = load_run_config(run.run_dir)
    sr = cfg.audio.sample_rate
    try:
        seg = read_segments(run.run_dir)  # the segment's cut (no features needed)
        seg = seg[seg["segment_id"] == sid]
        clean = segment_waveforms(run.run_dir, seg)[0].astype(np.float64)
    except (RunDirError, OSError) as exc:
        return WaveExample(run.name, note=f"{run.name}: the clean audio of segment {sid} cannot be read ({exc}); "
                                          f"no audio example.")
    folder = out / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{slug(run.name)}-wave-seg{sid}"
    ex = WaveExample(run.name, segment=int(sid),
                     facts={k: meta[k] for k in ("utterance", "speaker", "gender", "emotion") if k in meta})
    path = folder / f"{stem}-original.wav"
    sf.write(path, np.clip(clean, -1, 1), sr, subtype="PCM_16")
    ex.audio.append(("original (the segment as cut)", f"audio/{path.name}"))
    classes = run.classes
    for p in picks:
        s = samples[p["cell_id"]]
        row = s[s["segment_id"] == sid].iloc[0]
        adv, _ = sf.read(str(wav_dir(run.run_dir, p["cell_id"]) / f"{sid}.wav"), dtype="float64")
        key = slug(p["attack"])
        a_path = folder / f"{stem}-{key}-adversarial.wav"
        sf.write(a_path, adv, sr, subtype="PCM_16")  # the delivered file, unchanged level
        diff = adv - clean[: len(adv)]
        peak = float(np.abs(diff).max())
        gain_db = 20 * np.log10(0.5 / peak) if peak > 0 else 0.0
        d_path = folder / f"{stem}-{key}-difference.wav"
        sf.write(d_path, np.clip(diff * (10 ** (gain_db / 20)), -1, 1), sr, subtype="PCM_16")
        ex.audio.append((f"{p['attack']} {p['params']}: adversarial (as written)", f"audio/{a_path.name}"))
        ex.audio.append((f"{p['attack']} {p['params']}: difference, amplified {gain_db:+.0f} dB", f"audio/{d_path.name}"))
        fmt = lambda c: f"{float(row[c]):.1f}" if c in row and pd.notna(row[c]) else "–"  # noqa: E731
        ex.rows.append([f"{p['attack']} {p['params']}", classes[int(row["pred_adv"])], fmt("snr_db"),
                        f"{float(row['stoi']):.2f}" if "stoi" in row and pd.notna(row["stoi"]) else "–"])
    return ex
