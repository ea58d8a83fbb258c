"""Waveform attacks (seradv.attacks.waveform): budgets, box, effect, 16-bit realizability, SNR.

The model: tests.helpers.corpus.TinyNet trained for 60 full-batch Adam steps on the standardized
log-Mel of 30 speech-like tones (three pitch classes), behind a FrontEnd with the same
standardizer; 12 held-out tones (clean accuracy 1.0 when written). Measured on it (10 steps,
step_frac 0.25): robust accuracy 1.0 at -60 / -50 / -40 dBFS and at 40 / 30 dB SNR, 0.25 at 20 dB.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.helpers.corpus import TinyNet
from tests.helpers.waveform import N, SR, tone_batch
from seradv.attacks.waveform import dbfs_to_amplitude, pgd_linf_waveform, pgd_snr_waveform, segmental_snr_db, snr_db
from seradv.attacks.waveform.realize import (
    PCM16_STEP,
    numpy_features,
    quantize_pcm16,
    read_wavs,
    realized_predictions,
    write_pcm16_wavs,
)
from seradv.config import FeatureConfig
from seradv.errors import ParameterError
from seradv.features import Standardizer, log_mel
from seradv.frontend import FrontEnd, WaveformModel

pytestmark = pytest.mark.usefixtures("one_thread")

ATTACK = {"max_iter": 10, "step_frac": 0.25}
_tones = tone_batch  # the shared tone data (tests/helpers/waveform.py)


@pytest.fixture(scope="module")
def setup():
    x_train, y_train = _tones(range(10))
    feats = np.stack([log_mel(y, SR) for y in x_train])
    scaler = Standardizer.fit(feats)
    torch.manual_seed(0)
    model = TinyNet(3)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    xt, yt = torch.as_tensor(scaler.transform(feats)), torch.as_tensor(y_train)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    wm = WaveformModel(FrontEnd(SR, standardizer=scaler, n_samples=N), model).eval()
    x, y = _tones(range(100, 104))
    return {"wm": wm, "model": model, "scaler": scaler, "x": x, "y": y}


def _pred(wm, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return wm(torch.as_tensor(x)).argmax(1).numpy()


# ----------------------------------------------------------------------------- budgets and box


@pytest.mark.parametrize("dbfs", [-60.0, -40.0])
def test_linf_budget_and_box_hold_on_the_tensor_and_the_written_file(setup, tmp_path, dbfs):
    x = setup["x"].copy()
    x[0] = x[0] / np.abs(x[0]).max()  # a full-scale segment: the box [-1, 1] binds
    eps = dbfs_to_amplitude(dbfs)
    res = pgd_linf_waveform(setup["wm"], x, setup["y"], eps_dbfs=dbfs, **ATTACK)
    assert res.x_adv.dtype == np.float32 and res.x_adv.shape == x.shape
    assert np.abs(res.x_adv).max() <= 1.0
    delta = np.abs(res.x_adv.astype(np.float64) - x)
    assert delta.max() <= eps + PCM16_STEP
    assert delta.max() > 0.5 * eps  # it did move
    written = read_wavs(write_pcm16_wavs(res.x_adv, tmp_path, [f"s{i}" for i in range(len(x))], sample_rate=SR),
                        sample_rate=SR)
    assert np.abs(written).max() <= 1.0
    assert np.abs(written.astype(np.float64) - x).max() <= eps + PCM16_STEP


@pytest.mark.parametrize("snr", [40.0, 20.0])
def test_snr_budget_holds_per_segment(setup, snr):
    x = setup["x"] * np.linspace(0.2, 1.0, len(setup["x"]))[:, None].astype(np.float32)  # different energies
    res = pgd_snr_waveform(setup["wm"], x, setup["y"], snr_db=snr, **ATTACK)
    measured = snr_db(x, res.x_adv)
    assert np.abs(res.x_adv).max() <= 1.0
    assert measured.min() >= snr - 0.01, measured
    assert measured.max() < snr + 3.0  # the budget is used, not an inert attack


def test_pgd_lowers_accuracy_and_success_is_the_models_verdict(setup):
    wm, x, y = setup["wm"], setup["x"], setup["y"]
    clean = (_pred(wm, x) == y).mean()
    res = pgd_snr_waveform(wm, x, y, snr_db=20.0, **ATTACK)
    robust = (_pred(wm, res.x_adv) == y).mean()
    print(f"clean accuracy {clean:.3f}, robust accuracy at 20 dB SNR {robust:.3f}")
    assert clean == 1.0
    assert robust <= clean - 0.25
    np.testing.assert_array_equal(res.success, _pred(wm, res.x_adv) != y)


def test_already_misclassified_samples_count_as_successes(setup):
    wm, x, y = setup["wm"], setup["x"][:3], setup["y"][:3]
    wrong = (y + 1) % 3  # labels the model does not predict: every sample starts misclassified
    res = pgd_linf_waveform(wm, x, wrong, eps_dbfs=-60.0, max_iter=2, random_start=False)
    assert res.success.all()


def test_seeded_random_start(setup):
    wm, x, y = setup["wm"], setup["x"][:3], setup["y"][:3]
    a = pgd_snr_waveform(wm, x, y, snr_db=30.0, max_iter=1, seed=1).x_adv
    b = pgd_snr_waveform(wm, x, y, snr_db=30.0, max_iter=1, seed=1).x_adv
    c = pgd_snr_waveform(wm, x, y, snr_db=30.0, max_iter=1, seed=2).x_adv
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(a - c).max() > 1e-4


def test_errors(setup):
    wm, x, y = setup["wm"], setup["x"][:2], setup["y"][:2]
    with pytest.raises(ParameterError, match="inside"):
        pgd_linf_waveform(wm, x * 3.0, y)
    with pytest.raises(ParameterError, match="dBFS"):
        pgd_linf_waveform(wm, x, y, eps_dbfs=3.0)
    with pytest.raises(ParameterError, match="silent"):
        pgd_snr_waveform(wm, np.zeros_like(x), y)
    with pytest.raises(ParameterError, match="labels"):
        pgd_snr_waveform(wm, x, y[:1])
    with pytest.raises(ParameterError, match="step_frac"):
        pgd_snr_waveform(wm, x, y, step_frac=0.0)


# ----------------------------------------------------------------------------- 16-bit realizability


def test_pcm16_files_hold_exactly_the_quantized_samples(tmp_path):
    y = np.array([[-1.0, -0.5, 0.0, 1.0 / 65536 * 0.9, 0.25, 1.0]], np.float32)
    q = quantize_pcm16(y)
    np.testing.assert_array_equal(q[0], [-32768, -16384, 0, 0, 8192, 32767])
    (path,) = write_pcm16_wavs(y, tmp_path, ["a"], sample_rate=SR)
    info = sf.info(str(path))
    assert info.subtype == "PCM_16" and info.samplerate == SR and info.channels == 1
    back = read_wavs([path], sample_rate=SR)
    np.testing.assert_array_equal(back, q.astype(np.float32) / 32768.0)
    assert np.abs(back - y).max() <= PCM16_STEP
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write leaves no temporary file


def test_round_trip_predictions_match_the_float_tensor_ones(setup, tmp_path):
    wm, x, y = setup["wm"], setup["x"], setup["y"]
    res = pgd_snr_waveform(wm, x, y, snr_db=20.0, **ATTACK)
    float_pred = _pred(wm, res.x_adv)
    file_pred, paths = realized_predictions(res.x_adv, tmp_path, [f"adv{i}" for i in range(len(x))],
                                            model=setup["model"], sample_rate=SR, features=FeatureConfig(),
                                            standardizer=setup["scaler"])
    agree = (file_pred == float_pred).mean()
    print(f"robust accuracy: float tensor {(float_pred == y).mean():.3f}, written 16-bit files "
          f"{(file_pred == y).mean():.3f}; agreement {agree:.3f} on {len(y)} samples")
    assert len(paths) == len(x) and all(p.suffix == ".wav" for p in paths)
    assert agree >= 0.75
    # the numpy features of the written files are the front end's features up to 16-bit quantization
    back = read_wavs(paths, sample_rate=SR)
    z_np = numpy_features(back, sample_rate=SR, features=FeatureConfig(), standardizer=setup["scaler"])
    with torch.no_grad():
        z_fe = wm.frontend(torch.as_tensor(back)).numpy()
    assert np.abs(z_np - z_fe).max() < 5e-3


# ----------------------------------------------------------------------------- SNR metrics


def test_snr_and_segmental_snr_on_a_hand_computed_case():
    x = np.ones((2, 960))
    x_adv = x.copy()
    x_adv[0, :320] += 0.1  # frame 1: 320 / 3.2 -> 20 dB; frames 2, 3 without noise -> 35 dB (ceiling)
    x_adv[1] += 0.01 * np.where(np.arange(960) % 2, 1.0, -1.0)  # 40 dB everywhere
    np.testing.assert_allclose(snr_db(x, x_adv), [10 * np.log10(960 / 3.2), 40.0], atol=1e-9)
    np.testing.assert_allclose(segmental_snr_db(x, x_adv), [(20 + 35 + 35) / 3, 35.0], atol=1e-9)
    assert snr_db(x, x)[0] == np.inf


def test_segmental_snr_silent_frames():
    x = np.zeros((1, 960))
    x[0, 320:] = 1.0
    x_adv = x.copy()
    x_adv[0, :320] = 0.01  # a silent frame with noise counts at the floor, -10 dB
    np.testing.assert_allclose(segmental_snr_db(x, x_adv), [(-10 + 35 + 35) / 3], atol=1e-9)
    x_adv[0, :320] = 0.0  # signal and noise both zero: the frame is left out
    x_adv[0, 320:340] = 1.1  # frame 2: 320 / (20 * 0.01) -> 32.0 dB, frame 3: 35 dB
    expected = (10 * np.log10(320 / (20 * 0.01)) + 35.0) / 2
    np.testing.assert_allclose(segmental_snr_db(x, x_adv), [expected], atol=1e-9)
    with pytest.raises(ParameterError):
        segmental_snr_db(x, x_adv[:, :10])


# ----------------------------------------------------------------------------- a run's segment audio


@pytest.fixture(scope="module")
def tone_run(tmp_path_factory):
    from tests.helpers.corpus import prepared_tone_run

    return prepared_tone_run(tmp_path_factory.mktemp("waveform-run"))


def test_segment_waveforms_are_the_prepared_test_segments(tone_run):
    from seradv.attacks.waveform.segments import segment_waveforms
    from seradv.prepare import load_subset

    test = load_subset(tone_run, "test")
    wav = segment_waveforms(tone_run, test.meta)
    assert wav.shape == (len(test), N) and np.abs(wav).max() <= 1.0
    with torch.no_grad():
        z = FrontEnd.from_run(tone_run)(torch.as_tensor(wav)).numpy()
    assert np.abs(z - test.x).max() < 5e-4


def test_waveform_cell_rows_come_from_the_written_files(tone_run, tmp_path):
    from seradv.attacks.waveform.cell import WAVEFORM_GRIDS, waveform_attack_cell
    from seradv.grid.results import robust_flags
    from seradv.prepare import load_subset

    test = load_subset(tone_run, "test")
    torch.manual_seed(0)
    model = TinyNet(len(test.classes)).eval()
    params = WAVEFORM_GRIDS["pgd_snr_wave"]["quick"][0]
    samples, facts = waveform_attack_cell(tone_run, model, test, "pgd_snr_wave", params, wav_dir=tmp_path / "wav")
    assert len(samples) == len(test) and len(list((tmp_path / "wav").glob("*.wav"))) == len(test)
    assert samples["snr_db"].min() >= params["snr_db"] - 0.01
    assert (samples["segsnr_db"] > 0).all()
    np.testing.assert_array_equal(samples["robust"], robust_flags(samples))
    print(f"robust accuracy on the written files {samples['robust'].mean():.3f}; float-tensor and file "
          f"predictions agree on {(samples['pred_adv'] == samples['pred_adv_float']).mean():.3f}")
    assert (samples["pred_adv"] == samples["pred_adv_float"]).mean() >= 0.75
    assert facts["input"] == "waveform"


def test_segments_over_full_scale_are_scaled_into_the_box():
    from seradv.attacks.waveform.realize import PCM16_STEP, fit_full_scale

    rng = np.random.default_rng(0)
    w = rng.uniform(-0.5, 0.5, size=(3, 1600)).astype(np.float32)
    w[1] *= 2.0 / np.abs(w[1]).max()  # peaks at 2.0, like an overshooting augmented copy
    out, gain_db = fit_full_scale(w)
    np.testing.assert_array_equal(out[[0, 2]], w[[0, 2]])
    assert np.abs(out).max() <= 1.0 - PCM16_STEP + 1e-7
    np.testing.assert_allclose(gain_db, [0.0, 20 * np.log10((1 - PCM16_STEP) / 2.0), 0.0], atol=1e-5)
    # the study's log-Mel (dB re the segment minimum) does not move under the gain
    a, b = log_mel(w[1], SR), log_mel(out[1], SR)
    np.testing.assert_allclose(a, b, atol=1e-3)
