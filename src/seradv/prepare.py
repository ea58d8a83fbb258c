"""The prepare stage: from a corpus table to standardized feature arrays in a run directory.

:func:`prepare` does corpus table -> utterance split -> (augmented) copies -> 3 s segments ->
log-Mel features (cached on disk, keyed by the sha256 of the audio file's bytes and the
preprocessing config) -> segment split -> standardization, and writes into the run directory
(only once all of it succeeded; ``config.yaml`` last):

``manifest.csv``, ``skipped.csv``, ``split.csv`` (per utterance), ``segments.csv`` (per
segment: subset, variant, labels, the ``content`` hash naming its cache entry),
``standardizer.safetensors`` and ``preprocessing.json`` (classes, clip values, cache folder,
counts, leaky flag, sha256 of ``segments.csv`` and of the standardizer).

:func:`load_subset` reads one subset back as standardized arrays (:class:`SplitData`).

The module is longer than most (~690 lines) because the stage and its feature cache are one
job whose parts share the cache layout: cut apart, each half would have to know the other's
file naming. The run directory's file names and records belong to :mod:`seradv.rundir`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import yaml

from seradv.audio import read_audio
from seradv.fileio import (atomic_write_bytes, atomic_write_json, check_path_component, environment_fault,
                          file_sha256, load_npy, npy_is_complete, read_json, save_npy)
from seradv.config import AudioConfig, FeatureConfig, RunConfig, config_hash, default_cache_dir
from seradv.corpora import Manifest, get_corpus, load_corpus, validate_manifest
from seradv.corpora.base import find_audio_files
from seradv.errors import AudioError, CorpusError, EnvironmentFault, RunDirError, SplitError
from seradv.features import Standardizer, log_mel
from seradv.segments import apply_variant, resample, segment, trim
from seradv.progress import make_progress
from seradv.rundir import (CONFIG, CV_FILES, FOLDS_CSV, MANIFEST, PREPARATION_FILES, PREPROCESSING, SEGMENTS, SKIPPED,
                           SPLIT, STANDARDIZER, Preprocessing, check_sha256, damaged_message, fold_dir,
                           read_preprocessing)
from seradv.splits import default_folds, describe_split, fold_split, paper_split, speaker_folds, speaker_split

log = logging.getLogger(__name__)

__all__ = ["prepare", "build_preparation", "write_preparation", "Preparation", "CVPreparation", "check_source",
           "load_subset", "SplitData", "select_utterances", "extract_features", "content_hashes",
           "PREPROCESSING_VERSION", "read_segments", "read_standardizer"]

PREPROCESSING_VERSION = 2
"""Bumped whenever cached features would change for the same config (2: entries keyed by content)."""


@dataclass
class SplitData:
    """Standardized features, integer labels and per-segment metadata of one subset of the
    split (train, val or test)."""

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
# feature extraction with an on-disk cache, keyed by content
# --------------------------------------------------------------------------------------
#
# Every cache entry is named by the sha256 of the audio file's bytes (column ``content``) in a
# folder keyed by the preprocessing config, so a file with the same name but other audio never
# reuses another file's entry, and a file that was fixed is read again. A damaged entry (a
# truncated ``.npy``) is recomputed. An environment failure (disk full, quota, read-only file
# system, no write permission, out of memory) stops the stage with an EnvironmentFault; only a
# bad input file is skipped.

_FATAL_OS_ERRNOS = frozenset(e for e in (getattr(errno, n, None) for n in
                                         ("ENOSPC", "EDQUOT", "EROFS", "ENOMEM", "EMFILE", "ENFILE"))
                             if e is not None)


def _fatal(exc: BaseException, where: str) -> EnvironmentFault | None:
    """The EnvironmentFault that ``exc`` raised while working on ``where`` means, if any.

    Write failures arrive as EnvironmentFault already (:func:`seradv.fileio.atomic_write_bytes`);
    EACCES/EPERM on *reading* an input file is that file's problem, so only the errnos of a full,
    read-only or exhausted machine count here.
    """
    if isinstance(exc, EnvironmentFault):
        return exc
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in _FATAL_OS_ERRNOS):
        return environment_fault(exc, where)
    return None


def _load_trimmed(path: str, utt: str, audio: AudioConfig) -> np.ndarray:
    y, sr = read_audio(path)
    y = resample(y, sr, audio.sample_rate)
    return trim(y, audio, where=path)


def _trim_worker(path: str, content: str, audio: AudioConfig) -> tuple[str, int | None, str | None]:
    try:
        return content, int(_load_trimmed(path, content, audio).size), None
    except AudioError as exc:
        return content, None, str(exc).split(": ", 1)[-1]
    except Exception as exc:  # noqa: BLE001 - one bad file must not lose the run
        fault = _fatal(exc, path)
        if fault is not None:
            raise fault from None
        return content, None, f"{type(exc).__name__}: {exc}"


def _entry_frames(path: Path, n_frames: int, n_mels: int) -> int | None:
    """Number of segments in the cache entry ``path``, or ``None`` if it is absent or damaged."""
    if not path.exists() or not npy_is_complete(path):
        return None
    try:
        arr = load_npy(path, mmap=True)
    except (ValueError, OSError, EOFError):
        return None
    if arr.ndim != 3 or arr.shape[1:] != (n_frames, n_mels) or arr.dtype != np.float32:
        return None
    return int(arr.shape[0])


def _feature_worker(
    path: str,
    content: str,
    variants: list[str],
    audio: AudioConfig,
    features: FeatureConfig,
    min_remainder: int,
    feat_dir: str,
) -> tuple[str, dict[str, int], str | None, list[str]]:
    counts: dict[str, int] = {}
    repaired: list[str] = []
    n_frames = 1 + audio.segment_samples // features.hop_length
    try:
        y = None
        for v in variants:
            out = Path(feat_dir) / check_path_component(v, "variant name") / f"{content}.npy"
            n = _entry_frames(out, n_frames, features.n_mels)
            if n is not None:
                counts[v] = n
                continue
            if out.exists():
                repaired.append(str(out))
            if y is None:
                y = _load_trimmed(path, content, audio)
            copy = apply_variant(y, audio.sample_rate, v)
            segs = segment(copy, audio, min_remainder=min_remainder)
            arr = (
                np.stack([log_mel(s, audio.sample_rate, features) for s in segs])
                if segs
                else np.zeros((0, n_frames, features.n_mels), np.float32)
            )
            save_npy(out, arr)
            counts[v] = arr.shape[0]
        return content, counts, None, repaired
    except AudioError as exc:
        return content, counts, str(exc).split(": ", 1)[-1], repaired
    except Exception as exc:  # noqa: BLE001
        fault = _fatal(exc, path)
        if fault is not None:
            raise fault from None
        return content, counts, f"{type(exc).__name__}: {exc}", repaired


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
                try:
                    for fut in as_completed(futures):
                        results.append(fut.result())
                        prog.advance(task)
                except BaseException:  # an environment fault (or ^C): stop, do not finish the rest
                    for fut in futures:
                        fut.cancel()
                    raise
    return results


def content_hashes(table: pd.DataFrame) -> tuple[dict[str, str], dict[str, str]]:
    """sha256 of every utterance's file bytes, and the files that could not be read (reasons).

    Cheap next to feature extraction: EmoDB's 535 files (48 MB) hash in about 0.15 s.
    """
    hashes: dict[str, str] = {}
    failures: dict[str, str] = {}
    for r in table.itertuples():
        try:
            hashes[r.utterance] = file_sha256(r.path)
        except OSError as exc:
            fault = _fatal(exc, r.path)
            if fault is not None:
                raise fault from None
            failures[r.utterance] = f"cannot read the file ({exc.strerror or exc})"
    return hashes, failures


def content_duplicates(table: pd.DataFrame, hashes: dict[str, str]) -> dict[str, str]:
    """``{utterance: reason}`` for every utterance whose file bytes equal an earlier one's."""
    first: dict[str, tuple[str, str]] = {}
    dups: dict[str, str] = {}
    for r in table.itertuples():
        h = hashes.get(r.utterance)
        if h is None:
            continue
        if h in first:
            utt, path = first[h]
            dups[r.utterance] = f"duplicate of {utt} ({path}): identical file bytes"
        else:
            first[h] = (r.utterance, r.path)
    return dups


