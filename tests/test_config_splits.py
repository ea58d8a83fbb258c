"""Config loading/validation and the two split strategies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seradv.config import RunConfig, SplitConfig, from_dict, load_config, save_config
from seradv.errors import ConfigError, SplitError
from seradv.splits import paper_split, speaker_split


def test_config_roundtrip_yaml(tmp_path):
    cfg = RunConfig(name="x").replace(**{"split.kind": "paper", "train.epochs": 3, "data.corpus": "emodb"})
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    "data, match",
    [
        ({"train": {"epoch": 3}}, "unknown config key.*train.epoch"),
        ({"train": {"epochs": "many"}}, "train.epochs must be an integer"),
        ({"train": {"epochs": 0}}, "train.epochs=0 must be a positive"),
        ({"split": {"kind": "random"}}, "split.kind='random'"),
        ({"split": {"test_size": 1.5}}, "split.test_size=1.5"),
        ({"name": "../evil"}, "plain folder name"),
        ({"augment": {"stretch_rates": [0.9, -1]}}, "augment.stretch_rates"),
        ({"audio": 5}, "audio must be a mapping"),
    ],
)
def test_config_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(data)


def test_load_config_bad_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def _table(n_m=5, n_f=5, per=6):
    rows = []
    emotions = ["boredom", "disgust", "happiness", "neutral", "sadness"]
    for g, n in (("m", n_m), ("f", n_f)):
        for s in range(n):
            for i in range(per):
                rows.append({"speaker": f"{g}{s}", "gender": g, "emotion": emotions[i % 5], "utterance": f"{g}{s}-{i}"})
    return pd.DataFrame(rows)


def test_speaker_split_is_speaker_disjoint_with_both_genders():
    t = _table()
    sub = speaker_split(t, SplitConfig())
    spk = {name: set(t.loc[sub == name, "speaker"]) for name in ("train", "val", "test")}
    assert not (spk["train"] & spk["test"]) and not (spk["train"] & spk["val"]) and not (spk["val"] & spk["test"])
    for name in ("val", "test"):
        assert set(t.loc[sub == name, "gender"]) == {"m", "f"}
        assert len(spk[name]) == 2  # EmoDB-like: 1 m + 1 f
    assert (speaker_split(t, SplitConfig()) == sub).all()  # seeded
    chosen = {frozenset(t.loc[speaker_split(t, SplitConfig(seed=s)) == "test", "speaker"]) for s in range(10)}
    assert len(chosen) > 1  # the seed matters


def test_speaker_split_named_and_errors():
    t = _table()
    sub = speaker_split(t, SplitConfig(test_speakers=("m0", "f0"), val_speakers=("m1", "f1")))
    assert set(t.loc[sub == "test", "speaker"]) == {"m0", "f0"}
    with pytest.raises(SplitError, match="unknown speakers"):
        speaker_split(t, SplitConfig(test_speakers=("zz",), val_speakers=("m1",)))
    with pytest.raises(SplitError, match="at least 3 female speakers"):
        speaker_split(_table(n_f=2), SplitConfig())


def test_paper_split_is_stratified_seeded_and_80_20():
    rng = np.random.default_rng(0)
    segs = pd.DataFrame({"emotion": rng.choice(["a", "b", "c"], size=1000, p=[0.5, 0.3, 0.2])})
    sub = paper_split(segs, SplitConfig(kind="paper"))
    assert (sub == "test").sum() == 200
    assert (sub == "val").sum() == 160 and (sub == "train").sum() == 640
    frac = segs[sub == "test"]["emotion"].value_counts(normalize=True)
    allf = segs["emotion"].value_counts(normalize=True)
    assert np.allclose(frac.sort_index(), allf.sort_index(), atol=0.01)
    assert (paper_split(segs, SplitConfig(kind="paper")) == sub).all()
    with pytest.raises(SplitError, match="at least 2"):
        paper_split(pd.DataFrame({"emotion": ["a", "b", "b"]}), SplitConfig(kind="paper"))


@pytest.mark.parametrize(
    "data, match",
    [
        ({"augment": {"pitch_steps": ["a", 1]}}, r"augment.pitch_steps\[0\] must be a number, got 'a'"),
        ({"augment": {"pitch_steps": [float("nan")]}}, "augment.pitch_steps values must be finite"),
        ({"split": {"test_speakers": [3, "m1"]}}, r"split.test_speakers\[0\] must be a string, got 3; put it in quotes"),
        ({"attack": {"attacks": ["fgsm", None]}}, r"attack.attacks\[1\] must not be null"),
        ({"train": {"threads": -2}}, "train.threads=-2 must be a positive integer"),
        ({"train": {"threads": 0}}, "train.threads=0"),
        ({"train": {"device": "gpu"}}, "train.device='gpu' is not a device; use cpu, cuda"),
        ({"attack": {"device": "cuda:x"}}, "attack.device='cuda:x' is not a device"),
        ({"train": {"seed": -1}}, r"train.seed=-1 must be an integer >= 0"),
        ({"split": {"seed": -5}}, r"split.seed=-5 must be an integer >= 0"),
        ({"attack": {"seed": -1}}, r"attack.seed=-1 must be an integer >= 0"),
        ({"train": {"min_delta": -1.0}}, "train.min_delta=-1.0 must be >= 0"),
        ({"features": {"top_db": 0}}, "features.top_db=0.0 must be a positive"),
        ({"audio": {"segment_s": float("inf")}}, "audio.segment_s=inf must be a finite positive"),
        ({"data": {"emotions": ["joy"]}}, "data.emotions.*unknown emotion 'joy'; use names from anger"),
        ({"attack": {"attacks": []}}, "attack.attacks=.* must list attack names"),
        ({1: "x"}, "unknown config key.*1"),
    ],
)
def test_config_validates_every_value(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(data)


def test_configs_built_in_python_are_type_checked():
    from seradv.config import AugmentConfig, TrainConfig

    with pytest.raises(ConfigError, match=r"augment.pitch_steps\[0\] must be a number"):
        RunConfig(augment=AugmentConfig(pitch_steps=("x",))).validate()
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        RunConfig(train=TrainConfig(epochs="3")).validate()
    with pytest.raises(ConfigError, match="train must be a mapping"):
        RunConfig(train={"epochs": 3}).validate()
    assert RunConfig().validate() == RunConfig()


@pytest.mark.parametrize(
    "content, match",
    [
        (b"name: x\ntrain:\n  epochs: 3\n  bad: [\n", r"bad.yaml, line 5, column 1: not valid YAML: .*; check the"),
        (b"name: x\ntrain:\n\tepochs: 3\n", r"bad.yaml, line 3, column 1: not valid YAML"),
        (b"name: x\n# caf\xe9\n", r"bad.yaml, line 2: not UTF-8 text \(byte 0xe9\); save the file with UTF-8"),
        (b"- a\n- b\n", "bad.yaml: a config must be a mapping"),
    ],
)
def test_load_config_errors_name_file_and_line(tmp_path, content, match):
    p = tmp_path / "bad.yaml"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(p)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_config(tmp_path)
    assert load_config(_write(tmp_path / "empty.yaml", b"")) == RunConfig()


def _write(path, content: bytes):
    path.write_bytes(content)
    return path
