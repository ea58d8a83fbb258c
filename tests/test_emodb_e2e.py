"""End to end on the real EmoDB (a few utterances per class, one epoch).

Skipped with a clear reason when ../shared/datasets/emodb is absent.
"""

from __future__ import annotations

import pandas as pd
import pytest

from seradv import pipeline
from seradv.fileio import read_json
from seradv.config import DataConfig, RunConfig, TrainConfig
from seradv.corpora import load_corpus

pytestmark = pytest.mark.emodb


def test_emodb_manifest_features_train_evaluate(emodb_dir, tmp_path):
    manifest = load_corpus("emodb", emodb_dir)
    assert len(manifest.table) == 535 and manifest.skipped.empty
    cfg = RunConfig(
        name="emodb-e2e",
        data=DataConfig(corpus="emodb", data_dir=str(emodb_dir), max_per_class=1),
        train=TrainConfig(epochs=1, threads=2),
    )
    run_dir = tmp_path / "run"
    info = pipeline.prepare_run(cfg, run_dir, manifest=manifest)
    assert info.classes == ["boredom", "disgust", "happiness", "neutral", "sadness"]
    assert info.input_shape == [261, 128]
    counts = {c["subset"]: c for c in info.counts}
    # 10 speakers x 5 emotions x 1 utterance; 1 m + 1 f speaker each for test and validation
    assert counts["test"]["male"] > 0 and counts["test"]["female"] > 0
    assert len(counts["test"]["speakers"].split()) == 2 and len(counts["val"]["speakers"].split()) == 2
    split = pd.read_csv(run_dir / "split.csv")
    n_train_utts = int((split["subset"] == "train").sum())
    assert n_train_utts >= 20
    # at least one segment for each of the 9 copies (original + 8 augmented) of a training utterance
    assert counts["train"]["n"] >= 9 * n_train_utts
    assert counts["test"]["n"] == int((split["subset"] == "test").sum())  # test: originals only
    meta = pipeline.train_run(run_dir)
    assert 3_950_000 < meta["parameters"] < 3_970_000
    table = pipeline.evaluate_run(run_dir)
    assert list(table["group"]) == ["All", "Male", "Female"]
    assert table["accuracy"].between(0, 1).all()
    m = read_json(run_dir / "metrics.json")
    test_spk = set(pd.read_csv(run_dir / "segments.csv").query("subset == 'train'")["speaker"])
    assert not set(m["test_speakers"]) & test_spk
