"""Input-transformation defences (seradv.defences.transforms) and their adaptive attacks.

Transformations: shape and box, their numpy definitions, the exact torch versions, BPDA's
identity backward, EOT's averaged gradient, the defended classifier's numpy path. Attacks: on
tests.helpers.waveform.tone_waveform_model (TinyNet behind a FrontEnd, 24 held-out tones), the
adaptive attack (BPDA / EOT) leaves the defended model at most as accurate as the non-adaptive
one, in setups where the transformation visibly weakens the non-adaptive attack.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from seradv.attacks.waveform import snr_db
from seradv.attacks.waveform.adaptive import adaptive_attack, defended_accuracy, eot_gradient, non_adaptive_attack
from seradv.attacks.waveform.pgd import cross_entropy_gradient
from seradv.attacks.waveform.realize import quantize_pcm16
from seradv.defences.transforms import (
    TRANSFORMS,
    Chain,
    DefendedModel,
    GaussianNoise,
    LowPass,
    Quantize,
    Resample,
    WaveTransform,
    build_transform,
    codec_available,
    register_transform,
)
from seradv.errors import ConfigError, ParameterError
from tests.helpers.audio import speech_tone
from tests.helpers.waveform import N, SR, tone_batch, tone_waveform_model

pytestmark = pytest.mark.usefixtures("one_thread")

CODECS = [c for c in ("vorbis", "mp3") if codec_available(c)]
ALL = ["resample", "quantize", "lowpass", "noise", *CODECS]


def _sine(freq: float, n: int = N, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


@pytest.fixture(scope="module")
def waves() -> np.ndarray:
    """Three tones, the first scaled to full scale (the box binds), and a loud square wave."""
    x = np.stack([speech_tone(3.0, SR, freq=f, seed=i) for i, f in enumerate((110.0, 180.0, 300.0))])
    x[0] /= np.abs(x[0]).max()
    square = np.sign(_sine(440.0)).astype(np.float32)
    return np.concatenate([x, square[None]])


@pytest.fixture(scope="module")
def toy():
    x, y = tone_batch(range(100, 108))
    return {"wm": tone_waveform_model(), "x": x, "y": y}


# ----------------------------------------------------------------------------- shape, box, registry


@pytest.mark.parametrize("name", ALL)
def test_every_transform_keeps_shape_and_box_on_both_paths(waves, name) -> None:
    t = build_transform(name)
    out = t(waves, np.random.default_rng(0))
    assert out.shape == waves.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    assert not np.allclose(out, waves, atol=1e-6)  # it does something
    z = t.torch_forward(torch.as_tensor(waves), torch.Generator().manual_seed(0))
    assert z.shape == waves.shape and z.dtype == torch.float32 and float(z.abs().max()) <= 1.0
    if not t.random:  # deterministic: the attacker's forward is the real transformation (to rounding)
        np.testing.assert_allclose(z.numpy(), out, atol=1e-5)


def test_flags_of_the_registered_transforms() -> None:
    flags = {n: (build_transform(n).differentiable, build_transform(n).random) for n in ALL}
    assert flags["resample"] == flags["quantize"] == (False, False)  # BPDA
    assert flags["lowpass"] == (True, False) and flags["noise"] == (True, True)
    assert all(flags[c] == (False, False) for c in CODECS)


def test_registry_errors_and_a_user_transform(waves) -> None:
    with pytest.raises(ConfigError, match="not registered"):
        build_transform("nope")
    with pytest.raises(ConfigError, match="bad parameters"):
        build_transform("quantize", depth=3)
    with pytest.raises(ConfigError, match="bits"):
        build_transform("quantize", bits=1)
    with pytest.raises(ConfigError, match="target_rate"):
        build_transform("resample", target_rate=16000)
    with pytest.raises(ConfigError, match="cutoff_hz"):
        build_transform("lowpass", cutoff_hz=9000.0)
    with pytest.raises(ConfigError, match="already registered"):
        register_transform("quantize", Quantize)
    with pytest.raises(ConfigError, match="unknown codec"):
        codec_available("opus")
    with pytest.raises(ParameterError, match="inside"):
        build_transform("quantize")(waves * 2.0)

    class Invert(WaveTransform):
        name = "invert_test"

        def __init__(self, sample_rate: int) -> None:
            self.sample_rate = sample_rate

        def apply(self, x, rng):
            return -x

    register_transform("invert_test", Invert)
    try:
        t = build_transform("invert_test")
        np.testing.assert_array_equal(t(waves), -waves)
    finally:
        del TRANSFORMS["invert_test"]


# ----------------------------------------------------------------------------- numpy definitions


def test_quantize_matches_its_definition(waves) -> None:
    np.testing.assert_array_equal(Quantize(bits=16)(waves), quantize_pcm16(waves) / 32768.0)
    q8 = Quantize(bits=8)(waves)
    levels = q8 * 128.0
    np.testing.assert_array_equal(levels, np.round(levels))  # on the 8-bit grid
    assert levels.min() >= -128 and levels.max() <= 127
    inside = waves < 127.5 / 128  # below the top level's rounding edge: the nearest level
    assert np.abs(q8 - waves)[inside].max() <= 1.0 / 256 + 1e-7
    assert np.all(q8[~inside] == np.float32(127 / 128))


def test_resample_is_the_polyphase_round_trip_and_removes_what_8k_cannot_hold() -> None:
    t = Resample(target_rate=8000)
    x = np.stack([_sine(1000.0), _sine(6000.0)])
    ref = scipy.signal.resample_poly(scipy.signal.resample_poly(x.astype(np.float64), 1, 2, axis=1), 2, 1, axis=1)
    out = t(x)
    np.testing.assert_allclose(out, np.clip(ref, -1, 1), atol=1e-6)
    body = slice(1000, N - 1000)  # away from the filter's edges
    assert snr_db(x[:1, body], out[:1, body])[0] > 30.0  # 1 kHz passes
    assert np.sqrt(np.mean(out[1, body] ** 2)) < 0.01 * np.sqrt(np.mean(x[1, body] ** 2))  # 6 kHz is gone
    odd = np.stack([_sine(500.0, n=4801)])
    assert t(odd).shape == odd.shape


def test_lowpass_torch_version_is_scipys_sosfiltfilt_and_differentiable() -> None:
    t = LowPass(cutoff_hz=4000.0, order=8)
    x = np.random.default_rng(0).uniform(-0.6, 0.6, (2, 6000))
    ref = np.clip(scipy.signal.sosfiltfilt(t.sos, x, axis=1), -1, 1)
    np.testing.assert_allclose(t(x), ref, atol=1e-6)
    np.testing.assert_allclose(t.torch_forward(torch.as_tensor(x)).numpy(), ref, atol=1e-10)  # float64 in, float64 out
    tone = np.stack([_sine(500.0), _sine(6000.0)])
    out = t(tone)
    body = slice(1000, N - 1000)
    assert snr_db(tone[:1, body], out[:1, body])[0] > 40.0
    assert np.abs(out[1, body]).max() < 1e-3
    small = LowPass(cutoff_hz=3000.0, order=2)
    xs = torch.as_tensor(np.random.default_rng(1).uniform(-0.3, 0.3, (1, 64)), dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: small.torch_forward(v), (xs,))
    with pytest.raises(ParameterError, match="samples"):
        t(np.zeros((1, 20)))


def test_noise_has_the_stated_snr_and_is_seeded(waves) -> None:
    t = GaussianNoise(snr_db=20.0)
    x = waves[1:3]  # no sample near the box edge: no clipping
    a, b = t(x, np.random.default_rng(5)), t(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, t(x, np.random.default_rng(6)))
    np.testing.assert_allclose(snr_db(x, a), 20.0, atol=0.2)
    z = t.torch_forward(torch.as_tensor(x), torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(snr_db(x, z), 20.0, atol=0.2)


@pytest.mark.parametrize("codec", CODECS)
def test_codec_round_trip_keeps_length_and_most_of_the_signal(waves, codec) -> None:
    out = build_transform(codec, quality=0.5)(waves[1:3])
    assert out.shape == waves[1:3].shape
    assert (snr_db(waves[1:3], out) > 15.0).all()


def test_codecs_missing_from_libsndfile_are_named() -> None:
    if len(CODECS) == 2:
        pytest.skip("this libsndfile writes both OGG/Vorbis and MP3")
    missing = next(c for c in ("vorbis", "mp3") if c not in CODECS)
    with pytest.raises(ConfigError, match="cannot write"):
        build_transform(missing)


# ----------------------------------------------------------------------------- BPDA, EOT, chain


@pytest.mark.parametrize("name", ["resample", "quantize", *CODECS])
def test_bpda_forward_is_the_real_transform_and_backward_is_the_identity(waves, name) -> None:
    t = build_transform(name)
    x = torch.as_tensor(waves[1:3]).requires_grad_(True)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    out = t.torch_forward(x)
    np.testing.assert_array_equal(out.detach().numpy(), t(waves[1:3]))
    (out * w).sum().backward()
    torch.testing.assert_close(x.grad, w, rtol=0, atol=0)


def test_chain_mixes_exact_and_bpda_steps(waves) -> None:
    c = build_transform("chain", steps=[("noise", {"snr_db": 30.0}), ("quantize", {"bits": 8})])
    assert isinstance(c, Chain) and c.random and not c.differentiable
    out = c(waves, np.random.default_rng(0))
    np.testing.assert_array_equal(out * 128, np.round(out * 128))
    x = torch.as_tensor(waves[1:2]).requires_grad_(True)
    c.torch_forward(x, torch.Generator().manual_seed(0)).sum().backward()
    # d/dx of sum(x + rms(x) * s * n): the identity (BPDA) of the quantizer times the noise step's Jacobian
    assert torch.isfinite(x.grad).all() and float((x.grad - 1).abs().max()) < 0.5


def test_eot_gradient_is_the_mean_over_draws(toy) -> None:
    x = torch.as_tensor(toy["x"][:3])
    y = torch.as_tensor(toy["y"][:3])
    det_logits, det_grad = cross_entropy_gradient(toy["wm"], x, y)
    l3, g3 = eot_gradient(3)(toy["wm"], x, y)  # a deterministic model: every draw is the same
    torch.testing.assert_close(g3, det_grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(l3, det_logits, rtol=1e-5, atol=1e-6)
    d = DefendedModel(GaussianNoise(snr_db=20.0), toy["wm"], seed=3)
    le, ge = eot_gradient(4)(d, x, y)
    d.gen.manual_seed(3)
    singles = [cross_entropy_gradient(d, x, y) for _ in range(4)]
    torch.testing.assert_close(ge, sum(g for _, g in singles) / 4, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(le, sum(lg for lg, _ in singles) / 4, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(singles[0][1], singles[1][1])  # the draws differ
    with pytest.raises(ParameterError, match="eot_samples"):
        eot_gradient(0)


def test_defended_model_predicts_on_the_real_transform(toy) -> None:
    wm = toy["wm"]
    d = DefendedModel(Quantize(bits=4), wm)
    x = toy["x"][:6]
    with torch.no_grad():
        expected = wm(torch.as_tensor(Quantize(bits=4)(x))).argmax(1).numpy()
    wm.train()
    np.testing.assert_array_equal(d.predict(x), expected)
    assert wm.training  # flag restored
    wm.eval()
    noisy = DefendedModel(GaussianNoise(snr_db=0.0), wm)
    np.testing.assert_array_equal(noisy.predict(x, seed=1), noisy.predict(x, seed=1))
    with pytest.raises(ParameterError, match="labels"):
        defended_accuracy(d, x, toy["y"][:5])


# ----------------------------------------------------------------------------- adaptive vs non-adaptive

SETUPS = {
    # name: (transform, params, SNR budget, PGD steps, step_frac); measured on 24 held-out tones,
    # correct segments out of 24 (undefended robust / defended non-adaptive / defended adaptive):
    "eot_noise": ("noise", {"snr_db": 15.0}, 23.0, 10, 0.25),  # 10 / 13-14 / 8-9 (EOT 4)
    "eot_bpda_chain": ("chain", {"steps": [("noise", {"snr_db": 15.0}), ("quantize", {"bits": 8})]},
                       23.0, 10, 0.25),  # 10 / 13-14 / 9
    "bpda_resample": ("resample", {"target_rate": 4000}, 20.0, 30, 0.1),  # 5 / 7 / 5
}


def _mean_acc(d: DefendedModel, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the deployed defence, averaged over 3 draws of a random one."""
    return float(np.mean([defended_accuracy(d, x, y, seed=s) for s in range(3)]))