def _read_json_cache(path: Path) -> dict:
    """A JSON cache file, or ``{}`` if it is absent or damaged (it is rebuilt)."""
    if not path.exists():
        return {}
    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError):
        log.warning("cache file %s is damaged; recomputing it", path)
        return {}
    return data if isinstance(data, dict) else {}


def trimmed_lengths(
    table: pd.DataFrame, audio: AudioConfig, cache_root: Path, *, n_jobs: int = 1
) -> tuple[dict[str, int], dict[str, str]]:
    """Trimmed length (samples) of every utterance, cached by content; and the failures with reasons.

    ``table`` needs a ``content`` column (:func:`content_hashes`).
    """
    key = config_hash("trim", PREPROCESSING_VERSION, audio.sample_rate, audio.trim_top_db,
                      audio.trim_frame_length, audio.trim_hop_length)
    corpus = check_path_component(str(table["corpus"].iloc[0]), "corpus name", error=CorpusError)
    path = cache_root / "features" / corpus / f"trimmed-{key}.json"
    known: dict = _read_json_cache(path)
    todo = [(r.path, r.content, audio) for r in table.itertuples() if r.content not in known]
    if todo:
        for content, n, err in _run_pool(_trim_worker, todo, n_jobs, "reading audio"):
            known[content] = n if err is None else f"error: {err}"
        atomic_write_json(path, known)
    by_utt = dict(zip(table["utterance"], table["content"]))
    lengths = {u: known[c] for u, c in by_utt.items() if isinstance(known.get(c), int)}
    failures = {u: known[c][len("error: "):] for u, c in by_utt.items() if isinstance(known.get(c), str)}
    return lengths, failures


