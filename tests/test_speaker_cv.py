"""Speaker-fold cross-validation (``split: {kind: speaker_cv, folds: K}``): fold assignment,
utterance-disjoint validation, per-fold standardization, train / evaluate / attack on every
fold with pooled results, resume, the report, and the fold plan of the real EmoDB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.helpers.corpus import make_tone_corpus, tone_config
from seradv import cli, pipeline
from seradv.config import RunConfig, SplitConfig
from seradv.corpora import get_corpus, load_corpus
from seradv.errors import ConfigError, SplitError
from seradv.features import Standardizer
from seradv.grid.results import read_samples, robust_flags
from seradv.grid.run import run_grid
from seradv.prepare import _grouped_order, _load_features, read_segments, read_standardizer, select_utterances
from seradv.rundir import (FOLDS_CSV, METRICS_CSV, MODEL_WEIGHTS, PREDICTIONS, RESULTS_CSV, attacks_dir, fold_dir,
                           fold_run_dirs, is_cv_run, read_preprocessing)
from seradv.splits import default_folds, fold_split, speaker_folds


def _table(n_m: int, n_f: int, per: int = 4) -> pd.DataFrame:
    rows = []
    for g, n in (("m", n_m), ("f", n_f)):
        for s in range(n):
            for i in range(per):
                rows.append({"speaker": f"{g}{s:02d}", "gender": g, "language": "de",
                             "emotion": ("happiness", "sadness")[i % 2], "utterance": f"{g}{s:02d}-{i}"})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ fold assignment


@pytest.mark.parametrize("n_m,n_f,k", [(5, 5, 5), (12, 12, 4), (3, 3, 3), (5, 4, 3), (4, 6, 2)])
def test_every_speaker_tested_once_both_genders_per_fold(n_m, n_f, k):
    table = _table(n_m, n_f)
    folds = speaker_folds(table, k, seed=1938)
    assert sorted(folds.index) == sorted(table["speaker"].unique())  # every speaker exactly once
    assert sorted(folds.unique()) == list(range(1, k + 1))
    gender = table.groupby("speaker")["gender"].first()
    for f in range(1, k + 1):
        assert set(gender[folds[folds == f].index]) == {"m", "f"}
    sizes = folds.value_counts()
    assert sizes.max() - sizes.min() <= 1
    if n_m % k == 0 and n_f % k == 0:  # e.g. RAVDESS: 3 m + 3 f per fold
        per = pd.crosstab(folds, gender[folds.index])
        assert (per["m"] == n_m // k).all() and (per["f"] == n_f // k).all()


def test_fold_assignment_is_deterministic_in_the_seed():
    table = _table(6, 6)
    a, b = speaker_folds(table, 3, seed=7), speaker_folds(table, 3, seed=7)
    assert a.equals(b)
    assert any(not speaker_folds(table, 3, seed=s).equals(a) for s in range(8, 14))


@pytest.mark.parametrize("k,match", [(6, "at least 6 female speakers"), (1, ">= 2")])
def test_impossible_folds_are_one_line_errors(k, match):
    with pytest.raises(SplitError, match=match) as exc:
        speaker_folds(_table(6, 5), k, seed=0)
    assert "\n" not in str(exc.value)


def test_a_gender_with_one_speaker_is_refused():
    with pytest.raises(SplitError, match="at least 2 female speakers"):
        speaker_folds(_table(4, 1), 2, seed=0)


def test_config_checks_folds():
    with pytest.raises(ConfigError, match="split.folds"):
        RunConfig(split=SplitConfig(kind="speaker_cv", folds=1)).validate()
    with pytest.raises(ConfigError, match="needs split.kind 'speaker_cv'"):
        RunConfig(split=SplitConfig(kind="speaker", folds=3)).validate()
    with pytest.raises(ConfigError, match="speaker_cv"):
        RunConfig(split=SplitConfig(kind="cv")).validate()


def test_default_folds_come_from_the_recipe():
    assert [get_corpus(c).cv_folds for c in ("emodb", "emovo", "ravdess")] == [5, 3, 4]
    assert default_folds(_table(3, 7), None) == 3
    assert default_folds(_table(9, 8), None) == 5
    assert default_folds(_table(9, 8), 4) == 4


def test_validation_is_utterances_of_the_training_speakers():
    table = _table(3, 3, per=10)
    folds = speaker_folds(table, 3, seed=0)
    for k in (1, 2, 3):
        sub = fold_split(table, folds, k, val_size=0.2, seed=0)
        test_spk = set(table.loc[sub == "test", "speaker"])
        assert test_spk == set(folds[folds == k].index)
        val = table[sub == "val"]
        assert not set(val["speaker"]) & test_spk
        assert set(val["speaker"]) <= set(table.loc[sub == "train", "speaker"])
        assert len(val) == 8  # 20 % of the 40 training utterances, spread over speakers x emotions
        assert set(val["emotion"]) == {"happiness", "sadness"}


# ------------------------------------------------------------------------------ a prepared CV run


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("cv")
    data = make_tone_corpus(root / "tones", n_per_gender=3, per=2)
    cfg = tone_config(data, epochs=1).replace(**{"split.kind": "speaker_cv"})
    run_dir = root / "run"
    pipeline.prepare_run(cfg, run_dir)
    return run_dir


def test_layout_folds_and_default_number_of_folds(cv_run):
    assert is_cv_run(cv_run)
    folds = fold_run_dirs(cv_run)
    assert folds == [fold_dir(cv_run, k) for k in (1, 2, 3)]  # tones: min(5, 3 speakers per gender)
    for name in ("config.yaml", "manifest.csv", "skipped.csv", FOLDS_CSV):
        assert (cv_run / name).is_file()
    assert not (cv_run / "segments.csv").exists()
    table = pd.read_csv(cv_run / FOLDS_CSV, dtype={"speaker": str})
    assert sorted(table["speaker"]) == ["f0", "f1", "f2", "m0", "m1", "m2"]
    for d in folds:
        info = read_preprocessing(d)
        assert info.split == "speaker_cv" and info.leaky is False
        segs = read_segments(d)
        test = segs[segs["subset"] == "test"]
        k = int(d.name.split("-")[1])
        assert set(test["speaker"]) == set(table.loc[table["fold"] == k, "speaker"])
        assert set(test["gender"]) == {"m", "f"}


def test_validation_is_utterance_disjoint_and_unaugmented(cv_run):
    for d in fold_run_dirs(cv_run):
        segs = read_segments(d)
        by = {s: set(segs.loc[segs["subset"] == s, "utterance"]) for s in ("train", "val", "test")}
        assert by["val"] and not by["val"] & by["train"] and not by["test"] & (by["train"] | by["val"])
        train_spk = set(segs.loc[segs["subset"] == "train", "speaker"])
        assert set(segs.loc[segs["subset"] == "val", "speaker"]) <= train_spk
        assert set(segs.loc[segs["subset"] != "train", "variant"]) == {"orig"}  # augmented: training only
        assert set(segs.loc[segs["subset"] == "train", "variant"]) == {"orig", "pitch+1.5"}


def test_standardizer_fitted_on_the_folds_training_segments(cv_run):
    means = []
    for d in fold_run_dirs(cv_run):
        info = read_preprocessing(d)
        segs = read_segments(d, info)
        rows = _grouped_order(segs[segs["subset"] == "train"])
        expected = Standardizer.fit(_load_features(rows, Path(info.feature_cache)))
        saved = read_standardizer(d, info)
        np.testing.assert_allclose(saved.mean, expected.mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(saved.std, expected.std, rtol=1e-6, atol=1e-6)
        means.append(saved.mean)
    assert not np.allclose(means[0], means[1])  # each fold its own


def test_train_evaluate_pool_resume_attack_report(cv_run, tmp_path):
    meta = pipeline.train_run(cv_run)
    assert len(meta["folds"]) == 3
    table = pipeline.evaluate_run(cv_run)
    pooled = table[table["fold"] == "pooled"]
    per_fold = table[table["fold"] != "pooled"]
    fold_n = [len(read_segments(d).query("subset == 'test'")) for d in fold_run_dirs(cv_run)]
    all_row = pooled[pooled["group"] == "All"].iloc[0]
    assert all_row["n"] == sum(fold_n) and list(per_fold["n"]) == fold_n
    assert all_row["n_speakers"] == 6
    assert all_row["acc_lo"] <= all_row["accuracy"] <= all_row["acc_hi"]
    assert pooled.set_index("group").loc[["Male", "Female"], "n"].sum() == all_row["n"]
    preds = pd.read_csv(cv_run / PREDICTIONS, dtype={"speaker": str})
    assert preds.groupby("speaker")["fold"].nunique().eq(1).all() and preds["speaker"].nunique() == 6
    assert np.isclose(preds["correct"].mean(), all_row["accuracy"])

    # resume: finished folds are reused (same weights: their metrics are not removed as stale)
    before = {d: (d / MODEL_WEIGHTS).read_bytes() for d in fold_run_dirs(cv_run)}
    third = fold_run_dirs(cv_run)[2]
    for name in ("model.safetensors", "model.json", "history.csv"):  # interrupted after its last epoch
        (third / name).unlink()
    pipeline.train_run(cv_run)
    for d in fold_run_dirs(cv_run):
        assert (d / MODEL_WEIGHTS).read_bytes() == before[d]
    assert (fold_run_dirs(cv_run)[0] / METRICS_CSV).is_file()

    # attack: each fold's own test subset, pooled per sample
    results = run_grid(cv_run, attacks=["fgsm"], grid="quick", limit=4, seed=0, batch_size=16)
    assert (attacks_dir(cv_run) / RESULTS_CSV).is_file()
    fold_results = [pd.read_csv(attacks_dir(d) / RESULTS_CSV) for d in fold_run_dirs(cv_run)]
    assert set(fold_results[0].columns) | {"folds", "robust_lo", "robust_hi", "n_speakers"} <= set(results.columns)
    cells = results[(results["attack"] == "fgsm") & (results["group"] == "All")]
    assert len(cells) == 2 and (cells["folds"] == "1;2;3").all()
    for r in cells.itertuples():
        parts = [fr[(fr["params"] == r.params) & (fr["group"] == "All") & (fr["attack"] == "fgsm")].iloc[0]
                 for fr in fold_results]
        assert r.n == sum(p["n"] for p in parts) == 12
        samples = pd.concat([read_samples(attacks_dir(d) / "cells" / f"{p['cell_id']}.samples.csv")
                             for d, p in zip(fold_run_dirs(cv_run), parts)])
        assert np.isclose(r.robust_accuracy, robust_flags(samples).mean())
        assert r.robust_lo <= r.robust_accuracy <= r.robust_hi and r.n_speakers == 6
    again = run_grid(cv_run, attacks=["fgsm"], grid="quick", limit=4, seed=0, batch_size=16)  # all reused
    pd.testing.assert_frame_equal(again, results)

    from seradv.report import build_report
    from seradv.report.data import load_run

    run = load_run(cv_run)
    assert run.info.split == "speaker_cv" and set(run.metrics["group"]) == {"All", "Male", "Female"}
    cid = cells["cell_id"].iloc[0]
    assert sorted(run.samples(cid)["fold"].unique()) == [1, 2, 3]
    page = build_report(cv_run, tmp_path / "report", n_examples=0, audio=False, n_boot=50)
    text = page.with_suffix(".md").read_text()
    assert "3-fold speaker cross-validation" in text and "limit 4 per fold" in text
    assert "the speaker folds" in text  # one row per fold: its test speakers, epochs, clean accuracy
    plan = pd.read_csv(cv_run / FOLDS_CSV, dtype={"speaker": str})
    for spk in plan["speaker"]:
        assert f"{spk} (" in text


def test_cli_prepare_speaker_cv_errors_and_folds(tmp_path, one_thread):
    data = make_tone_corpus(tmp_path / "tones", n_per_gender=3, per=1)
    runner = CliRunner()
    args = ["prepare", "tones", "-d", str(data), "-o", str(tmp_path / "r"), "--split", "speaker_cv"]
    res = runner.invoke(cli.app, args + ["--folds", "4"])
    assert res.exit_code == 2 and "at least 4 male speakers" in res.output
    assert not (tmp_path / "r").exists()
    res = runner.invoke(cli.app, ["prepare", "tones", "-d", str(data), "-o", str(tmp_path / "s"), "--folds", "2"])
    assert res.exit_code == 2 and "speaker_cv" in res.output


# ------------------------------------------------------------------------------ real data: plan only


def test_emodb_plan_five_folds_of_one_male_one_female(emodb_dir):
    recipe = get_corpus("emodb")
    table = select_utterances(load_corpus("emodb", emodb_dir).table, recipe.study_emotions)
    k = default_folds(table, recipe.cv_folds)
    assert k == 5
    folds = speaker_folds(table, k, seed=SplitConfig().seed)
    gender = table.groupby("speaker")["gender"].first()
    assert len(folds) == 10
    for f in range(1, 6):
        assert sorted(gender[folds[folds == f].index]) == ["f", "m"]
        sub = fold_split(table, folds, f, val_size=0.2, seed=SplitConfig().seed)
        assert set(table.loc[sub == "val", "speaker"]) == set(table.loc[sub == "train", "speaker"])


def test_seradv_run_with_a_speaker_cv_config(tmp_path, one_thread):
    data = make_tone_corpus(tmp_path / "tones", n_per_gender=2, per=2)
    cfg = tone_config(data, epochs=1).replace(**{"split.kind": "speaker_cv", "split.folds": 2,
                                                 "attack.attacks": ["fgsm"], "attack.limit": 2})
    run_dir = pipeline.run(cfg, out=tmp_path / "run")
    assert len(fold_run_dirs(run_dir)) == 2
    metrics = pd.read_csv(run_dir / METRICS_CSV)
    assert list(metrics["fold"]) == ["pooled"] * 3 + ["1", "2"]
    results = pd.read_csv(attacks_dir(run_dir) / RESULTS_CSV)
    assert set(results["folds"]) == {"1;2"}
    assert (run_dir / "report" / "report.html").is_file()
