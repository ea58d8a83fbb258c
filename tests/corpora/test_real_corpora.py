"""The EMOVO and RAVDESS recipes on the real releases in ../shared/datasets (16 kHz mono FLAC
copies) and on WAV files shaped like the original releases (48 kHz, 16-bit, stereo), made
here from a few real recordings. Skipped, with the reason, where a corpus folder is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seradv.audio import read_audio
from seradv.corpora import load_corpus
from seradv.segments import resample
from tests.conftest import REPO_ROOT

DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def _corpus_dir(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        pytest.skip(f"real {name} not found at {path} (put the release there to run this test)")
    return path


def test_real_emovo_flac_release():
    m = load_corpus("emovo", _corpus_dir("emovo"))
    t = m.table
    assert m.skipped.empty, m.skipped.to_dict("records")
    assert len(t) == 588
    assert t.groupby("gender")["speaker"].nunique().to_dict() == {"f": 3, "m": 3}
    assert set(t["emotion"].value_counts()) == {84}  # 7 emotions x 14 sentences x 6 actors
    assert set(t["language"]) == {"it"} and set(t["sample_rate"]) == {16000}
    assert t["path"].str.endswith(".flac").all()


def test_real_ravdess_flac_actors():
    root = _corpus_dir("ravdess")
    m = load_corpus("ravdess", root / "Actor_01")  # odd actor: male
    t = m.table
    assert len(t) == 60 and m.skipped.empty
    assert set(t["gender"]) == {"m"} and set(t["language"]) == {"en"}
    assert t["emotion"].value_counts().to_dict()["neutral"] == 4  # 8 emotions, neutral half


@pytest.mark.parametrize("corpus, files", [
    ("emovo", ["f1/dis-f1-b1.flac", "m2/gio-m2-l1.flac", "m3/neu-m3-n5.flac"]),
    ("ravdess", ["Actor_02/03-01-05-01-01-01-02.flac", "Actor_13/03-01-01-01-02-02-13.flac"]),
])
def test_release_shaped_48k_stereo_wav(corpus, files, tmp_path):
    """The layout and names of the original release, as 48 kHz stereo 16-bit WAV: same rows as
    the FLAC copies, and the audio back at 16 kHz matches the FLAC copy."""
    root = _corpus_dir(corpus)
    for rel in files:
        if not (root / rel).is_file():
            pytest.skip(f"{root / rel} not found")
        y, sr = read_audio(root / rel)
        up = resample(y, sr, 48000)
        out = tmp_path / Path(rel).with_suffix(".wav")
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, np.stack([up, up], axis=1), 48000, subtype="PCM_16")
    wav = load_corpus(corpus, tmp_path).table.sort_values("utterance").reset_index(drop=True)
    assert len(wav) == len(files) and set(wav["sample_rate"]) == {48000}
    flac = load_corpus(corpus, root).table.set_index("utterance").loc[wav["utterance"]]
    for col in ("speaker", "gender", "emotion", "language"):
        assert list(wav[col]) == list(flac[col])
    np.testing.assert_allclose(wav["duration_s"], flac["duration_s"], atol=1e-3)
    for path, ref in zip(wav["path"], flac["path"]):
        y48, sr48 = read_audio(path)
        y16 = resample(y48, sr48, 16000)
        y0, _ = read_audio(ref)
        n = min(len(y16), len(y0))
        assert np.corrcoef(y16[:n], y0[:n])[0, 1] > 0.99
