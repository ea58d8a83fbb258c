"""From a corpus table to standardized feature arrays in a run directory.

:func:`prepare` does corpus table -> utterance split -> (augmented) copies -> 3 s segments ->
log-Mel features (cached on disk, keyed by corpus and preprocessing config) -> segment split
-> standardization, and writes into the run directory:

``manifest.csv``, ``skipped.csv``, ``split.csv`` (per utterance), ``segments.csv`` (per
segment: subset, variant, labels, where its features live), ``standardizer.safetensors``
and ``preprocessing.json`` (classes, clip values, cache folder, counts, leaky flag).

:func:`load_subset` reads one subset back as standardized arrays.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from seradv.audio import read_audio
from seradv.cache import atomic_write_json, load_npy, read_json, save_npy
from seradv.config import AudioConfig, FeatureConfig, RunConfig, config_hash, default_cache_dir
from seradv.corpora import Manifest, get_corpus, load_corpus, validate_manifest
from seradv.errors import AudioError, CorpusError, RunDirError, SplitError
from seradv.features import Standardizer, log_mel
from seradv.processing import apply_variant, resample, segment, trim
from seradv.progress import make_progress
from seradv.splits import describe_split, paper_split, speaker_split

log = logging.getLogger(__name__)

__all__ = ["prepare", "load_subset", "Subset", "select_utterances", "extract_features", "PREPROCESSING_VERSION"]

PREPROCESSING_VERSION = 1
"""Bumped whenever cached features would change for the same config."""


@dataclass
class Subset:
    """Standardized features, integer labels and per-segment metadata of one subset."""

    x: np.ndarray  # [shape=(n, 261, 128), dtype=float32]
    y: np.ndarray  # [shape=(n,), dtype=int64]
    meta: pd.DataFrame
    classes: list[str]

    def __len__(self) -> int:
        return len(self.y)


def select_utterances(
    table: pd.DataFrame, emotions: Iterable[str], *, max_per_speaker_class: int | None = None
) -> pd.DataFrame:
    """Keep the rows of ``emotions`` (and at most ``max_per_speaker_class`` per speaker x emotion)."""
    emotions = list(emotions)
    present = set(table["emotion"])
    missing = [e for e in emotions if e not in present]
    if missing:
        raise CorpusError(
            f"emotions {missing} have no utterance in the corpus table (present: {sorted(present)})"
        )
    out = table[table["emotion"].isin(emotions)]
    if max_per_speaker_class is not None:
        out = out.groupby(["speaker", "emotion"], sort=False, group_keys=False).head(max_per_speaker_class)
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------
# feature extraction with an on-disk cache
# --------------------------------------------------------------------------------------


def _load_trimmed(path: str, utt: str, audio: AudioConfig) -> np.ndarray:
    y, sr = read_audio(path)
    y = resample(y, sr, audio.sample_rate)
    return trim(y, audio, where=path)


def _trim_worker(path: str, utt: str, audio: AudioConfig) -> tuple[str, int | None, str | None]:
    try:
        return utt, int(_load_trimmed(path, utt, audio).size), None
    except AudioError as exc:
        return utt, None, str(exc).split(": ", 1)[-1]
    except Exception as exc:  # noqa: BLE001 - one bad file must not lose the run
        return utt, None, f"{type(exc).__name__}: {exc}"


def _feature_worker(
    path: str,
    utt: str,
    variants: list[str],
    audio: AudioConfig,
    features: FeatureConfig,
    min_remainder: int,
    feat_dir: str,
) -> tuple[str, dict[str, int], str | None]:
    counts: dict[str, int] = {}
    try:
        y = None
        for v in variants:
            out = Path(feat_dir) / v / f"{utt}.npy"
            if out.exists():
                counts[v] = int(load_npy(out, mmap=True).shape[0])
                continue
            if y is None:
                y = _load_trimmed(path, utt, audio)
            copy = apply_variant(y, audio.sample_rate, v)
            segs = segment(copy, audio, min_remainder=min_remainder)
            n_frames = 1 + audio.segment_samples // features.hop_length
            arr = (
                np.stack([log_mel(s, audio.sample_rate, features) for s in segs])
                if segs
                else np.zeros((0, n_frames, features.n_mels), np.float32)
            )
            save_npy(out, arr)
            counts[v] = arr.shape[0]
        return utt, counts, None
    except AudioError as exc:
        return utt, counts, str(exc).split(": ", 1)[-1]
    except Exception as exc:  # noqa: BLE001
        return utt, counts, f"{type(exc).__name__}: {exc}"


def _run_pool(fn, jobs: list[tuple], n_jobs: int, description: str) -> list:
    results = []
    with make_progress() as prog:
        task = prog.add_task(description, total=len(jobs), status="")
        if n_jobs <= 1 or len(jobs) < 8:
            for args in jobs:
                results.append(fn(*args))
                prog.advance(task)
        else:
            ctx = mp.get_context("forkserver")
            with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
                futures = [pool.submit(fn, *args) for args in jobs]
                for fut in as_completed(futures):
                    results.append(fut.result())
                    prog.advance(task)
    return results


def trimmed_lengths(
    table: pd.DataFrame, audio: AudioConfig, cache_root: Path, *, n_jobs: int = 1
) -> tuple[dict[str, int], dict[str, str]]:
    """Trimmed length (samples) of every utterance, cached; and the failures with reasons."""
    key = config_hash("trim", PREPROCESSING_VERSION, audio.sample_rate, audio.trim_top_db,
                      audio.trim_frame_length, audio.trim_hop_length)
    corpus = str(table["corpus"].iloc[0])
    path = cache_root / "features" / corpus / f"trimmed-{key}.json"
    known: dict = read_json(path) if path.exists() else {}
    todo = [(r.path, r.utterance, audio) for r in table.itertuples() if r.utterance not in known]
    if todo:
        for utt, n, err in _run_pool(_trim_worker, todo, n_jobs, "reading audio"):
            known[utt] = n if err is None else f"error: {err}"
        atomic_write_json(path, known)
    lengths = {u: known[u] for u in table["utterance"] if isinstance(known.get(u), int)}
    failures = {u: known[u][len("error: "):] for u in table["utterance"] if isinstance(known.get(u), str)}
    return lengths, failures


def feature_dir(corpus: str, cfg: RunConfig, min_remainder: int, cache_root: Path) -> Path:
    """Cache folder of one corpus x preprocessing config."""
    key = config_hash(PREPROCESSING_VERSION, cfg.audio, cfg.features, min_remainder)
    return cache_root / "features" / corpus / key


def extract_features(
    table: pd.DataFrame,
    variants: dict[str, list[str]],
    cfg: RunConfig,
    *,
    min_remainder: int,
    cache_root: Path,
) -> tuple[pd.DataFrame, dict[str, str], Path]:
    """Compute (or reuse) the features of every utterance x variant.

    Returns the segment table (one row per segment), the failures and the cache folder.
    """
    corpus = str(table["corpus"].iloc[0])
    fdir = feature_dir(corpus, cfg, min_remainder, cache_root)
    fdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        fdir / "key.json",
        {"corpus": corpus, "version": PREPROCESSING_VERSION, "audio": cfg.audio.__dict__,
         "features": cfg.features.__dict__, "min_remainder_samples": min_remainder},
    )
    jobs = [
        (r.path, r.utterance, variants[r.utterance], cfg.audio, cfg.features, min_remainder, str(fdir))
        for r in table.itertuples()
    ]
    results = _run_pool(_feature_worker, jobs, cfg.n_jobs, "features")
    counts = {utt: c for utt, c, err in results if err is None}
    failures = {utt: err for utt, c, err in results if err is not None}
    rows = []
    meta = table.set_index("utterance")
    for utt in table["utterance"]:
        if utt not in counts:
            continue
        m = meta.loc[utt]
        for v in variants[utt]:
            for i in range(counts[utt][v]):
                rows.append(
                    {"utterance": utt, "variant": v, "seg_index": i, "speaker": m["speaker"],
                     "gender": m["gender"], "emotion": m["emotion"], "corpus": m["corpus"],
                     "language": m["language"]}
                )
    segs = pd.DataFrame(rows, columns=["utterance", "variant", "seg_index", "speaker", "gender",
                                       "emotion", "corpus", "language"])
    return segs, failures, fdir


def _load_features(segs: pd.DataFrame, fdir: Path) -> np.ndarray:
    """Stack the cached features of the rows of ``segs`` (in order)."""
    out = None
    pos = 0
    for (utt, v), grp in segs.groupby(["utterance", "variant"], sort=False):
        f = fdir / v / f"{utt}.npy"
        if not f.exists():
            raise RunDirError(
                f"cached features {f} are missing (cache deleted?); run `seradv prepare` again"
            )
        arr = load_npy(f, mmap=True)
        if out is None:
            out = np.empty((len(segs),) + arr.shape[1:], np.float32)
        idx = grp["seg_index"].to_numpy()
        out[pos : pos + len(idx)] = arr[idx]
        pos += len(idx)
    if out is None:
        raise RunDirError("no segments to load")
    return out


def _grouped_order(segs: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered so that :func:`_load_features` fills them consecutively."""
    key = segs["utterance"] + "\x00" + segs["variant"]
    first = pd.Series(range(len(segs)), index=segs.index).groupby(key.values).transform("min")
    return segs.assign(_k=first.values).sort_values(["_k", "seg_index"], kind="stable").drop(columns="_k")


