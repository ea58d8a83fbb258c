"""The differentiable front end (seradv.frontend) against seradv's numpy/librosa features.

Tolerance (float32 front end vs ``seradv.features.log_mel`` on float32 segments, as prepare
computes them): at most :data:`DB_TOL` = 5e-4 dB absolute, and 5e-4 in standardized units.
Measured: 7.6e-5 dB max on 79 real EmoDB segments (every 9th file), 9.5e-5 dB on loud white
noise (reference at the minimum cell, above ``amin``), 4.8e-6 standardized (per-cell std of
the EmoDB segments >= 8.7 dB). Without top_db (not the study's setting) the bound is
:data:`DB_TOL_NO_TOP_DB` = 2e-3 dB (measured 6.9e-4). Why not exact: both sides compute in float32, librosa with
numpy's FFT and an einsum, the module with torch's FFT and a matmul; dB values reach ~100 dB,
where one float32 ulp is 7.6e-6 dB, so the differences are a few ulps of the output. The same
module in float64 differs from librosa by 2.2e-5 dB: librosa's own float32 rounding. Neither
``ref=min`` nor ``top_db`` makes it worse here: on EmoDB segments the minimum is always below
``amin`` (the reference is the constant floor), and the cells the top_db floor replaces are the
quiet ones whose rounding would otherwise be magnified by the log. A cell within rounding of
the top_db floor could in principle switch sides; its value then still moves only by that
rounding (the map is continuous).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.audio import speech_tone
from seradv.audio import read_audio
from seradv.config import AudioConfig, FeatureConfig
from seradv.errors import ParameterError, RunDirError
from seradv.features import Standardizer, log_mel
from seradv.frontend import AMIN, FrontEnd, WaveformModel
from seradv.segments import resample, segment, trim

DB_TOL = 5e-4
Z_TOL = 5e-4
DB_TOL_NO_TOP_DB = 2e-3
"""Without the top_db floor (not the study's setting) the quietest cells, up to ~130 dB below
the loudest, keep their float32 rounding, magnified by the log: measured 6.9e-4 dB on a tone's
cells 1.4 dB above the amin floor."""
SR = 16000
N = 48000

pytestmark = pytest.mark.usefixtures("one_thread")


def _tone(seed: int = 0, freq: float = 180.0) -> np.ndarray:
    """A 3 s speech-like tone with silent ends (its minimum is on the amin floor)."""
    return speech_tone(3.0, SR, freq=freq, seed=seed)


def _noise(amp: float, n: int = N, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _front(y: np.ndarray, fe: FrontEnd) -> np.ndarray:
    with torch.no_grad():
        return fe(torch.as_tensor(np.atleast_2d(y))).numpy()


def _grad(y: np.ndarray, fe: FrontEnd) -> np.ndarray:
    x = torch.as_tensor(np.atleast_2d(y)).clone().requires_grad_(True)
    out = fe(x)
    weights = torch.linspace(-1.0, 1.0, out[0].numel()).reshape(out.shape[1:])  # a generic direction
    (out * weights).sum().backward()
    return x.grad.numpy()


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("features", [FeatureConfig(), FeatureConfig(top_db=None), FeatureConfig(db_reference="max")],
                         ids=["study", "no-top_db", "ref-max"])
def test_matches_log_mel_on_synthetic_audio(features):
    fe = FrontEnd(SR, features)
    signals = [_tone(0), _tone(1, 300.0), _noise(0.5), _noise(0.1, seed=1), 0.3 * _tone(2) + _noise(0.01, seed=2)]
    ref = np.stack([log_mel(y, SR, features) for y in signals])
    out = _front(np.stack(signals), fe)  # one batch: minimum, maximum and floor are per sample
    assert out.shape == ref.shape == (5, 261, 128)
    assert np.abs(out - ref).max() < (DB_TOL if features.top_db is not None else DB_TOL_NO_TOP_DB)


def test_the_loud_noise_case_exercises_the_min_reference():
    """White noise at 0.5: the smallest power Mel cell is above amin, so ref=min is the data's own minimum."""
    import librosa

    y = _noise(0.5)
    S = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=368, hop_length=184, n_mels=128)
    assert S.min() > AMIN
    ref = log_mel(y, SR)
    assert ref.min() == 0.0 or np.isclose(ref.min(), ref.max() - 80.0)
    assert np.abs(_front(y, FrontEnd()) - ref).max() < DB_TOL


