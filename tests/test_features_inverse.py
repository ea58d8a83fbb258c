"""Mel inversion (seradv.features.to_power_mel, features_to_audio): standardized log-Mel
features back to a power Mel spectrogram and to audio, as the report's examples use it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.audio import speech_tone
from seradv.config import FeatureConfig
from seradv.errors import ParameterError
from seradv.features import Standardizer, features_to_audio, log_mel, to_power_mel

SR = 16000


@pytest.fixture(scope="module")
def standardized() -> tuple[np.ndarray, Standardizer]:
    x = np.stack([log_mel(speech_tone(3.0, SR, seed=k), SR) for k in range(3)])
    s = Standardizer.fit(x)
    return s.transform(x[0]), s


def test_to_power_mel_undoes_standardization_and_db(standardized):
    z, s = standardized
    db = s.inverse(z)
    p = to_power_mel(z, s, ref_db=float(db.max()))
    assert p.shape == (128, 261)
    assert p.max() == pytest.approx(1.0, rel=1e-5)  # the loudest cell is the 0 dB reference
    np.testing.assert_allclose(10 * np.log10(p).T + db.max(), db, atol=1e-3)


def test_to_power_mel_rejects_features_of_another_shape(standardized):
    z, s = standardized
    with pytest.raises(ParameterError, match="do not fit the standardizer"):
        to_power_mel(z[:100], s, ref_db=0.0)


def test_features_to_audio_is_reproducible(standardized):
    z, s = standardized
    cfg = FeatureConfig()
    ref = float(s.inverse(z).max())
    y = features_to_audio(z, s, sr=SR, features=cfg, ref_db=ref, n_iter=4, seed=3)
    assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()
    assert y.size == (z.shape[0] - 1) * cfg.hop_length
    np.testing.assert_array_equal(y, features_to_audio(z, s, sr=SR, features=cfg, ref_db=ref, n_iter=4, seed=3))
