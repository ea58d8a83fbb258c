"""Universal waveform perturbation (seradv.attacks.waveform.universal): its SNR budget relative to
the reference level, the [-1, 1] box, that it fools more than random noise of the same SNR, and
universal_run's files (measured on the written 16-bit WAVs), atomic writing and reuse."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from tests.helpers.waveform import tone_batch, tone_waveform_model
from seradv.attacks.waveform import universal
from seradv.attacks.waveform.metrics import snr_db
from seradv.attacks.waveform.realize import PCM16_STEP, numpy_features, read_wavs
from seradv.attacks.waveform.segments import segment_waveforms
from seradv.attacks.waveform.universal import (add_perturbation, budget_radius, learn_universal, reference_rms,
                                               universal_dir, universal_run)
from seradv.errors import ParameterError, RunDirError
from seradv.evaluation import predict_logits
from seradv.prepare import load_subset, read_segments, read_standardizer
from seradv.rundir import load_model, load_run_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wm():
    return tone_waveform_model()


def _accuracy(wm, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((wm(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy() == y).mean())


def _snr_ref(v: np.ndarray, ref: float) -> float:
    return float(20 * np.log10(ref / np.sqrt(np.mean(np.asarray(v, np.float64) ** 2))))


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("snr", [30.0, 15.0])
def test_universal_perturbation_uses_its_snr_budget_relative_to_the_reference(wm, snr):
    x, y = tone_batch(range(4))
    v = learn_universal(wm, x, y, snr_db=snr, steps=30, batch_size=6, seed=0)
    assert v.shape == (x.shape[1],) and v.dtype == np.float32 and np.isfinite(v).all()
    ref = reference_rms(x)
    np.testing.assert_allclose(ref, np.mean(np.sqrt(np.mean(x.astype(np.float64) ** 2, 1))))
    assert snr - 1e-4 <= _snr_ref(v, ref) <= snr + 0.5  # inside the ball, and on (near) its surface
    # another reference level scales the budget with it
    v2 = learn_universal(wm, x, y, snr_db=snr, steps=30, batch_size=6, seed=0, reference=ref / 10)
    assert snr - 1e-4 <= _snr_ref(v2, ref / 10) <= snr + 0.5


def test_adding_the_perturbation_stays_in_the_sample_box():
    x, _ = tone_batch(range(2))
    loud = x / np.abs(x).max(1, keepdims=True) * 0.999  # peaks next to full scale
    v = np.full(x.shape[1], 0.01, np.float32)
    out = add_perturbation(loud, v)
    assert out.dtype == np.float32 and np.abs(out).max() <= 1.0
    assert (out == 1.0).any()  # some samples were clipped ...
    np.testing.assert_array_equal(out, np.clip(loud.astype(np.float32) + v, -1, 1))  # ... and only clipped
    with pytest.raises(ParameterError, match="does not fit"):
        add_perturbation(loud, v[:-1])


def test_universal_perturbation_fools_held_out_tones_more_than_random_noise_of_the_same_snr(wm):
    x_train, y_train = tone_batch(range(10))
    x_test, y_test = tone_batch(range(10, 20))  # other pitch offsets and noise seeds
    assert _accuracy(wm, x_test, y_test) == 1.0
    v = learn_universal(wm, x_train, y_train, snr_db=15.0, steps=60, batch_size=10, seed=0)
    rnd = np.random.default_rng(1).standard_normal(v.shape)
    rnd *= np.linalg.norm(v) / np.linalg.norm(rnd)
    acc_univ = _accuracy(wm, add_perturbation(x_test, v), y_test)
    acc_rand = _accuracy(wm, add_perturbation(x_test, rnd.astype(np.float32)), y_test)
    assert acc_rand >= 0.8  # noise at 15 dB barely matters to the tone model ...
    assert acc_univ <= acc_rand - 0.3  # ... the learned direction does (measured: 0.33 vs 0.9)


def test_learning_is_seeded_and_restores_the_train_flag(wm):
    x, y = tone_batch(range(3))
    wm.train()
    a = learn_universal(wm, x, y, snr_db=20.0, steps=5, batch_size=4, seed=3)
    assert wm.training
    wm.eval()
    b = learn_universal(wm, x, y, snr_db=20.0, steps=5, batch_size=4, seed=3)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_bad_inputs_get_one_line_errors(wm):
    x, y = tone_batch(range(1))
    with pytest.raises(ParameterError, match="steps=0"):
        learn_universal(wm, x, y, snr_db=20.0, steps=0)
    with pytest.raises(ParameterError, match="labels"):
        learn_universal(wm, x, y[:1], snr_db=20.0)
    with pytest.raises(ParameterError, match="inside"):
        learn_universal(wm, x + 1.5, y, snr_db=20.0)
    with pytest.raises(ParameterError, match="silent"):
        reference_rms(np.zeros((2, 100)))
    with pytest.raises(ParameterError, match="snr_db"):
        budget_radius(0.1, float("nan"), 100)
    with pytest.raises(ParameterError, match="step_frac"):
        learn_universal(wm, x, y, snr_db=20.0, step_frac=0)


# ----------------------------------------------------------------------------- a run's universal perturbation


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from seradv import pipeline
    from tests.helpers.corpus import prepared_tone_run

    run_dir = prepared_tone_run(tmp_path_factory.mktemp("universal"))
    pipeline.train_run(run_dir)
    return run_dir


KW = dict(snr_db=20.0, steps=20, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def facts(run):
    return universal_run(run, **KW)


def test_universal_run_is_measured_on_its_written_files(run, facts):
    out = universal_dir(run, 20.0)
    assert out.name == "snr20" and (out / "universal.json").is_file()
    assert json.loads((out / "universal.json").read_text()) == json.loads(json.dumps(facts))
    cfg = load_run_config(run)
    segs = read_segments(run)
    assert facts["n_train"] == int((segs["subset"] == "train").sum())  # n_train 256 > the 24 there are
    samples = pd.read_csv(out / "samples.csv", dtype={"utterance": str, "speaker": str})
    test_ids = set(segs.loc[segs["subset"] == "test", "segment_id"])
    assert facts["n_test"] == len(samples) and set(samples["segment_id"]) == test_ids  # limit None: all of them
    # v as .npy and as a 16-bit WAV at its true level
    v = np.load(out / "v.npy")
    v_wav, sr = sf.read(out / "v.wav", dtype="float64")
    assert sr == cfg.audio.sample_rate and sf.info(str(out / "v.wav")).subtype == "PCM_16"
    np.testing.assert_allclose(v_wav, v, atol=PCM16_STEP)
    assert abs(facts["snr_ref_db"] - _snr_ref(v, facts["reference_rms"])) < 1e-6
    assert facts["snr_ref_db"] >= 20.0 - 1e-4
    # the verdicts and the per-segment SNR are those of the files as written, read back here
    paths = [out / "wav" / f"{s}.wav" for s in samples["segment_id"]]
    written = read_wavs(paths, sample_rate=cfg.audio.sample_rate)
    assert np.abs(written).max() <= 1.0
    x = numpy_features(written, sample_rate=cfg.audio.sample_rate, features=cfg.features,
                       standardizer=read_standardizer(run))
    pred = predict_logits(load_model(run), x).argmax(1)
    np.testing.assert_array_equal(pred, samples["pred_adv"].to_numpy())
    y, clean = samples["label"].to_numpy(), samples["pred_clean"].to_numpy()
    np.testing.assert_allclose(facts["robust_accuracy"], np.mean((clean == y) & (pred == y)))
    np.testing.assert_allclose(facts["flip_rate"], np.mean(pred != clean))
    test = load_subset(run, "test")
    meta = test.meta.set_index("segment_id").loc[samples["segment_id"]].reset_index()
    clean_wave = segment_waveforms(run, meta)
    np.testing.assert_allclose(samples["snr_db"], snr_db(clean_wave, written), rtol=1e-9)
    np.testing.assert_allclose(written, np.clip(clean_wave + v, -1, 1), atol=PCM16_STEP)  # one v for all
    assert facts["segment_snr_db_min"] <= facts["segment_snr_db_mean"] <= facts["segment_snr_db_max"]
    assert 0.0 <= facts["random_robust_accuracy"] <= 1.0
    assert len(list((out / "wav_random").glob("*.wav"))) == len(samples)


def test_universal_run_is_reused_with_the_same_settings_and_model(run, facts, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("learned again")

    monkeypatch.setattr(universal, "learn_universal", boom)
    assert universal_run(run, **KW) == facts
    with pytest.raises(AssertionError, match="learned again"):  # other settings: learned again
        universal_run(run, **{**KW, "steps": 21})
    assert json.loads((universal_dir(run, 20.0) / "universal.json").read_text())["settings"]["steps"] == 20


def test_a_failed_universal_run_leaves_the_previous_folder_and_no_temporary_one(run, facts, monkeypatch):
    def fail(*a, **k):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(universal, "realized_predictions", fail)
    with pytest.raises(RuntimeError, match="disk gone"):
        universal_run(run, **{**KW, "steps": 2})
    parent = universal_dir(run, 20.0).parent
    assert sorted(p.name for p in parent.iterdir()) == ["snr20"]
    assert universal_run(run, **KW) == facts  # still the finished folder


def test_universal_run_refuses_an_untrained_run(tmp_path):
    from tests.helpers.corpus import prepared_tone_run

    with pytest.raises(RunDirError, match="no trained model"):
        universal_run(prepared_tone_run(tmp_path), **KW)