# --------------------------------------------------------------------------------------
# prepare a run directory
# --------------------------------------------------------------------------------------


def prepare(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    manifest: Manifest | pd.DataFrame | None = None,
) -> dict:
    """Build features, split and standardizer for ``cfg`` into ``run_dir``.

    ``manifest`` may be given (a table from :func:`seradv.corpora.load_corpus` or any
    DataFrame with the manifest columns); otherwise the corpus is read from ``cfg.data``.
    Returns the content of ``preprocessing.json``.
    """
    from seradv.config import save_config

    cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    recipe = get_corpus(cfg.data.corpus)
    if manifest is None:
        manifest = load_corpus(cfg.data.corpus, cfg.data.data_dir)
    if isinstance(manifest, pd.DataFrame):
        manifest = Manifest(table=validate_manifest(manifest))
    manifest.table.to_csv(run_dir / "manifest.csv", index=False)
    skipped = [manifest.skipped]

    emotions = sorted(cfg.data.emotions or recipe.study_emotions)
    table = select_utterances(manifest.table, emotions, max_per_speaker_class=cfg.data.max_per_class)
    log.info("%s: %d utterances of %s", cfg.data.corpus, len(table), ", ".join(emotions))
    cache_root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()

    lengths, failures = trimmed_lengths(table, cfg.audio, cache_root, n_jobs=cfg.n_jobs)
    skipped.append(_skipped_frame(table, failures))
    table = table[table["utterance"].isin(lengths)].reset_index(drop=True)
    if table.empty:
        raise CorpusError(f"{cfg.data.corpus}: no usable utterance left; see {run_dir / 'skipped.csv'}")
    if cfg.audio.min_remainder_s is None:
        min_remainder = int(min(lengths.values()))
    else:
        min_remainder = int(round(cfg.audio.min_remainder_s * cfg.audio.sample_rate))

    all_variants = cfg.augment.variants()
    if cfg.split.kind == "speaker":
        utt_subset = speaker_split(table, cfg.split)
        variants = {
            u: (all_variants if s == "train" else ["orig"]) for u, s in zip(table["utterance"], utt_subset)
        }
    else:
        utt_subset = None
        variants = {u: all_variants for u in table["utterance"]}

    segs, failures, fdir = extract_features(table, variants, cfg, min_remainder=min_remainder,
                                            cache_root=cache_root)
    skipped.append(_skipped_frame(table, failures))
    if segs.empty:
        raise CorpusError(f"{cfg.data.corpus}: no segment could be made; see {run_dir / 'skipped.csv'}")
    if cfg.split.kind == "speaker":
        assert utt_subset is not None
        sub = dict(zip(table["utterance"], utt_subset))
        segs["subset"] = segs["utterance"].map(sub)
        segs = segs[segs["utterance"].map(lambda u: u not in failures)]
        _check_subsets(segs)
    else:
        segs["subset"] = paper_split(segs, cfg.split).to_numpy()
    segs["label"] = segs["emotion"].map({e: i for i, e in enumerate(emotions)}).astype(int)
    segs = segs.reset_index(drop=True)
    segs.insert(0, "segment_id", np.arange(len(segs)))

    # standardization: training data only (speaker split), whole corpus (paper split, as the study)
    fit_rows = segs if cfg.split.kind == "paper" else segs[segs["subset"] == "train"]
    fit_rows = _grouped_order(fit_rows)
    x_fit = _load_features(fit_rows, fdir)
    scaler = Standardizer.fit(x_fit)
    lo, hi = _standardized_range(x_fit, scaler)
    del x_fit
    scaler.save(run_dir / "standardizer.safetensors")

    split_table = (
        segs.groupby("utterance", sort=False)
        .agg(speaker=("speaker", "first"), gender=("gender", "first"), emotion=("emotion", "first"),
             subset=("subset", lambda s: "+".join(sorted(set(s)))), n_segments=("subset", "size"))
        .reset_index()
    )
    split_table.to_csv(run_dir / "split.csv", index=False)
    segs.to_csv(run_dir / "segments.csv", index=False)
    skipped_df = pd.concat([s for s in skipped if not s.empty] or [pd.DataFrame(columns=["path", "reason"])],
                           ignore_index=True)
    skipped_df.to_csv(run_dir / "skipped.csv", index=False)

    leaked = int((split_table["subset"].str.contains(r"\+")).sum())
    info = {
        "corpus": cfg.data.corpus,
        "language": str(table["language"].iloc[0]) if table["language"].nunique() == 1 else "mixed",
        "languages": sorted(table["language"].unique()),
        "classes": emotions,
        "split": cfg.split.kind,
        "leaky": cfg.split.leaky,
        "leak_note": (
            "LEAKY: the study's split; augmented copies and segments of one utterance, and every "
            "speaker, appear in both train and test, so clean accuracy is optimistic"
            if cfg.split.leaky else "speaker-independent: no test speaker is seen in training"
        ),
        "utterances_in_several_subsets": leaked,
        "clip_values": [float(lo), float(hi)],
        "standardization_fitted_on": "all segments (study)" if cfg.split.leaky else "training segments",
        "min_remainder_samples": min_remainder,
        "feature_cache": str(fdir.resolve()),
        "input_shape": [int(1 + cfg.audio.segment_samples // cfg.features.hop_length), cfg.features.n_mels],
        "counts": describe_split(segs).to_dict(orient="records"),
        "n_skipped": int(len(skipped_df)),
        "preprocessing_version": PREPROCESSING_VERSION,
    }
    atomic_write_json(run_dir / "preprocessing.json", info)
    return info


def _check_subsets(segs: pd.DataFrame) -> None:
    for name in ("train", "val", "test"):
        if not (segs["subset"] == name).any():
            raise SplitError(f"the {name} subset has no segment left after skipping bad files")


def _standardized_range(x: np.ndarray, scaler: Standardizer, chunk: int = 512) -> tuple[int, int]:
    lo, hi = np.inf, -np.inf
    for i in range(0, len(x), chunk):
        z = scaler.transform(x[i : i + chunk])
        lo, hi = min(lo, float(z.min())), max(hi, float(z.max()))
    return int(np.floor(lo)), int(np.ceil(hi))


def _skipped_frame(table: pd.DataFrame, failures: dict[str, str]) -> pd.DataFrame:
    if not failures:
        return pd.DataFrame(columns=["path", "reason"])
    paths = table.set_index("utterance")["path"]
    return pd.DataFrame([{"path": paths[u], "reason": r} for u, r in failures.items()])


# --------------------------------------------------------------------------------------
# reading a prepared run directory
# --------------------------------------------------------------------------------------


def read_preprocessing(run_dir: str | Path) -> dict:
    """``preprocessing.json`` of a prepared run directory (clear error if absent)."""
    path = Path(run_dir) / "preprocessing.json"
    if not path.exists():
        raise RunDirError(
            f"{run_dir} is not a prepared run directory (no preprocessing.json); "
            f"run `seradv prepare CORPUS -o {run_dir}` first"
        )
    return read_json(path)


def load_subset(run_dir: str | Path, subset: str = "test") -> Subset:
    """Standardized features, labels and metadata of ``subset`` (train, val or test)."""
    if subset not in ("train", "val", "test"):
        raise RunDirError(f"subset={subset!r} must be train, val or test")
    run_dir = Path(run_dir)
    info = read_preprocessing(run_dir)
    segs = pd.read_csv(run_dir / "segments.csv", dtype={"utterance": str, "speaker": str})
    part = segs[segs["subset"] == subset]
    if part.empty:
        raise RunDirError(f"{run_dir}: the {subset} subset is empty")
    part = _grouped_order(part).reset_index(drop=True)
    x = _load_features(part, Path(info["feature_cache"]))
    scaler = Standardizer.load(run_dir / "standardizer.safetensors")
    x = scaler.transform(x)
    return Subset(x=x, y=part["label"].to_numpy(np.int64), meta=part, classes=list(info["classes"]))