def feature_dir(corpus: str, cfg: RunConfig, min_remainder: int, cache_root: Path) -> Path:
    """Cache folder of one corpus x preprocessing config (entries inside are named by content)."""
    key = config_hash(PREPROCESSING_VERSION, cfg.audio, cfg.features, min_remainder)
    return cache_root / "features" / check_path_component(corpus, "corpus name", error=CorpusError) / key


def extract_features(
    table: pd.DataFrame,
    variants: dict[str, list[str]],
    cfg: RunConfig,
    *,
    min_remainder: int,
    cache_root: Path,
) -> tuple[pd.DataFrame, dict[str, str], Path]:
    """Compute (or reuse) the features of every utterance x variant.

    ``table`` needs a ``content`` column (:func:`content_hashes`). Returns the segment table
    (one row per segment, with ``content``), the failures and the cache folder.
    """
    corpus = str(table["corpus"].iloc[0])
    fdir = feature_dir(corpus, cfg, min_remainder, cache_root)
    atomic_write_json(
        fdir / "key.json",
        {"corpus": corpus, "version": PREPROCESSING_VERSION, "audio": cfg.audio.__dict__,
         "features": cfg.features.__dict__, "min_remainder_samples": min_remainder,
         "entries": "<variant>/<sha256 of the audio file>.npy"},
    )
    jobs = [
        (r.path, r.content, variants[r.utterance], cfg.audio, cfg.features, min_remainder, str(fdir))
        for r in table.itertuples()
    ]
    results = _run_pool(_feature_worker, jobs, cfg.n_jobs, "features")
    for *_, repaired in results:
        for f in repaired:
            log.warning("cache entry %s was damaged (truncated); recomputed it", f)
    by_content = {c: (cnt, err) for c, cnt, err, _ in results}
    counts, failures = {}, {}
    for utt, content in zip(table["utterance"], table["content"]):
        cnt, err = by_content[content]
        if err is None:
            counts[utt] = cnt
        else:
            failures[utt] = err
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
                     "language": m["language"], "content": m["content"]}
                )
    segs = pd.DataFrame(rows, columns=["utterance", "variant", "seg_index", "speaker", "gender",
                                       "emotion", "corpus", "language", "content"])
    return segs, failures, fdir


