"""Realized fooling rates of a run's feature-space attack cells (issue "attacks a listener could hear").

For every finished feature-space cell with saved perturbations (``attacks/adv/<cell>.npy``),
:func:`realize_run` renders the clean and the adversarial log-Mel matrix of each attacked,
clean-correct segment as audio (:mod:`seradv.attacks.waveform.render`), writes both as 16-bit
WAVs, reads them back through the numpy feature pipeline and classifies them. Per cell::

    attacks/realized/<cell_id>.<method>.csv     one row per rendered segment
    attacks/realized/<cell_id>.<method>.json    the cell's content hash and the summary row
    attacks/realized/wav/<cell_id>.<method>/    <segment>-clean.wav, <segment>-adv.wav
    attacks/realized.csv                        one summary row per cell and method

A cell's realization is reused while the cell file is unchanged (its sha256 is recorded).

Summary columns: ``n`` (segments rendered: attacked, correct before the attack, at most
``limit`` of them, seeded), ``n_render_faithful`` (their clean rendering is still classified
correctly), ``feature_fooling_rate`` (the cell's own verdict on those ``n``),
``realized_fooling_rate`` (among the faithful ones, the adversarial rendering misclassified)
and ``feature_fooled_realized`` (among the faithful ones the attack fooled in feature space,
the share whose rendering still fools). Float16 storage of the perturbations is checked:
``pred_adv_f16`` is the model on ``clip(x + delta_f16)``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from seradv.attacks.spec import ATTACKS
from seradv.attacks.waveform.render import RENDER_METHODS, realize_feature_attack
from seradv.attacks.waveform.segments import segment_waveforms
from seradv.errors import ParameterError, RunDirError
from seradv.evaluation import predict_logits
from seradv.features import Standardizer
from seradv.fileio import atomic_write_json, atomic_write_text, load_npy, read_json
from seradv.grid.results import load_results, read_samples

from seradv.prepare import load_subset
from seradv.rundir import (SAMPLES_SUFFIX, STANDARDIZER, adv_file, attacks_dir, cell_file, load_model, load_run_config,
                           read_preprocessing)

log = logging.getLogger(__name__)

__all__ = ["REALIZED_CSV", "realize_run", "realized_dir"]

REALIZED_DIR = "realized"
REALIZED_CSV = "realized.csv"


def realized_dir(run_dir: str | Path) -> Path:
    """``RUN/attacks/realized``."""
    return attacks_dir(run_dir) / REALIZED_DIR


def _summary(cell: pd.Series, rows: pd.DataFrame, method: str) -> dict:
    faithful = rows["clean_render_correct"].to_numpy(bool)
    feat = rows["feature_fooled"].to_numpy(bool)
    real = rows["realized_fooled"].to_numpy(bool)

    def rate(mask: np.ndarray, of: np.ndarray) -> float:
        return float(np.mean(mask[of])) if of.any() else float("nan")

    return {"cell_id": cell["cell_id"], "attack": cell["attack"], "params": cell["params"], "method": method,
            "n": int(len(rows)), "n_render_faithful": int(faithful.sum()),
            "feature_fooling_rate": float(np.mean(feat)) if len(rows) else float("nan"),
            "realized_fooling_rate": rate(real, faithful),
            "feature_fooled_realized": rate(real, faithful & feat),
            "f16_agreement": float(np.mean(rows["pred_adv_f16"].to_numpy() == rows["pred_adv"].to_numpy()))
            if len(rows) else float("nan"),
            "mean_render_snr_db": float(np.mean(rows.loc[np.isfinite(rows["render_snr_db"]), "render_snr_db"]))
            if np.isfinite(rows["render_snr_db"]).any() else float("nan")}


def realize_run(run_dir: str | Path, *, attacks: Iterable[str] | None = None, method: str = "griffinlim",
                limit: int | None = 64, seed: int = 0, n_iter: int = 32, device: str = "cpu") -> pd.DataFrame:
    """Realized fooling rates of the run's feature-space cells (module docstring); returns the summary."""
    run_dir = Path(run_dir)
    if method not in RENDER_METHODS:
        raise ParameterError(f"method={method!r} must be one of {', '.join(RENDER_METHODS)}")
    if limit is not None and limit < 1:
        raise ParameterError(f"limit={limit} must be >= 1 (or None: every attacked segment)")
    results = load_results(run_dir)
    if results.empty:
        raise RunDirError(f"{run_dir} has no finished attack cells; run `seradv attack {run_dir}` first")
    cells = results[results["group"] == "All"].drop_duplicates("cell_id")
    if attacks is not None:
        wanted = set(attacks)
        cells = cells[cells["attack"].isin(wanted)]
    cells = cells[[a in ATTACKS and ATTACKS[a].input == "features" for a in cells["attack"]]]
    info = read_preprocessing(run_dir)
    cfg = load_run_config(run_dir)
    lo, hi = info.clip_values
    scaler = Standardizer.load(run_dir / STANDARDIZER)
    model = load_model(run_dir, device=device).eval()
    test = load_subset(run_dir, "test")
    pos_of = {sid: i for i, sid in enumerate(test.meta["segment_id"].tolist())}
    out = realized_dir(run_dir)
    summaries = []
    for cell in cells.to_dict("records"):
        cid = cell["cell_id"]
        npy, cjson = adv_file(run_dir, cid), cell_file(run_dir, cid)
        if not npy.is_file():
            log.info("cell %s (%s %s): no saved perturbations; not realized", cid, cell["attack"], cell["params"])
            continue
        digest = hashlib.sha256(cjson.read_bytes()).hexdigest()
        side = out / f"{cid}.{method}.json"
        if side.is_file():
            try:
                old = read_json(side)
                if old.get("cell_sha256") == digest and old.get("limit") == limit and old.get("seed") == seed \
                        and old.get("n_iter") == n_iter:
                    summaries.append(old["summary"])
                    continue
            except (ValueError, KeyError, TypeError):
                pass
        samples = read_samples(cell_file(run_dir, cid, SAMPLES_SUFFIX))
        if samples is None:
            log.warning("cell %s: unreadable per-sample file; not realized", cid)
            continue
        delta_all = load_npy(npy, mmap=True)
        if len(delta_all) != len(samples):
            log.warning("cell %s: %d perturbations for %d samples; not realized", cid, len(delta_all), len(samples))
            continue
        keep = np.flatnonzero((samples["pred_clean"] == samples["label"]).to_numpy()
                              & samples["attacked"].astype(bool).to_numpy())
        if limit is not None and len(keep) > limit:
            keep = np.sort(np.random.default_rng(seed).choice(keep, size=limit, replace=False))
        sel = samples.iloc[keep].reset_index(drop=True)
        pos = np.array([pos_of[s] for s in sel["segment_id"]], dtype=int)
        x = np.clip(test.x[pos], lo, hi).astype(np.float32)
        x_adv = np.clip(x + np.asarray(delta_all[keep], np.float32), lo, hi)
        waves = segment_waveforms(run_dir, test.meta.iloc[pos]) if method == "phase" else None
        rows = realize_feature_attack(model, x, x_adv, sel["label"].to_numpy(), scaler=scaler,
                                      sr=cfg.audio.sample_rate, features=cfg.features,
                                      n_samples=cfg.audio.segment_samples, wav_dir=out / "wav" / f"{cid}.{method}",
                                      names=[str(s) for s in sel["segment_id"]], method=method, clean_waves=waves,
                                      n_iter=n_iter, seed=seed, device=device)
        f16 = predict_logits(model, x_adv, device=device).argmax(1)
        frame = pd.concat([sel[["segment_id", "speaker", "gender", "emotion", "label", "pred_clean", "pred_adv"]],
                           rows], axis=1)
        frame.insert(7, "pred_adv_f16", f16)
        frame.insert(8, "feature_fooled", (sel["pred_adv"] != sel["label"]).to_numpy())
        summary = _summary(pd.Series(cell), frame, method)
        atomic_write_text(out / f"{cid}.{method}.csv", frame.to_csv(index=False))
        atomic_write_json(side, {"cell_sha256": digest, "limit": limit, "seed": seed, "n_iter": n_iter,
                                 "summary": summary})
        log.info("%s %s (%s): feature-space fooling %.3f, realized %.3f (n %d, clean rendering kept %d)",
                 cell["attack"], cell["params"], method, summary["feature_fooling_rate"],
                 summary["realized_fooling_rate"], summary["n"], summary["n_render_faithful"])
        summaries.append(summary)
    table = pd.DataFrame(summaries)
    if not table.empty:
        path = attacks_dir(run_dir) / REALIZED_CSV
        old = pd.read_csv(path) if path.is_file() else pd.DataFrame()
        if not old.empty:
            old = old[~(old["cell_id"].isin(table["cell_id"]) & (old["method"] == method))]
        atomic_write_text(path, pd.concat([old, table], ignore_index=True).to_csv(index=False))
    return table