@pytest.mark.parametrize("setup", list(SETUPS))
def test_adaptive_attack_is_at_least_as_strong_as_the_non_adaptive_one_the_transform_weakens(toy, setup) -> None:
    name, params, snr, steps, frac = SETUPS[setup]
    d = DefendedModel(build_transform(name, **params), toy["wm"], seed=0)
    x, y = toy["x"], toy["y"]
    pgd = {"snr_db": snr, "max_iter": steps, "step_frac": frac, "seed": 0}
    na = non_adaptive_attack(d, x, y, **pgd)
    ad = adaptive_attack(d, x, y, eot_samples=4 if d.transform.random else None, **pgd)
    for res in (na, ad):  # both within the SNR budget and the box
        assert (snr_db(x, res.x_adv) >= snr - 1e-3).all() and np.abs(res.x_adv).max() <= 1.0
    clean = _mean_acc(d, x, y)
    undefended = float(np.mean(~na.success))  # the undefended model's robust accuracy
    non_adaptive, adaptive = _mean_acc(d, na.x_adv, y), _mean_acc(d, ad.x_adv, y)
    assert clean >= 0.9
    assert non_adaptive >= undefended + 1.5 / 24  # the transformation weakens the non-adaptive attack
    assert adaptive <= non_adaptive  # the adaptive attack gives that back