def _load_features(segs: pd.DataFrame, fdir: Path) -> np.ndarray:
    """Stack the cached features of the rows of ``segs`` (in order).

    Entries are named by the ``content`` column (by ``utterance`` in run directories prepared
    before the cache was keyed by content).
    """
    out = None
    pos = 0
    name_col = "content" if "content" in segs.columns else "utterance"
    for (name, v), grp in segs.groupby([name_col, "variant"], sort=False):
        f = fdir / check_path_component(str(v), "variant name", error=RunDirError) / (
            check_path_component(str(name), "cache entry name", error=RunDirError) + ".npy")
        if not f.exists():
            raise RunDirError(
                f"cached features {f} are missing (cache deleted?); run `seradv prepare` again"
            )
        idx = grp["seg_index"].to_numpy()
        arr = None
        if npy_is_complete(f):
            try:
                arr = load_npy(f, mmap=True)
            except (ValueError, OSError, EOFError):
                arr = None
        if arr is None or arr.ndim != 3 or (len(idx) and int(idx.max()) >= arr.shape[0]):
            raise RunDirError(
                f"cached features {f} are damaged (truncated or not the prepared array); "
                f"run `seradv prepare` again with this run's config to recompute them"
            )
        if out is None:
            out = np.empty((len(segs),) + arr.shape[1:], np.float32)
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


@dataclass
class Preparation:
    """A finished preparation held in memory: the preprocessing record and the bytes of
    every run-directory file, in the order :func:`write_preparation` writes them
    (:data:`seradv.rundir.PREPARATION_FILES`: ``config.yaml`` last)."""

    info: Preprocessing
    files: dict[str, bytes]


@dataclass
class CVPreparation:
    """A finished speaker-fold CV preparation held in memory: the top-level files
    (:data:`seradv.rundir.CV_FILES`: manifest, skipped files, ``folds.csv``, ``config.yaml``
    last) and one ordinary :class:`Preparation` per fold (fold 1 first)."""

    files: dict[str, bytes]
    folds: list[Preparation]
    folds_table: pd.DataFrame
    """speaker, fold, gender, language: every speaker in exactly one fold's test set."""

    @property
    def info(self) -> Preprocessing:
        """A summary record for display: fold 1's, with every fold's counts (a ``fold`` key
        each) and the clip box spanning the folds' boxes (each fold keeps its own)."""
        first = self.folds[0].info
        counts = [{"fold": k, **c} for k, p in enumerate(self.folds, start=1) for c in (p.info.counts or [])]
        lo = min(p.info.clip[0] for p in self.folds)
        hi = max(p.info.clip[1] for p in self.folds)
        return dataclasses.replace(first, counts=counts, clip_values=[lo, hi], leak_note=(
            f"speaker-independent: {len(self.folds)}-fold speaker cross-validation, every speaker tested once; "
            "validation utterances of the training speakers, none of them in training"))


def check_source(cfg: RunConfig, manifest: Manifest | pd.DataFrame | None = None) -> None:
    """Check, before anything is read or written, that ``cfg`` is valid and its corpus usable:
    a registered corpus, an existing data folder (or a valid given table)."""
    cfg.validate()
    recipe = get_corpus(cfg.data.corpus)
    if manifest is not None:
        table = manifest.table if isinstance(manifest, Manifest) else manifest
        validate_manifest(table)
        return
    if cfg.data.data_dir is None:
        if recipe.default_data_dir is None:
            raise CorpusError(f"{cfg.data.corpus}: no data folder given; pass --data-dir / data_dir=")
        return
    data_dir = Path(cfg.data.data_dir).expanduser()
    if not data_dir.is_dir():  # missing, or a file: the corpus scan's own one-line error, raised now
        find_audio_files(data_dir, corpus=cfg.data.corpus)


def _csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


