"""Realized fooling of feature-space attacks: adversarial matrices rendered, written as 16-bit
WAVs, read back through the numpy features and classified again (seradv.grid.realized)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.grid.conftest import copy_run
from seradv.attacks.waveform.realize import numpy_features, read_wavs
from seradv.attacks.waveform.render import render_features
from seradv.errors import ParameterError, RunDirError
from seradv.evaluation import predict_logits
from seradv.features import Standardizer
from seradv.grid import realized
from seradv.grid.run import run_grid
from seradv.prepare import load_subset
from seradv.rundir import attacks_dir, load_model, load_run_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def attacked(trained_run, tmp_path_factory):
    run = copy_run(trained_run, tmp_path_factory.mktemp("realized") / "run")
    run_grid(run, attacks=["fgsm"], params="eps=0.5", backend="torch", trust=False, limit=6, seed=0)
    return run


@pytest.mark.parametrize("method", ["griffinlim", "phase"])
def test_realized_rates_are_measured_on_the_written_files(attacked, method):
    table = realized.realize_run(attacked, method=method, limit=4, n_iter=8)
    assert len(table) == 1 and table["method"].iloc[0] == method
    row = table.iloc[0]
    cid = row["cell_id"]
    rows = pd.read_csv(realized.realized_dir(attacked) / f"{cid}.{method}.csv")
    assert len(rows) == row["n"] <= 4
    assert (rows["pred_clean"] == rows["label"]).all()  # only clean-correct attacked segments are rendered
    # the verdicts are the model's on the files as written: re-read them here and classify again
    cfg = load_run_config(attacked)
    scaler = Standardizer.load(attacked / "standardizer.safetensors")
    model = load_model(attacked)
    wdir = realized.realized_dir(attacked) / "wav" / f"{cid}.{method}"
    for col, pred in (("wav_adv", "pred_adv_render"), ("wav_clean", "pred_clean_render")):
        paths = [wdir / n for n in rows[col]]
        for p in paths:
            info = sf.info(str(p))
            assert info.subtype == "PCM_16" and info.samplerate == cfg.audio.sample_rate
            assert info.frames == cfg.audio.segment_samples
        x = numpy_features(read_wavs(paths, sample_rate=cfg.audio.sample_rate), sample_rate=cfg.audio.sample_rate,
                           features=cfg.features, standardizer=scaler)
        np.testing.assert_array_equal(predict_logits(model, x).argmax(1), rows[pred].to_numpy())
    faithful = rows["clean_render_correct"].astype(bool)
    expect = (rows["pred_adv_render"] != rows["label"])[faithful].mean() if faithful.any() else np.nan
    np.testing.assert_allclose(row["realized_fooling_rate"], expect, equal_nan=True)
    np.testing.assert_allclose(row["feature_fooling_rate"], (rows["pred_adv"] != rows["label"]).mean())
    assert (attacks_dir(attacked) / realized.REALIZED_CSV).is_file()


def test_realization_is_reused_while_the_cell_is_unchanged(attacked, monkeypatch):
    first = realized.realize_run(attacked, method="griffinlim", limit=4, n_iter=8)

    def boom(*a, **k):
        raise AssertionError("rendered again although the cell did not change")

    monkeypatch.setattr(realized, "realize_feature_attack", boom)
    again = realized.realize_run(attacked, method="griffinlim", limit=4, n_iter=8)
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(AssertionError, match="rendered again"):  # another setting is another realization
        realized.realize_run(attacked, method="griffinlim", limit=3, n_iter=8)


def test_rendering_an_unperturbed_matrix_gives_the_same_audio_for_clean_and_adv(attacked):
    cfg = load_run_config(attacked)
    scaler = Standardizer.load(attacked / "standardizer.safetensors")
    z = load_subset(attacked, "test").x[0]
    kw = dict(sr=cfg.audio.sample_rate, features=cfg.features, ref_db=float(scaler.inverse(z).max()),
              n_samples=cfg.audio.segment_samples, n_iter=4, seed=1)
    a, b = render_features(z, scaler, **kw), render_features(z.copy(), scaler, **kw)
    assert a.shape == (cfg.audio.segment_samples,) and np.isfinite(a).all() and np.abs(a).max() > 0
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ParameterError, match="needs the clean waveform"):
        render_features(z, scaler, method="phase", **kw)
    with pytest.raises(ParameterError, match="method='mp3' must be one of griffinlim, phase"):
        render_features(z, scaler, method="mp3", **kw)


def test_bad_requests(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "r")
    with pytest.raises(RunDirError, match="no finished attack cells"):
        realized.realize_run(run)
    with pytest.raises(ParameterError, match="method='x' must be one of"):
        realized.realize_run(run, method="x")


def test_cli_realize(attacked):
    from tests.test_cli import assert_one_line_error, invoke

    res = invoke("realize", attacked, "--limit", "3", "--n-iter", "4")
    assert res.exit_code == 0, res.output
    assert "realized" in res.output and (attacks_dir(attacked) / realized.REALIZED_CSV).is_file()
    assert_one_line_error(invoke("realize", attacked, "--method", "mp3"), "--method 'mp3' must be one of")
    assert_one_line_error(invoke("realize", attacked, "--limit", "0"), "--limit 0 must be a positive")


def test_report_shows_realized_rates(attacked, tmp_path):
    from seradv.report import build_report

    table = realized.realize_run(attacked, method="griffinlim", limit=4, n_iter=8)
    page = build_report(attacked, tmp_path / "report", n_examples=0, audio=False, n_boot=20)
    text = page.with_suffix(".md").read_text()
    assert "Realized as audio" in text and "fooling (audio)" in text
    assert (tmp_path / "report" / "stats" / "realized.csv").is_file()
    assert f"{table['attack'].iloc[0]} {table['params'].iloc[0]}" in text
