"""Stale, damaged or unsafe state: content-keyed cache, downstream invalidation, environment
faults, truncated files, failed prepares, content duplicates, file modes and unsafe ids."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.helpers.audio import speech_tone
from tests.helpers.corpus import make_tone_corpus, tone_config
from seradv import fileio as cache, pipeline
from seradv.corpora import load_corpus, validate_manifest
from seradv.prepare import load_subset
from seradv.errors import CorpusError, RunDirError, SeradvError
from seradv.rundir import Preprocessing

RAVDESS_DIR = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "ravdess"


@pytest.fixture()
def tones(tmp_path) -> Path:
    return make_tone_corpus(tmp_path / "tones")


def _cfg(data_dir: Path, tmp_path: Path, **kw):
    """The tones config with its own feature cache (so one test never sees another's)."""
    return tone_config(data_dir, **kw).replace(cache_dir=str(tmp_path / "cache"))


def _npy_files(info: Preprocessing) -> list[Path]:
    return sorted(Path(info.feature_cache).rglob("*.npy"))


def _reasons(run_dir: Path) -> dict[str, str]:
    skipped = pd.read_csv(run_dir / "skipped.csv")
    return dict(zip(skipped["path"].map(lambda p: Path(p).name), skipped["reason"]))


# ------------------------------------------------------------------ 1. content-keyed cache


def test_cache_is_keyed_by_content_not_by_name(tones, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tones, other)
    for k, f in enumerate(sorted(other.glob("*.wav"))):  # same names, other audio
        sf.write(f, speech_tone(1.4, 16000, freq=420.0 + 5 * k, seed=100 + k), 16000, subtype="PCM_16")
    pipeline.prepare_run(_cfg(tones, tmp_path), tmp_path / "a")
    pipeline.prepare_run(_cfg(other, tmp_path), tmp_path / "b")
    a, b = load_subset(tmp_path / "a", "test"), load_subset(tmp_path / "b", "test")
    assert list(a.meta["utterance"]) == list(b.meta["utterance"])
    assert not np.array_equal(a.x, b.x)
    # and each equals a fresh preparation with an empty cache
    pipeline.prepare_run(_cfg(other, tmp_path / "fresh"), tmp_path / "c")
    np.testing.assert_array_equal(b.x, load_subset(tmp_path / "c", "test").x)


def test_a_fixed_file_is_no_longer_skipped(tones, tmp_path):
    bad = tones / "m0_neutral_9.wav"
    sf.write(bad, np.zeros(16000, np.float32), 16000)  # readable, silent: fails at trimming
    cfg = _cfg(tones, tmp_path)
    pipeline.prepare_run(cfg, tmp_path / "r")
    assert "silent" in _reasons(tmp_path / "r")["m0_neutral_9.wav"]
    sf.write(bad, speech_tone(1.5, 16000, freq=190.0, seed=7), 16000, subtype="PCM_16")
    pipeline.prepare_run(cfg, tmp_path / "r")
    assert "m0_neutral_9.wav" not in _reasons(tmp_path / "r")
    assert "m0_neutral_9" in set(pd.read_csv(tmp_path / "r" / "split.csv")["utterance"])


def test_content_hash_cost_on_real_emodb(emodb_dir):
    """Hashing every EmoDB file (535 files, 48 MB) is cheap next to feature extraction."""
    import time

    from seradv.fileio import file_sha256

    files = sorted(emodb_dir.rglob("*.wav"))
    t0 = time.perf_counter()
    hashes = {file_sha256(f) for f in files}
    seconds = time.perf_counter() - t0
    assert len(hashes) == len(files) == 535
    assert seconds < 10.0  # ~0.15 s measured on a busy 2-core machine


# ------------------------------------------------------------------ 2. downstream invalidation


def _fake_attack_outputs(run_dir: Path) -> None:
    (run_dir / "attacks" / "cells").mkdir(parents=True, exist_ok=True)
    (run_dir / "attacks" / "results.csv").write_text("cell_id,accuracy\nx,0.5\n")
    (run_dir / "attacks" / "cells" / "x.json").write_text("{}")
    (run_dir / "report").mkdir(exist_ok=True)
    (run_dir / "report" / "index.html").write_text("<html></html>")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A prepared, trained (1 epoch) and evaluated tones run; tests copy it before changing it."""
    root = tmp_path_factory.mktemp("stale-trained")
    data = make_tone_corpus(root / "tones")
    run_dir = root / "run"
    pipeline.prepare_run(_cfg(data, root, epochs=1), run_dir)
    pipeline.train_run(run_dir)
    pipeline.evaluate_run(run_dir)
    return run_dir


def _copy_run(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def test_reprepare_invalidates_models_metrics_attacks_and_report(trained_run, tmp_path):
    run_dir = _copy_run(trained_run, tmp_path)
    _fake_attack_outputs(run_dir)
    cfg = pipeline.load_run_config(run_dir)
    pipeline.prepare_run(cfg, run_dir)  # the same preparation: nothing is stale
    pipeline.prepare_run(cfg.replace(**{"attack.limit": 7}), run_dir)  # nor with other attack settings
    for f in ("model.safetensors", "metrics.json", "attacks/results.csv", "report/index.html"):
        assert (run_dir / f).exists(), f
    assert pipeline.load_run_config(run_dir).attack.limit == 7
    pipeline.prepare_run(cfg.replace(**{"augment.pitch_steps": [-1.5]}), run_dir)
    for f in ("model.safetensors", "model.json", "train_state.pt", "history.csv", "metrics.json",
              "metrics.csv", "confusion.csv", "predictions.csv", "attacks", "report"):
        assert not (run_dir / f).exists(), f
    assert (run_dir / "segments.csv").exists() and (run_dir / "config.yaml").exists()


def test_retrain_invalidates_metrics_and_attack_results(trained_run, tmp_path):
    run_dir = _copy_run(trained_run, tmp_path)
    _fake_attack_outputs(run_dir)
    (run_dir / "train_state.pt").unlink()  # train again from scratch
    pipeline.train_run(run_dir, train_overrides={"seed": 1})
    assert (run_dir / "model.safetensors").exists() and (run_dir / "model.json").exists()
    for f in ("metrics.json", "metrics.csv", "confusion.csv", "predictions.csv", "attacks", "report"):
        assert not (run_dir / f).exists(), f


def test_retrain_to_the_same_weights_keeps_results(trained_run, tmp_path):
    """`seradv run` again trains again; a finished training gives the same weights and must not
    throw away the attack results of an interrupted grid."""
    run_dir = _copy_run(trained_run, tmp_path)
    _fake_attack_outputs(run_dir)
    pipeline.train_run(run_dir)  # resumes the finished state: the same weights
    for f in ("metrics.json", "attacks/results.csv", "report/index.html"):
        assert (run_dir / f).exists(), f


def test_damaged_trim_cache_is_rebuilt(tones, tmp_path):
    cfg = _cfg(tones, tmp_path)
    pipeline.prepare_run(cfg, tmp_path / "a")
    (trim_cache,) = (tmp_path / "cache").rglob("trimmed-*.json")
    trim_cache.write_text(trim_cache.read_text()[:40])
    pipeline.prepare_run(cfg, tmp_path / "b")
    assert _reasons(tmp_path / "b") == {}
    assert len(pd.read_csv(tmp_path / "b" / "split.csv")) == len(pd.read_csv(tmp_path / "a" / "split.csv"))


def test_run_fingerprints_follow_model_and_preparation(trained_run, tmp_path):
    from seradv.rundir import run_fingerprints

    run_dir = _copy_run(trained_run, tmp_path)
    fp = run_fingerprints(run_dir)
    assert set(fp) >= {"model", "preprocessing"}
    assert all(isinstance(v, str) and len(v) == 64 for v in (fp["model"], fp["preprocessing"]))
    assert run_fingerprints(run_dir) == fp
    (run_dir / "train_state.pt").unlink()
    pipeline.train_run(run_dir, train_overrides={"seed": 3})
    fp2 = run_fingerprints(run_dir)
    assert fp2["model"] != fp["model"] and fp2["preprocessing"] == fp["preprocessing"]
    assert run_fingerprints(tmp_path / "nothing") == {"model": None, "preprocessing": None}


# ------------------------------------------------------------------ 3. environment faults


def _fail_npy_fsync(monkeypatch, err: int) -> None:
    real = os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if ".npy." in name:
            raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(cache.os, "fsync", fsync)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS])
def test_environment_errors_abort_prepare(tones, tmp_path, monkeypatch, err):
    from seradv.errors import EnvironmentFault

    _fail_npy_fsync(monkeypatch, err)
    run_dir = tmp_path / "r"
    with pytest.raises(EnvironmentFault) as info:
        pipeline.prepare_run(_cfg(tones, tmp_path), run_dir)
    msg = str(info.value)
    assert "\n" not in msg and os.strerror(err) in msg and ".npy" in msg
    assert not (run_dir / "segments.csv").exists() and not (run_dir / "config.yaml").exists()


def test_memory_error_aborts_prepare(tones, tmp_path, monkeypatch):
    from seradv import prepare as dataset
    from seradv.errors import EnvironmentFault

    def oom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(dataset, "log_mel", oom)
    with pytest.raises(EnvironmentFault, match="out of memory"):
        pipeline.prepare_run(_cfg(tones, tmp_path), tmp_path / "r")


def test_environment_fault_is_one_line_in_the_cli(tmp_path, monkeypatch, capsys):
    from seradv.errors import EnvironmentFault

    assert issubclass(EnvironmentFault, SeradvError)
    exc = cache.environment_fault(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "x.npy")
    assert isinstance(exc, EnvironmentFault) and "\n" not in str(exc) and "x.npy" in str(exc)
    assert cache.environment_fault(OSError(errno.EIO, "I/O error"), tmp_path / "x") is None


# ------------------------------------------------------------------ 4. truncated files


def test_truncated_cache_entry_is_recomputed(tones, tmp_path):
    cfg = _cfg(tones, tmp_path)
    info = pipeline.prepare_run(cfg, tmp_path / "a")
    before = load_subset(tmp_path / "a", "test").x
    victim = _npy_files(info)[0]
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])
    pipeline.prepare_run(cfg, tmp_path / "b")
    assert _reasons(tmp_path / "b") == {}
    assert victim.read_bytes() == whole
    np.testing.assert_array_equal(load_subset(tmp_path / "b", "test").x, before)


def test_truncated_cache_entry_at_load_names_the_file(tones, tmp_path):
    info = pipeline.prepare_run(_cfg(tones, tmp_path), tmp_path / "a")
    segs = pd.read_csv(tmp_path / "a" / "segments.csv")
    test_row = segs[segs.subset == "test"].iloc[0]
    victim = Path(info.feature_cache) / test_row["variant"] / f"{test_row['content']}.npy"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(RunDirError, match=rf"{victim.name}.*damaged.*seradv prepare"):
        load_subset(tmp_path / "a", "test")


@pytest.mark.parametrize("name, stage", [
    ("segments.csv", "prepare"), ("preprocessing.json", "prepare"),
    ("standardizer.safetensors", "prepare"), ("model.json", "train"), ("model.safetensors", "train"),
])
def test_truncated_run_files_give_a_clear_error(trained_run, tmp_path, name, stage):
    run_dir = _copy_run(trained_run, tmp_path)
    f = run_dir / name
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError) as info:
        pipeline.evaluate_run(run_dir)
    msg = str(info.value)
    assert name in msg and f"seradv {stage}" in msg and "\n" not in msg


def test_truncated_train_state_restarts_training(trained_run, tmp_path, caplog):
    run_dir = _copy_run(trained_run, tmp_path)
    f = run_dir / "train_state.pt"
    f.write_bytes(f.read_bytes()[:200])
    meta = pipeline.train_run(run_dir)
    assert meta["epochs_run"] == 1
    assert "train_state.pt" in caplog.text


# ------------------------------------------------------------------ 5. failed prepare


def test_failed_prepare_writes_nothing(tones, tmp_path):
    run_dir = tmp_path / "r"
    cfg = _cfg(tones, tmp_path)
    pipeline.prepare_run(cfg, run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "log.txt"}
    with pytest.raises(CorpusError, match="does not exist"):
        pipeline.prepare_run(cfg.replace(**{"data.data_dir": str(tmp_path / "missing")}), run_dir)
    with pytest.raises(CorpusError, match="no utterance"):
        pipeline.prepare_run(cfg.replace(**{"data.emotions": ["anger"]}), run_dir)
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "log.txt"}
    assert after == before
    with pytest.raises(CorpusError):
        pipeline.prepare_run(cfg.replace(**{"data.data_dir": str(tmp_path / "missing")}), tmp_path / "new")
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ 6. content duplicates


def test_content_duplicates_are_skipped_with_the_original_named(tones):
    shutil.copy(tones / "m0_happiness_0.wav", tones / "m0_happiness_7.wav")
    m = load_corpus("tones", tones)
    assert "m0_happiness_7" not in set(m.table["utterance"])
    reason = m.skipped.set_index(m.skipped["path"].map(lambda p: Path(p).name))["reason"]
    assert "duplicate of" in reason["m0_happiness_7.wav"] and "m0_happiness_0" in reason["m0_happiness_7.wav"]


def test_duplicates_in_a_given_manifest_are_skipped(tones, tmp_path):
    shutil.copy(tones / "f1_sadness_1.wav", tones / "f1_sadness_8.wav")
    table = load_corpus("tones", tones).table  # the recipe drops it; add it back by hand
    row = table[table.utterance == "f1_sadness_1"].assign(
        utterance="f1_sadness_8", path=str((tones / "f1_sadness_8.wav").resolve()))
    table = pd.concat([table, row], ignore_index=True)
    run_dir = tmp_path / "r"
    pipeline.prepare_run(_cfg(tones, tmp_path), run_dir, manifest=table)
    assert "duplicate of" in _reasons(run_dir)["f1_sadness_8.wav"]
    assert "f1_sadness_8" not in set(pd.read_csv(run_dir / "split.csv")["utterance"])


def test_real_ravdess_duplicate_is_found():
    actor = RAVDESS_DIR / "Actor_07"
    if not actor.is_dir():
        pytest.skip(f"real RAVDESS not found at {RAVDESS_DIR} (download it there to run this test)")
    m = load_corpus("ravdess", actor)
    assert len(m.table) == 59
    assert "03-01-03-01-02-01-07" in set(m.table["utterance"])
    dup = m.skipped[m.skipped["path"].str.contains("03-01-03-01-02-02-07")]
    assert len(dup) == 1 and "duplicate of" in dup["reason"].iloc[0]
    assert "03-01-03-01-02-01-07" in dup["reason"].iloc[0]


# ------------------------------------------------------------------ 7. file modes


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_umask_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        cache.atomic_write_bytes(tmp_path / "a.bin", b"x")
        with open(tmp_path / "b.bin", "wb") as fh:
            fh.write(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o666 & ~mask


# ------------------------------------------------------------------ 8. unsafe ids


@pytest.mark.parametrize("bad", ["../../evil", "a/b", "a\\b", "..", ".", "x\x00y", ""])
def test_unsafe_utterance_ids_are_rejected(tones, tmp_path, bad):
    table = load_corpus("tones", tones).table.copy()
    table.loc[0, "utterance"] = bad
    with pytest.raises(CorpusError, match="utterance id"):
        validate_manifest(table)
    with pytest.raises(CorpusError, match="utterance id"):
        pipeline.prepare_run(_cfg(tones, tmp_path), tmp_path / "r", manifest=table)
    assert not (tmp_path / "r").exists()
    assert not (tmp_path / "evil").exists()


def test_unsafe_corpus_names_are_rejected(tones):
    table = load_corpus("tones", tones).table.copy()
    table["corpus"] = "../x"
    with pytest.raises(CorpusError, match="corpus name"):
        validate_manifest(table)
    with pytest.raises(SeradvError, match="path separator"):
        cache.check_path_component("a/b", "utterance id")