def build_preparation(
    cfg: RunConfig,
    *,
    manifest: Manifest | pd.DataFrame | None = None,
    run_dir: str | Path = "<run_dir>",
) -> Preparation | CVPreparation:
    """Everything :func:`prepare` writes, computed without touching the run directory.

    Only the feature cache is written. ``run_dir`` is used in messages only. A ``speaker_cv``
    split gives a :class:`CVPreparation` (features extracted once for all folds).
    """
    check_source(cfg, manifest)
    run_dir = Path(run_dir)
    recipe = get_corpus(cfg.data.corpus)
    if manifest is None:
        manifest = load_corpus(cfg.data.corpus, cfg.data.data_dir)
    if isinstance(manifest, pd.DataFrame):
        manifest = Manifest(table=validate_manifest(manifest))
    else:
        validate_manifest(manifest.table)
    manifest_bytes = _csv_bytes(manifest.table)
    skipped = [manifest.skipped]

    emotions = sorted(cfg.data.emotions or recipe.study_emotions)
    table = select_utterances(manifest.table, emotions, max_per_speaker_class=cfg.data.max_per_class)
    log.info("%s: %d utterances of %s", cfg.data.corpus, len(table), ", ".join(emotions))
    cache_root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()

    hashes, failures = content_hashes(table)
    failures.update(content_duplicates(table, hashes))
    skipped.append(_skipped_frame(table, failures))
    table = table[~table["utterance"].isin(failures)].reset_index(drop=True)
    table["content"] = table["utterance"].map(hashes)
    if table.empty:
        raise CorpusError(f"{cfg.data.corpus}: no usable utterance left; see the skipped files")

    lengths, failures = trimmed_lengths(table, cfg.audio, cache_root, n_jobs=cfg.n_jobs)
    skipped.append(_skipped_frame(table, failures))
    table = table[table["utterance"].isin(lengths)].reset_index(drop=True)
    if table.empty:
        raise CorpusError(f"{cfg.data.corpus}: no usable utterance left; every file was skipped"
                          + _first_reasons(skipped))
    if cfg.audio.min_remainder_s is None:
        min_remainder = int(min(lengths.values()))
    else:
        min_remainder = int(round(cfg.audio.min_remainder_s * cfg.audio.sample_rate))

    all_variants = cfg.augment.variants()
    for v in all_variants:
        check_path_component(v, "augmentation variant name", error=CorpusError)
    fold_subsets: dict[int, pd.Series] = {}
    if cfg.split.kind == "speaker":
        utt_subset = speaker_split(table, cfg.split)
        variants = {
            u: (all_variants if s == "train" else ["orig"]) for u, s in zip(table["utterance"], utt_subset)
        }
    elif cfg.split.kind == "speaker_cv":
        n_folds = cfg.split.folds or default_folds(table, recipe.cv_folds)
        cfg = cfg.replace(**{"split.folds": int(n_folds)})  # saved resolved, in every config.yaml
        folds = speaker_folds(table, n_folds, cfg.split.seed)
        fold_subsets = {k: fold_split(table, folds, k, val_size=cfg.split.val_size, seed=cfg.split.seed)
                        for k in range(1, n_folds + 1)}
        utt_subset = None
        # augmented copies of the utterances that train in some fold (features are cached once)
        trains = np.logical_or.reduce([(v == "train").to_numpy() for v in fold_subsets.values()])
        variants = {u: (all_variants if t else ["orig"]) for u, t in zip(table["utterance"], trains)}
    else:
        utt_subset = None
        variants = {u: all_variants for u in table["utterance"]}

    segs, failures, fdir = extract_features(table, variants, cfg, min_remainder=min_remainder,
                                            cache_root=cache_root)
    skipped.append(_skipped_frame(table, failures))
    if segs.empty:
        raise CorpusError(f"{cfg.data.corpus}: no segment could be made; every file was skipped"
                          + _first_reasons(skipped))
    skipped_df = pd.concat([s for s in skipped if not s.empty] or [pd.DataFrame(columns=["path", "reason"])],
                           ignore_index=True)
    manifest_args = (manifest_bytes, skipped_df, table, emotions, fdir, min_remainder)
    if cfg.split.kind == "speaker_cv":
        segs = segs[segs["utterance"].map(lambda u: u not in failures)]
        preps = []
        for k, utt_sub in fold_subsets.items():
            fsegs = segs.assign(subset=segs["utterance"].map(dict(zip(table["utterance"], utt_sub))))
            # augmented copies of training utterances only
            fsegs = fsegs[(fsegs["subset"] == "train") | (fsegs["variant"] == "orig")].copy()
            try:
                _check_subsets(fsegs)
            except SplitError as exc:
                raise SplitError(f"speaker_cv fold {k}: {exc}") from None
            preps.append(_assemble(cfg, fsegs, *manifest_args, fold=(k, len(fold_subsets))))
        folds_table = (folds.rename("fold").reset_index()
                       .merge(table.groupby("speaker")[["gender", "language"]].first().reset_index(), on="speaker")
                       .sort_values(["fold", "gender", "speaker"], ascending=[True, False, True], kind="stable"))
        top = {MANIFEST: manifest_bytes, SKIPPED: _csv_bytes(skipped_df), FOLDS_CSV: _csv_bytes(folds_table),
               CONFIG: yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode("utf-8")}
        assert tuple(top) == CV_FILES
        return CVPreparation(files=top, folds=preps, folds_table=folds_table)
    if cfg.split.kind == "speaker":
        assert utt_subset is not None
        sub = dict(zip(table["utterance"], utt_subset))
        segs["subset"] = segs["utterance"].map(sub)
        segs = segs[segs["utterance"].map(lambda u: u not in failures)]
        _check_subsets(segs)
    else:
        segs["subset"] = paper_split(segs, cfg.split).to_numpy()
    return _assemble(cfg, segs, *manifest_args)