def test_standardized_output_matches_the_standardizer():
    signals = np.stack([_tone(k, 150.0 + 40 * k) + _noise(0.01, seed=k) for k in range(6)])
    feats = np.stack([log_mel(y, SR) for y in signals])
    scaler = Standardizer.fit(feats)
    fe = FrontEnd(SR, standardizer=scaler, n_samples=N)
    assert np.abs(_front(signals, fe) - scaler.transform(feats)).max() < Z_TOL


def test_real_emodb_segments_within_tolerance(emodb_dir):
    files = sorted((emodb_dir / "wav").glob("*.wav"))[::27]
    audio = AudioConfig()
    segs = []
    for f in files:
        y, sr = read_audio(f)
        segs += segment(trim(resample(y, sr, SR), audio, where=str(f)), audio, min_remainder=0)
    segs = np.stack(segs)
    ref = np.stack([log_mel(s, SR) for s in segs])
    out = _front(segs, FrontEnd())
    db_err = np.abs(out - ref).max()
    assert db_err < DB_TOL, f"max |dB difference| {db_err:.2e}"
    scaler = Standardizer.fit(ref)
    z_err = np.abs(_front(segs, FrontEnd(standardizer=scaler, n_samples=N)) - scaler.transform(ref)).max()
    assert z_err < Z_TOL, f"max |standardized difference| {z_err:.2e}"


def test_shape_and_length_errors():
    fe = FrontEnd(n_samples=N)
    assert fe(torch.zeros(N)).shape == (1, 261, 128)
    with pytest.raises(ParameterError, match="expects 48000"):
        fe(torch.zeros(1, 1000))
    with pytest.raises(ParameterError, match="shape"):
        fe(torch.zeros(1, 1, N))
    bad = Standardizer(np.zeros((10, 128), np.float32), np.ones((10, 128), np.float32))
    with pytest.raises(ParameterError, match="does not fit"):
        FrontEnd(standardizer=bad, n_samples=N)


# ----------------------------------------------------------------------------- gradients


def test_gradients_reach_the_waveform():
    g = _grad(np.stack([_tone(0), _noise(0.1)]), FrontEnd())
    assert np.isfinite(g).all()
    assert (np.abs(g).reshape(2, -1).max(1) > 0).all()
    # the tone's silent ends (exact zeros, far from any sound) sit on the amin floor: no gradient there
    assert np.abs(g[0, :200]).max() == 0.0
    assert np.abs(g[0, 2000:46000]).max() > 0


def test_silence_has_a_zero_finite_gradient_and_near_silence_a_nonzero_one():
    """Exact silence is entirely on the amin floor: constant features (0 dB), gradient exactly 0,
    no NaN (no log of 0, no sqrt at 0, no division by the minimum). Noise at 1e-3 (about -60 dBFS)
    has a few cells above both floors and a non-zero gradient; at 1e-4 every cell is on the floor."""
    fe = FrontEnd()
    silent = np.zeros(N, np.float32)
    assert np.array_equal(_front(silent, fe), np.zeros((1, 261, 128), np.float32))
    assert np.array_equal(_front(silent, fe), log_mel(silent + 0.0, SR)[None])
    batch = np.stack([silent, _noise(1e-4), _noise(1e-3), _tone(0)])
    g = _grad(batch, fe)
    assert np.isfinite(g).all()
    peak = np.abs(g).max(axis=1)
    assert peak[0] == 0.0 and peak[1] == 0.0
    assert peak[2] > 0 and peak[3] > 0


def test_gradcheck_in_float64_away_from_the_kinks():
    """Loud noise on 736 samples (5 frames): every power Mel cell above amin, no tie at the
    minimum or the maximum, no cell within 1 dB of the top_db floor (checked), so the map is
    smooth around the input and autograd must agree with finite differences."""
    fe = FrontEnd(SR, dtype=torch.float64)
    y = torch.as_tensor(np.random.default_rng(7).standard_normal((1, 736)) * 0.5, dtype=torch.float64)
    with torch.no_grad():
        S = fe.power_mel(y).flatten()
        db = fe.to_db(fe.power_mel(y)).flatten()
    s = torch.sort(S).values
    assert s[0] > 10 * AMIN and s[1] > 1.01 * s[0] and s[-1] > 1.01 * s[-2]
    assert db.max() - db.min() < fe.top_db - 1.0  # nothing near the floor
    fe_w = FrontEnd(SR, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: fe_w(x), (y.clone().requires_grad_(True),), eps=1e-6, atol=1e-5,
                                    rtol=1e-4, fast_mode=True)


