"""The transfer matrix (seradv.grid.transfer): adversarial WAVs of one run classified by other runs'
own pipelines. Runs: one prepared tone corpus with the tiny model (A, the source) and the same
preparation with small_cnn (B); the same corpus prepared with other test speakers (C), so that C
trained on some of A's test utterances."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.corpus import make_tone_corpus, tone_config
from seradv import pipeline
from seradv.attacks.waveform.realize import numpy_features, read_wavs
from seradv.attacks.waveform.segments import segment_waveforms
from seradv.attacks.waveform.universal import universal_dir, universal_run
from seradv.errors import ParameterError
from seradv.evaluation import predict_logits
from seradv.fileio import read_json
from seradv.grid.results import load_results
from seradv.grid.run import run_grid
from seradv.grid.transfer import COLUMNS, run_labels, source_cells, transfer_figure, transfer_matrix
from seradv.models import SmallCNN
from seradv.prepare import read_segments, read_standardizer
from seradv.rundir import PREPARATION_FILES, load_model, load_run_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _speakers(run: Path, subset: str, gender: str) -> list[str]:
    segs = read_segments(run)
    part = segs[(segs["subset"] == subset) & (segs["gender"] == gender)]
    return sorted(part["speaker"].astype(str).unique())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    data = make_tone_corpus(root / "tones", n_per_gender=3, per=2)
    a = root / "tiny"
    pipeline.prepare_run(tone_config(data), a)
    pipeline.train_run(a)
    b = root / "small"
    b.mkdir()
    for name in PREPARATION_FILES:  # the same preparation, another architecture
        shutil.copy(a / name, b / name)
    pipeline.train_run(b, train_overrides={"model": "small_cnn", "epochs": 2})
    # C: A's female test speaker and male validation speaker for test; A's male test speaker trains C
    test = (_speakers(a, "test", "f")[0], _speakers(a, "val", "m")[0])
    val = (_speakers(a, "val", "f")[0], _speakers(a, "train", "m")[0])
    c = root / "other_split"
    pipeline.prepare_run(tone_config(data).replace(**{"split.test_speakers": test, "split.val_speakers": val}), c)
    pipeline.train_run(c)
    run_grid(a, attacks=["pgd_snr_wave"], grid="quick", seed=0, trust=False)
    facts = universal_run(a, snr_db=20.0, steps=10, batch_size=8)
    table = transfer_matrix([a], [a, b, c], out=root / "transfer.csv")
    return {"a": a, "b": b, "c": c, "facts": facts, "table": table, "root": root}


def test_the_table_has_a_row_per_source_cell_and_target(runs):
    table = runs["table"]
    assert list(table.columns) == list(COLUMNS)
    assert set(table["attack"]) == {"pgd_snr_wave", "universal", "universal_random"}
    assert set(table["target_run"]) == {"tiny", "small", "other_split"} and len(table) == 3 * 3
    pd.testing.assert_frame_equal(pd.read_csv(runs["root"] / "transfer.csv"), table, check_dtype=False)
    assert read_json(runs["b"] / "model.json")["model"] == "small_cnn"
    assert isinstance(load_model(runs["b"]), SmallCNN)


def test_the_diagonal_is_the_source_cells_own_robust_accuracy_on_its_files(runs):
    a, table = runs["a"], runs["table"]
    diag = table[table["target_run"] == "tiny"].set_index("attack")
    n_test = int((read_segments(a)["subset"] == "test").sum())
    assert (diag["n"] == n_test).all() and (diag["n_excluded"] == 0).all()
    np.testing.assert_allclose(diag["robust_acc_target"], diag["source_robust_acc"])
    cell = load_results(a).query("attack == 'pgd_snr_wave' and group == 'All'").iloc[0]
    np.testing.assert_allclose(diag.loc["pgd_snr_wave", "robust_acc_target"], cell["robust_accuracy"])
    np.testing.assert_allclose(diag.loc["pgd_snr_wave", "clean_acc_target"], cell["clean_accuracy"])
    facts = runs["facts"]
    np.testing.assert_allclose(diag.loc["universal", "robust_acc_target"], facts["robust_accuracy"])
    np.testing.assert_allclose(diag.loc["universal_random", "robust_acc_target"], facts["random_robust_accuracy"])
    # the same preparation and split: the small CNN hears every test segment too
    assert (table.loc[table["target_run"] == "small", "n"] == n_test).all()


def test_utterances_the_target_trained_or_validated_on_are_excluded(runs):
    a, c, table = runs["a"], runs["c"], runs["table"]
    a_test = read_segments(a).query("subset == 'test'")
    c_segs = read_segments(c)
    seen = set(c_segs.loc[c_segs["subset"].isin(["train", "val"]), "utterance"])
    unseen = a_test[~a_test["utterance"].isin(seen)]
    assert 0 < len(unseen) < len(a_test)  # C trained on A's male test speaker
    assert set(unseen["speaker"]) == set(_speakers(a, "test", "f"))
    excluded = set(a_test.loc[a_test["utterance"].isin(seen), "speaker"])
    assert excluded == set(_speakers(a, "test", "m")) and excluded <= set(c_segs.query("subset == 'train'")["speaker"])
    rows = table[table["target_run"] == "other_split"]
    assert (rows["n"] == len(unseen)).all() and (rows["n_excluded"] == len(a_test) - len(unseen)).all()
    # C's numbers come from C's own standardizer and model, on A's written files
    row = rows[rows["attack"] == "universal"].iloc[0]
    cfg = load_run_config(c)
    wav = universal_dir(a, 20.0) / "wav"
    ids = unseen["segment_id"].tolist()
    x = numpy_features(read_wavs([wav / f"{s}.wav" for s in ids], sample_rate=cfg.audio.sample_rate),
                       sample_rate=cfg.audio.sample_rate, features=cfg.features, standardizer=read_standardizer(c))
    adv = predict_logits(load_model(c), x).argmax(1)
    classes = read_json(c / "preprocessing.json")["classes"]
    y = np.array([classes.index(e) for e in unseen["emotion"]])
    cell = source_cells(a)[1].samples.set_index("segment_id").loc[ids]
    assert source_cells(a)[1].attack == "universal"
    clean_x = numpy_features(segment_waveforms(a, cell.reset_index()), sample_rate=cfg.audio.sample_rate,
                             features=cfg.features, standardizer=read_standardizer(c))
    clean = predict_logits(load_model(c), clean_x).argmax(1)
    np.testing.assert_allclose(row["clean_acc_target"], np.mean(clean == y))
    np.testing.assert_allclose(row["robust_acc_target"], np.mean((clean == y) & (adv == y)))


def test_attack_filter_figure_and_labels(runs, tmp_path):
    only = transfer_matrix([runs["a"]], [runs["b"]], attacks=["universal"])
    assert list(only["attack"]) == ["universal"] and list(only["target_run"]) == ["small"]
    png = transfer_figure(runs["table"], tmp_path / "transfer.png")
    assert png.is_file() and png.stat().st_size > 5000
    with pytest.raises(ParameterError, match="empty"):
        transfer_figure(runs["table"].iloc[:0], tmp_path / "none.png")
    labels = run_labels([Path("/x/a/run"), Path("/x/b/run"), Path("/y/c")])
    assert list(labels.values()) == ["a/run", "b/run", "y/c"]
    with pytest.raises(ParameterError, match="no run directories"):
        transfer_matrix([], [runs["a"]])
