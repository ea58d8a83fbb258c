"""``seradv predict``: any audio file -> segments as in training -> the run's model.

On a tiny trained run (tone corpus): the per-segment probabilities equal the model's on the
segments ``seradv prepare`` made of the same files, the per-file class is the highest mean
probability; WAV and FLAC, mono and stereo, 16 and 48 kHz; bad files get the one-line
AudioError of the recipes, are reported and skipped, and the exit status is non-zero.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from tests.helpers.audio import speech_tone
from seradv import cli
from seradv.audio import read_audio
from seradv.errors import AudioError, ParameterError, RunDirError
from seradv.evaluation import predict_logits, softmax
from seradv.predict import Predictor, predict_files, segments_csv_path, write_prediction
from seradv.prepare import load_subset
from seradv.rundir import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from tests.helpers.corpus import make_tone_corpus, tone_config
    from seradv import pipeline

    root = tmp_path_factory.mktemp("predict")
    data = make_tone_corpus(root / "tones", n_per_gender=3, per=3)
    run_dir = root / "run"
    pipeline.prepare_run(tone_config(data, epochs=3), run_dir)
    pipeline.train_run(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor(trained_run)


@pytest.fixture()
def voice():
    """3.6 s at 16 kHz: two segments (3 s and a looped remainder)."""
    return speech_tone(3.6, 16000, freq=200.0, seed=5)


def _write(path, y, sr, channels=1):
    """16-bit PCM of ``y`` (integers given to soundfile: libsndfile's float-to-16-bit conversion
    differs by one LSB between its WAV and FLAC writers, so WAV and FLAC hold the same samples)."""
    pcm = np.clip(np.round(np.asarray(y, np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    data = np.stack([pcm] * channels, axis=1) if channels > 1 else pcm
    sf.write(str(path), data, sr, subtype="PCM_16")
    return path


def test_per_file_prediction_equals_the_model_on_prepared_segments(trained_run, predictor):
    data = load_subset(trained_run, "test")
    orig = data.meta[data.meta["variant"] == "orig"]
    manifest = pd.read_csv(trained_run / "manifest.csv", dtype=str).set_index("utterance")
    model = load_model(trained_run)
    prob_prepared = softmax(predict_logits(model, data.x).astype(np.float64))
    files = [manifest.loc[u, "path"] for u in orig["utterance"].unique()]
    pred = predict_files(trained_run, files, predictor=predictor)
    assert not pred.errors and len(pred.files) == len(files)
    cols = [f"p_{c}" for c in pred.classes]
    for utt, path in zip(orig["utterance"].unique(), files):
        rows = orig[orig["utterance"] == utt].sort_values("seg_index")
        expected = prob_prepared[rows.index.to_numpy()]
        got = pred.segments[pred.segments["file"] == path]
        assert len(got) == len(expected)
        np.testing.assert_allclose(got[cols].to_numpy(), expected, atol=1e-6)
        per_file = pred.files.set_index("file").loc[path]
        assert per_file["segments"] == len(expected)
        assert per_file["predicted"] == pred.classes[int(expected.mean(0).argmax())]
        np.testing.assert_allclose(per_file[cols].to_numpy(float), expected.mean(0), atol=1e-6)


def test_wav_and_flac_mono_and_stereo_16_and_48_khz(tmp_path, predictor, voice):
    import librosa

    voice48 = librosa.resample(voice, orig_sr=16000, target_sr=48000).astype(np.float32)
    files = {}
    for ext in ("wav", "flac"):
        for channels in (1, 2):
            files[(ext, channels, 16000)] = _write(tmp_path / f"v16-{channels}.{ext}", voice, 16000, channels)
            files[(ext, channels, 48000)] = _write(tmp_path / f"v48-{channels}.{ext}", voice48, 48000, channels)
    pred = predict_files(None, list(files.values()), predictor=predictor)
    assert not pred.errors
    table = pred.files.set_index("file")
    cols = [f"p_{c}" for c in pred.classes]
    assert (table["segments"] == 2).all()
    assert np.allclose(table[cols].sum(axis=1), 1.0)
    ref = table.loc[str(files[("wav", 1, 16000)]), cols].to_numpy(float)
    for (ext, channels, sr), path in files.items():
        got = table.loc[str(path), cols].to_numpy(float)
        if sr == 16000:  # lossless 16-bit copies of the same samples, identical channels
            np.testing.assert_array_equal(got, ref)
        else:  # resampled twice (librosa soxr_hq): close, not equal
            assert np.abs(got - ref).max() < 0.05


def test_bad_files_are_reported_and_skipped(tmp_path, predictor, voice):
    good = _write(tmp_path / "good.wav", voice, 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 3)
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    silent = _write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    missing = tmp_path / "missing.wav"
    pred = predict_files(None, [corrupt, good, empty, silent, missing], predictor=predictor)
    assert list(pred.files["file"]) == [str(good)]
    errors = dict(pred.errors)
    assert set(errors) == {str(corrupt), str(empty), str(silent), str(missing)}
    for path in (corrupt, empty, missing):
        with pytest.raises(AudioError) as exc:
            read_audio(path)
        assert errors[str(path)] == str(exc.value)  # the recipes' message, word for word
    assert "empty" in errors[str(empty)] and "silent" in errors[str(silent)]
    assert all("\n" not in m for m in errors.values())


def test_csv_and_json_outputs(tmp_path, predictor, voice):
    good = _write(tmp_path / "a.wav", voice, 16000)
    bad = tmp_path / "b.wav"
    bad.write_bytes(b"not audio at all")
    pred = predict_files(None, [good, bad], predictor=predictor)
    written = write_prediction(pred, tmp_path / "out.csv")
    assert written == [tmp_path / "out.csv", segments_csv_path(tmp_path / "out.csv")]
    per_file = pd.read_csv(tmp_path / "out.csv")
    per_seg = pd.read_csv(tmp_path / "out.segments.csv")
    assert list(per_file["file"]) == [str(good)] and len(per_seg) == 2
    write_prediction(pred, tmp_path / "out.json", run_dir="R")
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["classes"] == pred.classes and doc["run"] == "R"
    (entry,) = doc["files"]
    assert entry["predicted"] == per_file["predicted"][0] and len(entry["segments"]) == 2
    assert abs(sum(entry["probabilities"].values()) - 1.0) < 1e-9
    assert doc["errors"][0]["file"] == str(bad)
    with pytest.raises(ParameterError, match=r"\.csv or \.json"):
        write_prediction(pred, tmp_path / "out.txt")


def test_cli_predict(tmp_path, trained_run, voice):
    good = _write(tmp_path / "a.flac", voice, 16000, channels=2)
    res = runner.invoke(cli.app, ["predict", str(trained_run), str(good), "--output", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert "per file" in res.stdout and "a.flac" in res.stdout
    assert json.loads((tmp_path / "p.json").read_text())["files"][0]["file"] == str(good)

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    res = runner.invoke(cli.app, ["predict", str(trained_run), str(empty), str(good), "-o", str(tmp_path / "p.csv")])
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0] == f"error: {empty}: file is empty (0 bytes)"
    assert "1 of 2 files could not be used" in res.stderr and "Traceback" not in res.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 1

    res = runner.invoke(cli.app, ["predict", str(trained_run), str(good), "-o", str(tmp_path / "p.txt")])
    assert res.exit_code == 2 and "error: --output" in res.stderr


def test_run_directory_errors(tmp_path, trained_run):
    with pytest.raises(RunDirError):
        Predictor(tmp_path)
    (tmp_path / "folds.csv").write_text("speaker,fold\na,1\n")
    with pytest.raises(RunDirError, match="fold-1"):
        Predictor(tmp_path)
    with pytest.raises(ParameterError):
        Predictor(trained_run, batch_size=0)