def test_gradcheck_through_the_min_reference_and_top_db_floor_directions():
    """The piecewise rules the docstring states: a cell clipped at the top_db floor passes its
    gradient to the loudest cell and (ref=min, above amin) to the minimum cell, nowhere else."""
    fe = FrontEnd(SR, FeatureConfig(top_db=10.0), dtype=torch.float64)
    y = torch.as_tensor(np.random.default_rng(4).standard_normal((1, 736)) * 0.5 + 0.2, dtype=torch.float64)
    S = fe.power_mel(y).detach().requires_grad_(True)
    db = fe.to_db(S)
    clipped = db[0] == db[0].min()
    assert clipped.any() and not clipped.all()
    db[0][clipped].sum().backward()
    g = S.grad[0]
    assert S.detach().min() > AMIN
    peak, low = torch.argmax(S.detach()[0]), torch.argmin(S.detach()[0])
    assert g.flatten()[peak] > 0 and g.flatten()[low] < 0  # floor = 20 log10(max / min) - top_db
    assert torch.count_nonzero(g) == 2


# ----------------------------------------------------------------------------- run directory, model, device


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory):
    from tests.helpers.corpus import prepared_tone_run

    return prepared_tone_run(tmp_path_factory.mktemp("frontend"))


def test_from_run_gives_the_prepared_model_input(prepared_run):
    import pandas as pd

    from seradv.prepare import load_subset

    data = load_subset(prepared_run, "test")
    manifest = pd.read_csv(prepared_run / "manifest.csv", dtype=str)
    audio = AudioConfig()
    fe = FrontEnd.from_run(prepared_run)
    orig = data.meta.index[data.meta["variant"] == "orig"][:4]
    for i in orig:
        row = data.meta.loc[i]
        path = manifest.loc[manifest["utterance"] == row["utterance"], "path"].iloc[0]
        y, sr = read_audio(path)
        segs = segment(trim(resample(y, sr, SR), audio), audio, min_remainder=0)
        x = _front(segs[int(row["seg_index"])], fe)[0]
        assert np.abs(x - data.x[i]).max() < Z_TOL


def test_waveform_model_maps_waveforms_to_the_models_logits(prepared_run):
    from tests.helpers.corpus import TinyNet
    from seradv.evaluation import predict_logits
    from seradv.prepare import read_standardizer

    torch.manual_seed(0)
    model = TinyNet(3).eval()
    fe = FrontEnd.from_run(prepared_run)
    wm = WaveformModel(fe, model)
    y = np.stack([_tone(0), _tone(1, 260.0)])
    scaler = read_standardizer(prepared_run)
    x = scaler.transform(np.stack([log_mel(s, SR) for s in y]))
    with torch.no_grad():
        logits = wm(torch.as_tensor(y)).numpy()
    assert np.allclose(logits, predict_logits(model, x), atol=1e-4)
    g = torch.as_tensor(y).requires_grad_(True)
    wm(g)[:, 0].sum().backward()
    assert torch.isfinite(g.grad).all() and g.grad.abs().max() > 0


def test_from_run_errors(tmp_path):
    with pytest.raises(RunDirError):
        FrontEnd.from_run(tmp_path)
    (tmp_path / "folds.csv").write_text("speaker,fold\na,1\n")
    with pytest.raises(RunDirError, match="fold"):
        FrontEnd.from_run(tmp_path)


def test_device_agnostic():
    """Runs wherever its buffers are: CUDA when there is one, else CPU (no test needs CUDA)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    fe = FrontEnd().to(dev)
    y = torch.as_tensor(_tone(0)[None], device=dev)
    out = fe(y)
    assert out.device.type == dev
    assert np.abs(out.detach().cpu().numpy() - log_mel(_tone(0), SR)[None]).max() < DB_TOL
