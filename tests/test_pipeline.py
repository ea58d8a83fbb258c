"""End-to-end pipeline on small corpora made by the tests: prepare -> train -> evaluate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers.audio import speech_tone
from tests.helpers.corpus import TinyNet, make_tone_corpus, tone_config
from seradv import pipeline
from seradv.fileio import atomic_write_bytes, read_json
from seradv.prepare import load_subset
from seradv.errors import ModelError, RunDirError, SplitError

import soundfile as sf

@pytest.fixture()
def tones(tmp_path) -> Path:
    return make_tone_corpus(tmp_path / "tones")


def test_speaker_split_run_end_to_end(tones, tmp_path):
    run_dir = tmp_path / "run"
    info = pipeline.prepare_run(tone_config(tones), run_dir)
    assert info.split == "speaker" and not info.leaky
    segs = pd.read_csv(run_dir / "segments.csv")
    spk = {s: set(segs.loc[segs.subset == s, "speaker"]) for s in ("train", "val", "test")}
    assert not spk["train"] & spk["test"] and not spk["train"] & spk["val"]
    # augmentation on training utterances only
    assert set(segs.loc[segs.subset == "train", "variant"]) == {"orig", "pitch+1.5"}
    assert set(segs.loc[segs.subset != "train", "variant"]) == {"orig"}
    # standardization fitted on training data only
    train = load_subset(run_dir, "train")
    assert abs(float(train.x.mean())) < 1e-3
    lo, hi = info.clip_values
    assert lo == np.floor(train.x.min()) and hi == np.ceil(train.x.max())

    meta = pipeline.train_run(run_dir)
    assert meta["model"] == "tiny" and (run_dir / "model.safetensors").exists()
    hist = pd.read_csv(run_dir / "history.csv")
    assert list(hist.columns[:5]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    table = pipeline.evaluate_run(run_dir)
    assert list(table["group"]) == ["All", "Male", "Female"]
    assert table.loc[0, "n"] == table.loc[1, "n"] + table.loc[2, "n"]
    m = read_json(run_dir / "metrics.json")
    assert len(m["test_speakers"]) == 2 and m["split"] == "speaker"
    for f in ("config.yaml", "manifest.csv", "split.csv", "segments.csv", "metrics.csv",
              "confusion.csv", "predictions.csv", "log.txt", "preprocessing.json"):
        assert (run_dir / f).exists(), f
    conf = pd.read_csv(run_dir / "confusion.csv")
    assert conf[conf.group == "All"]["count"].sum() == table.loc[0, "n"]


def test_paper_split_is_labelled_leaky(tones, tmp_path):
    cfg = tone_config(tones).replace(**{"split.kind": "paper"})
    info = pipeline.prepare_run(cfg, tmp_path / "p")
    assert info.leaky and "LEAKY" in info.leak_note
    assert info.standardization_fitted_on.startswith("all")
    split = pd.read_csv(tmp_path / "p" / "split.csv")
    assert (split["subset"].str.contains(r"\+")).any()  # copies of one utterance on both sides


def test_feature_cache_is_reused(tones, tmp_path):
    cfg = tone_config(tones)
    info = pipeline.prepare_run(cfg, tmp_path / "a")
    files = sorted(Path(info.feature_cache).rglob("*.npy"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    info2 = pipeline.prepare_run(cfg, tmp_path / "b")
    assert info2.feature_cache == info.feature_cache
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    a, b = load_subset(tmp_path / "a", "test"), load_subset(tmp_path / "b", "test")
    np.testing.assert_array_equal(a.x, b.x)
    other = pipeline.prepare_run(cfg.replace(**{"features.n_fft": 512}), tmp_path / "c")
    assert other.feature_cache != info.feature_cache


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.npy"

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_training_resumes_to_the_same_result(tones, tmp_path):
    cfg = tone_config(tones, epochs=3)
    pipeline.prepare_run(cfg, tmp_path / "full")
    pipeline.train_run(tmp_path / "full")
    pipeline.prepare_run(cfg, tmp_path / "resumed")
    pipeline.train_run(tmp_path / "resumed", train_overrides={"epochs": 1})  # "interrupted" after 1
    pipeline.train_run(tmp_path / "resumed", train_overrides={"epochs": 3})
    a = pipeline.load_model(tmp_path / "full").state_dict()
    b = pipeline.load_model(tmp_path / "resumed").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    h1 = pd.read_csv(tmp_path / "full" / "history.csv")
    h2 = pd.read_csv(tmp_path / "resumed" / "history.csv")
    np.testing.assert_allclose(h1["val_loss"], h2["val_loss"], rtol=1e-6)


def test_any_torch_module_can_be_trained(tones, tmp_path):
    run_dir = tmp_path / "custom"
    pipeline.prepare_run(tone_config(tones, epochs=1), run_dir)
    meta = pipeline.train_run(run_dir, model=TinyNet(3))
    assert meta["model"] == "TinyNet" and not meta["registered"]
    with pytest.raises(ModelError, match="unregistered model 'TinyNet'"):
        pipeline.load_model(run_dir)
    assert isinstance(pipeline.load_model(run_dir, model=TinyNet(3)), TinyNet)
    with pytest.raises(ModelError, match="returns shape"):
        pipeline.train_run(run_dir, model=TinyNet(4))


def test_stage_errors_are_clear(tones, tmp_path):
    with pytest.raises(RunDirError, match="not a prepared run directory"):
        pipeline.train_run(tmp_path) if (tmp_path / "config.yaml").exists() else pipeline.evaluate_run(tmp_path)
    pipeline.prepare_run(tone_config(tones), tmp_path / "r")
    with pytest.raises(RunDirError, match="no trained model"):
        pipeline.evaluate_run(tmp_path / "r")


def test_bad_files_are_skipped_and_reported(tones, tmp_path):
    # a file that is readable but silent: fails at trimming, reported in skipped.csv
    sf.write(tones / "m1_neutral_8.wav", speech_tone(0.02, 16000), 16000)
    sf.write(tones / "m0_neutral_9.wav", np.zeros(16000, np.float32), 16000)
    (tones / "f0_sadness_9.wav").write_bytes(b"not audio at all")
    run_dir = tmp_path / "r"
    pipeline.prepare_run(tone_config(tones), run_dir)
    skipped = pd.read_csv(run_dir / "skipped.csv")
    reasons = dict(zip(skipped["path"].map(lambda p: Path(p).name), skipped["reason"]))
    assert "silent" in reasons["m0_neutral_9.wav"]
    assert "not a readable audio file" in reasons["f0_sadness_9.wav"]
    assert "shorter than one analysis frame" in reasons["m1_neutral_8.wav"]
    assert len(pd.read_csv(run_dir / "split.csv")) == 36


def test_too_few_speakers_is_a_clear_error(tmp_path):
    data = make_tone_corpus(tmp_path / "small", n_per_gender=2, per=1)
    with pytest.raises(SplitError, match="needs at least 3 male speakers"):
        pipeline.prepare_run(tone_config(data), tmp_path / "r")


def test_cli_reports_errors_in_one_line(tmp_path):
    exe = Path(sys.executable).with_name("seradv")
    proc = subprocess.run([str(exe), "manifest", "emodb", "--data-dir", str(tmp_path / "nope"),
                           "-o", str(tmp_path / "m.csv")], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    proc = subprocess.run([str(exe), "train", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2 and "no config.yaml" in proc.stderr
    for verb in ("manifest", "prepare", "train", "evaluate", "run"):
        out = subprocess.run([str(exe), verb, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "Usage" in out.stdout


def test_a_training_state_of_other_settings_is_not_resumed(tmp_path, caplog):
    """train_state.pt of a finished training must not be resumed by a training with another
    seed: that would silently give the old weights under the new config."""
    from tests.helpers.corpus import make_tone_corpus, tone_config

    data = make_tone_corpus(tmp_path / "tones", n_per_gender=3, per=2)
    run = tmp_path / "run"
    pipeline.prepare_run(tone_config(data, epochs=2), run)
    pipeline.train_run(run)
    first = (run / "model.safetensors").read_bytes()
    pipeline.train_run(run)  # same settings: resumes the finished state, same weights
    assert (run / "model.safetensors").read_bytes() == first
    pipeline.train_run(run, train_overrides={"seed": 5})
    assert "saved by another training" in caplog.text
    assert (run / "model.safetensors").read_bytes() != first


def test_load_model_on_cuda_without_cuda_is_a_clear_error(tmp_path, monkeypatch):
    import torch

    from seradv.errors import ParameterError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParameterError, match="CUDA is not available"):
        pipeline.load_model(tmp_path, device="cuda")