def _assemble(cfg: RunConfig, segs: pd.DataFrame, manifest_bytes: bytes, skipped_df: pd.DataFrame,
              table: pd.DataFrame, emotions: list[str], fdir: Path, min_remainder: int, *,
              fold: tuple[int, int] | None = None) -> Preparation:
    """The :class:`Preparation` of segments whose ``subset`` is decided: labels, standardizer
    (fitted on the training segments; on all of them in the paper split), records and file bytes.
    ``fold``: ``(k, K)`` for fold ``k`` of a speaker-fold CV run."""
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
    scaler_bytes = scaler.to_bytes()

    split_table = (
        segs.groupby("utterance", sort=False)
        .agg(speaker=("speaker", "first"), gender=("gender", "first"), emotion=("emotion", "first"),
             subset=("subset", lambda s: "+".join(sorted(set(s)))), n_segments=("subset", "size"))
        .reset_index()
    )
    segments_bytes = _csv_bytes(segs)

    leaked = int((split_table["subset"].str.contains(r"\+")).sum())
    info = Preprocessing(
        corpus=cfg.data.corpus,
        language=str(table["language"].iloc[0]) if table["language"].nunique() == 1 else "mixed",
        languages=sorted(table["language"].unique()),
        classes=emotions,
        split=cfg.split.kind,
        leaky=cfg.split.leaky,
        leak_note=(
            "LEAKY: the study's split; augmented copies and segments of one utterance, and every "
            "speaker, appear in both train and test, so clean accuracy is optimistic"
            if cfg.split.leaky else "speaker-independent: no test speaker is seen in training"
            + ("" if fold is None else f" (fold {fold[0]} of {fold[1]} of a speaker-fold cross-validation; "
                                       "validation utterances of the training speakers, none of them in training)")
        ),
        utterances_in_several_subsets=leaked,
        clip_values=[float(lo), float(hi)],
        standardization_fitted_on="all segments (study)" if cfg.split.leaky else "training segments",
        min_remainder_samples=min_remainder,
        feature_cache=str(fdir.resolve()),
        input_shape=[int(1 + cfg.audio.segment_samples // cfg.features.hop_length), cfg.features.n_mels],
        counts=describe_split(segs).to_dict(orient="records"),
        n_skipped=int(len(skipped_df)),
        preprocessing_version=PREPROCESSING_VERSION,
        segments_sha256=hashlib.sha256(segments_bytes).hexdigest(),
        standardizer_sha256=hashlib.sha256(scaler_bytes).hexdigest(),
    )
    files = {
        MANIFEST: manifest_bytes,
        SKIPPED: _csv_bytes(skipped_df),
        SPLIT: _csv_bytes(split_table),
        SEGMENTS: segments_bytes,
        STANDARDIZER: scaler_bytes,
        PREPROCESSING: info.to_json_bytes(),
        CONFIG: yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode("utf-8"),
    }
    assert tuple(files) == PREPARATION_FILES
    return Preparation(info=info, files=files)


def write_preparation(prep: Preparation | CVPreparation, run_dir: str | Path) -> None:
    """Write a :class:`Preparation` into ``run_dir`` (atomically per file, ``config.yaml`` last);
    a :class:`CVPreparation`: every fold into ``folds/fold-<k>/``, then the top-level files."""
    run_dir = Path(run_dir)
    if isinstance(prep, CVPreparation):
        for k, fold in enumerate(prep.folds, start=1):
            write_preparation(fold, fold_dir(run_dir, k))
    for name, data in prep.files.items():
        atomic_write_bytes(run_dir / name, data)


def prepare(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    manifest: Manifest | pd.DataFrame | None = None,
) -> dict:
    """Build features, split and standardizer for ``cfg`` into ``run_dir``.

    ``manifest`` may be given (a table from :func:`seradv.corpora.load_corpus` or any
    DataFrame with the manifest columns); otherwise the corpus is read from ``cfg.data``.
    Nothing is written into ``run_dir`` unless the whole preparation succeeds
    (:func:`build_preparation`, then :func:`write_preparation`). Returns the preprocessing
    record (:class:`seradv.rundir.Preprocessing`, the content of ``preprocessing.json``).
    :func:`seradv.pipeline.prepare_run` also removes the outputs that a changed preparation
    makes stale.
    """
    prep = build_preparation(cfg, manifest=manifest, run_dir=run_dir)
    write_preparation(prep, run_dir)
    return prep.info


def _first_reasons(skipped: list[pd.DataFrame], n: int = 3) -> str:
    rows = [r for s in skipped if not s.empty for r in s.itertuples()][:n]
    return "".join(f"; {Path(r.path).name}: {r.reason}" for r in rows)


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


def read_segments(run_dir: str | Path, info: Preprocessing | None = None) -> pd.DataFrame:
    """``segments.csv`` of a prepared run directory, checked against ``preprocessing.json``."""
    run_dir = Path(run_dir)
    info = read_preprocessing(run_dir) if info is None else info
    path = run_dir / SEGMENTS
    data = check_sha256(path, info.segments_sha256, "prepare")
    try:
        segs = pd.read_csv(io.BytesIO(data), dtype={"utterance": str, "speaker": str, "content": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RunDirError(damaged_message(path, exc, "prepare")) from None
    need = {"segment_id", "utterance", "variant", "seg_index", "subset", "label", "emotion"}
    if not need <= set(segs.columns) or segs[sorted(need)].isna().any().any():
        raise RunDirError(damaged_message(path, "missing columns or values", "prepare"))
    return segs


def read_standardizer(run_dir: str | Path, info: Preprocessing | None = None) -> Standardizer:
    """``standardizer.safetensors`` of a prepared run directory (clear error if damaged)."""
    run_dir = Path(run_dir)
    info = read_preprocessing(run_dir) if info is None else info
    path = run_dir / STANDARDIZER
    check_sha256(path, info.standardizer_sha256, "prepare")
    try:
        scaler = Standardizer.load(path)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise RunDirError(damaged_message(path, f"{type(exc).__name__}: {exc}", "prepare")) from None
    if tuple(scaler.mean.shape) != tuple(info.input_shape) or scaler.std.shape != scaler.mean.shape:
        raise RunDirError(damaged_message(path, f"shape {scaler.mean.shape}, expected {tuple(info.input_shape)}",
                                   "prepare"))
    return scaler


def load_subset(run_dir: str | Path, subset: str = "test") -> SplitData:
    """Standardized features, labels and metadata of ``subset`` (train, val or test)."""
    if subset not in ("train", "val", "test"):
        raise RunDirError(f"subset={subset!r} must be train, val or test")
    run_dir = Path(run_dir)
    info = read_preprocessing(run_dir)
    segs = read_segments(run_dir, info)
    part = segs[segs["subset"] == subset]
    if part.empty:
        raise RunDirError(f"{run_dir}: the {subset} subset is empty")
    part = _grouped_order(part).reset_index(drop=True)
    scaler = read_standardizer(run_dir, info)
    x = _load_features(part, Path(info.feature_cache))
    x = scaler.transform(x)
    return SplitData(x=x, y=part["label"].to_numpy(np.int64), meta=part, classes=list(info.classes))
