"""Preprocessing and features against librosa and the study's definitions."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from tests.helpers.audio import speech_tone
from seradv.config import AudioConfig, AugmentConfig, FeatureConfig
from seradv.errors import AudioError, ParameterError
from seradv.features import Standardizer, log_mel
from seradv.segments import apply_variant, augment, resample, segment, trim

SR = 16000
A = AudioConfig()


def test_log_mel_shape_and_study_definition():
    y = speech_tone(3.0, SR)
    f = log_mel(y, SR)
    assert f.shape == (261, 128) and f.dtype == np.float32
    S = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=368, hop_length=184, n_mels=128)
    ref = librosa.amplitude_to_db(S, ref=np.min).T
    np.testing.assert_allclose(f, ref, rtol=1e-5, atol=1e-4)
    # ref=np.min, top_db=80: values span at most 80 dB below the maximum
    assert f.max() - f.min() <= 80.0 + 1e-3


def test_log_mel_rejects_nan_and_empty():
    y = speech_tone(1.0, SR)
    y[10] = np.nan
    with pytest.raises(AudioError, match="non-finite"):
        log_mel(y, SR)
    with pytest.raises(AudioError, match="empty"):
        log_mel(np.zeros(0, np.float32), SR)


def test_trim_removes_silence_and_rejects_too_short():
    y = np.concatenate([np.zeros(8000, np.float32), speech_tone(1.0, SR), np.zeros(8000, np.float32)])
    t = trim(y, A)
    assert 14000 < t.size < 17000
    with pytest.raises(AudioError, match="shorter than one analysis frame"):
        trim(speech_tone(0.02, SR), A)
    with pytest.raises(AudioError, match="after trimming"):
        trim(np.concatenate([np.zeros(16000, np.float32), 0.5 * np.ones(100, np.float32)]), A)


@pytest.mark.parametrize("lead,tail", [(8000, 8000), (0, 0), (123, 40000), (70001, 5)])
def test_long_signals_are_trimmed_in_chunks_exactly_as_librosa(monkeypatch, lead: int, tail: int):
    """Above TRIM_CHUNK_FRAMES frames the RMS is computed chunk by chunk (small chunks here:
    many chunk boundaries); the cut is librosa's, sample for sample."""
    from seradv import segments as seg_mod

    rng = np.random.default_rng(lead + tail)
    body = np.concatenate([speech_tone(1.3, SR), 0.01 * speech_tone(0.7, SR, freq=250), speech_tone(2.1, SR, freq=180)])
    y = np.concatenate([1e-4 * rng.standard_normal(lead).astype(np.float32), body,
                        1e-4 * rng.standard_normal(tail).astype(np.float32)])
    expected, _ = librosa.effects.trim(y, top_db=A.trim_top_db, frame_length=A.trim_frame_length,
                                       hop_length=A.trim_hop_length)
    monkeypatch.setattr(seg_mod, "TRIM_CHUNK_FRAMES", 37)
    assert y.size > 37 * A.trim_hop_length  # the chunked path runs
    got = trim(y, A)
    assert got.size == expected.size and np.array_equal(got, expected)
    assert np.shares_memory(got, y)  # a view of the signal, as librosa's


def test_segment_split_drop_and_loop():
    n = A.segment_samples
    y = speech_tone(7.0, SR)  # 2 full segments + 1 s remainder
    assert len(segment(y, A, min_remainder=8000)) == 3  # 1 s remainder kept (>= 0.5 s)
    assert len(segment(y, A, min_remainder=32000)) == 2  # remainder shorter than 2 s dropped
    # the default keeps every non-empty remainder, as the study's code (SPEC.md step 3)
    assert AudioConfig().min_remainder_s == 0
    assert len(segment(y, A, min_remainder=0)) == 3
    tail = speech_tone(6.2, SR)  # 0.2 s remainder: kept (looped to 3 s) at 0, dropped at 0.5 s
    assert len(segment(tail, A, min_remainder=0)) == 3
    assert len(segment(tail, A, min_remainder=8000)) == 2
    short = segment(speech_tone(1.0, SR), A, min_remainder=8000)
    assert len(short) == 1 and short[0].shape == (n,)
    # looped: the signal repeats with the trimmed length as period
    base = trim(speech_tone(1.0, SR), A)
    np.testing.assert_array_equal(short[0][: base.size], base)
    np.testing.assert_array_equal(short[0][base.size : 2 * base.size], base)


def test_augmentation_variants_match_librosa():
    y = trim(speech_tone(1.5, SR), A)
    copies = augment(y, SR, AugmentConfig())
    assert list(copies) == ["orig", "pitch-3", "pitch-1.5", "pitch+1.5", "pitch+3",
                            "stretch0.75", "stretch0.9", "stretch1.1", "stretch1.25"]
    np.testing.assert_allclose(copies["pitch+3"], librosa.effects.pitch_shift(y, sr=SR, n_steps=3.0), atol=1e-6)
    assert copies["stretch0.75"].size == pytest.approx(y.size / 0.75, rel=0.01)
    assert copies["stretch1.25"].size == pytest.approx(y.size / 1.25, rel=0.01)
    with pytest.raises(ParameterError, match="unknown augmentation"):
        apply_variant(y, SR, "reverse")


def test_resample_44k_to_16k():
    y44 = speech_tone(1.0, 44100)
    y16 = resample(y44, 44100, 16000)
    assert y16.size == 16000
    np.testing.assert_allclose(y16, librosa.resample(y44, orig_sr=44100, target_sr=16000), atol=1e-6)


def test_standardizer_per_cell_and_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 261, 128)).astype(np.float32)
    s = Standardizer.fit(x, chunk=7)
    np.testing.assert_allclose(s.mean, x.mean(0), atol=1e-4)
    np.testing.assert_allclose(s.std, x.std(0), rtol=1e-4)
    z = s.transform(x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    s.save(tmp_path / "s.safetensors")
    s2 = Standardizer.load(tmp_path / "s.safetensors")
    np.testing.assert_array_equal(s2.mean, s.mean)
    np.testing.assert_allclose(s2.inverse(z), x, atol=1e-4)


def test_feature_config_shape_for_other_lengths():
    f = log_mel(speech_tone(1.0, SR), SR, FeatureConfig())
    assert f.shape == (1 + 16000 // 184, 128)


def test_real_emodb_speaker_trimmed_in_chunks_as_librosa(emodb_dir):
    """Real speech, one speaker's EmoDB utterances (16 kHz) back to back, about 2.5 minutes:
    above the default chunk size the chunked trim equals librosa's."""
    from seradv.audio import read_audio
    from seradv.segments import TRIM_CHUNK_FRAMES

    files = sorted((emodb_dir / "wav").glob("03*.wav"))[:60]
    y = np.concatenate([read_audio(f)[0] for f in files])
    assert y.size > TRIM_CHUNK_FRAMES * A.trim_hop_length
    y = np.concatenate([np.zeros(5000, np.float32), y, np.zeros(7000, np.float32)])
    expected, _ = librosa.effects.trim(y, top_db=A.trim_top_db, frame_length=A.trim_frame_length,
                                       hop_length=A.trim_hop_length)
    assert np.array_equal(trim(y, A), expected)
