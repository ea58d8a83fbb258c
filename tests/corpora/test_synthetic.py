"""The built-in synthetic corpus: config validation, naming, determinism, idempotence,
atomic writes, the manifest, and emotion/gender cues in the generated audio."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seradv.corpora import get_corpus, load_corpus
from seradv.corpora.synthetic import generate as syn
from seradv.corpora.base import SkipFile
from seradv.corpora.synthetic import (
    RECIPE,
    SyntheticConfig,
    default_data_dir,
    generate_synthetic_corpus,
    parse_synthetic,
    plan_utterances,
)
from seradv.errors import CorpusError, ParameterError

SMALL = SyntheticConfig(speakers_per_gender=2, utterances_per_emotion=1)  # 60 files
TINY = SyntheticConfig(languages=("xa", "xc"), speakers_per_gender=1, utterances_per_emotion=1,
                       emotions=("happiness", "sadness"))  # 8 files


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_corpus(tmp_path_factory.mktemp("syn") / "small", SMALL)


def _wavs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.wav"))


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------------------ config


def test_default_config_matches_the_demo_corpus() -> None:
    cfg = SyntheticConfig()
    assert cfg.languages == ("xa", "xb", "xc")
    assert cfg.emotions == ("boredom", "disgust", "happiness", "neutral", "sadness")
    assert (cfg.speakers_per_gender, cfg.utterances_per_emotion, cfg.sample_rate) == (3, 4, 16000)
    assert cfg.n_files == 360 == len(plan_utterances(cfg))
    assert SyntheticConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SyntheticConfig(languages=["xa"]).languages == ("xa",)  # lists become tuples


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"languages": ()}, "languages"),
        ({"languages": "xa"}, "languages"),
        ({"languages": ("xa", "de")}, "de"),
        ({"languages": ("xa", "xa")}, "duplicates"),
        ({"emotions": ("happiness", "joy")}, "joy"),
        ({"emotions": ()}, "emotions"),
        ({"speakers_per_gender": 0}, "speakers_per_gender"),
        ({"speakers_per_gender": 100}, "speakers_per_gender"),
        ({"utterances_per_emotion": 0}, "utterances_per_emotion"),
        ({"sample_rate": 4000}, "sample_rate"),
        ({"min_duration_s": 0.1}, "min_duration_s"),
        ({"max_duration_s": float("nan")}, "max_duration_s"),
        ({"min_duration_s": 3.0, "max_duration_s": 2.0}, "must not exceed"),
    ],
)
def test_bad_parameters_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        SyntheticConfig(**kwargs)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ParameterError, match="unknown synthetic config keys"):
        SyntheticConfig.from_dict({"seed": 0, "speakers": 3})


def test_bad_config_type_raises(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="SyntheticConfig"):
        generate_synthetic_corpus(tmp_path / "x", {"seed": 0})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ names


def test_file_names_follow_the_scheme_and_parse_back(small_dir: Path) -> None:
    files = _wavs(small_dir)
    assert len(files) == SMALL.n_files
    assert (small_dir / "xa_xa-f01_happiness_001.wav").is_file()
    for path in files:
        fields = parse_synthetic(path)
        lang, speaker, emotion, index = path.stem.split("_")
        assert fields == {"language": lang, "speaker": speaker, "gender": speaker[3],
                          "emotion": emotion, "utterance": path.stem}
        assert speaker.startswith(f"{lang}-") and index.isdigit() and len(index) == 3


@pytest.mark.parametrize(
    "name",
    [
        "03a01Fa.wav",                      # EmoDB
        "xa_xa-f01_happiness.wav",           # no index
        "xa_xb-f01_happiness_001.wav",       # speaker of another language
        "xa_xa-x01_happiness_001.wav",       # unknown gender
        "xa_xa-f01_joy_001.wav",             # unknown emotion
        "xz_xz-f01_happiness_001.wav",       # unknown language
        "xa_xa-f01_happiness_01.wav",        # index not on 3 digits
    ],
)
def test_bad_names_are_skipped(name: str) -> None:
    with pytest.raises(SkipFile):
        parse_synthetic(Path(name))


# ------------------------------------------------------------------------------ generation


def test_same_seed_gives_identical_bytes_other_seed_other_audio(tmp_path: Path) -> None:
    a = generate_synthetic_corpus(tmp_path / "a", TINY)
    b = generate_synthetic_corpus(tmp_path / "b", TINY)
    names = [p.name for p in _wavs(a)]
    assert len(names) == TINY.n_files == 8
    assert names == [p.name for p in _wavs(b)]
    for name in [*names, "synthetic.json"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    other_seed = SyntheticConfig(**{**TINY.to_dict(), "seed": 1})
    other = generate_synthetic_corpus(tmp_path / "c", other_seed)
    assert [p.name for p in _wavs(other)] == names
    for name in names:
        y1, _ = sf.read(a / name)
        y2, _ = sf.read(other / name)
        assert y1.shape != y2.shape or not np.allclose(y1, y2), name


def test_generation_is_idempotent_and_repairs_missing_files(tmp_path: Path) -> None:
    out = generate_synthetic_corpus(tmp_path / "c", TINY)
    before = _snapshot(out)
    assert generate_synthetic_corpus(out, TINY) == out
    assert _snapshot(out) == before  # nothing rewritten (same mtimes and bytes)
    victim = out / "xc_xc-m01_sadness_001.wav"
    victim.unlink()
    generate_synthetic_corpus(out, TINY)
    assert victim.read_bytes() == before[victim.name][1]
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no temporary leftovers


def test_interrupted_generation_leaves_no_half_file(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "interrupted"
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync_then_interrupt(fd: int) -> None:  # 1: synthetic.json, 2-3: wavs, 4: interrupt
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(syn.os, "fsync", fsync_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_corpus(out, TINY)
    monkeypatch.setattr(syn.os, "fsync", real_fsync)
    assert len(_wavs(out)) == 2
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # temp file removed
    generate_synthetic_corpus(out, TINY)  # completes the corpus
    reference = generate_synthetic_corpus(tmp_path / "reference", TINY)
    assert {p.name: p.read_bytes() for p in _wavs(out)} == {
        p.name: p.read_bytes() for p in _wavs(reference)
    }


def test_folder_with_another_config_raises(tmp_path: Path) -> None:
    out = generate_synthetic_corpus(tmp_path / "c", TINY)
    other = SyntheticConfig(**{**TINY.to_dict(), "seed": 7})
    with pytest.raises(CorpusError, match="another folder"):
        generate_synthetic_corpus(out, other)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "03a01Fa.wav").write_bytes(b"RIFF")
    with pytest.raises(CorpusError, match="not empty"):
        generate_synthetic_corpus(foreign, TINY)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "synthetic.json").write_text("{not json")
    with pytest.raises(CorpusError, match="unreadable"):
        generate_synthetic_corpus(tmp_path / "broken", TINY)


def test_metadata_records_the_config(small_dir: Path) -> None:
    meta = json.loads((small_dir / "synthetic.json").read_text())
    assert meta["version"] == syn.GENERATOR_VERSION
    assert SyntheticConfig.from_dict(meta["config"]) == SMALL
    assert meta["n_files"] == SMALL.n_files


def test_audio_is_sane_16_bit_speech(small_dir: Path) -> None:
    for path in _wavs(small_dir):
        info = sf.info(str(path))
        assert (info.channels, info.samplerate, info.subtype) == (1, 16000, "PCM_16")
        y, _ = sf.read(path)
        assert np.all(np.isfinite(y))
        assert np.max(np.abs(y)) < 0.99, path.name
        rms_db = 20 * math.log10(float(np.sqrt(np.mean(y**2))))
        assert -50.0 < rms_db < -10.0, (path.name, rms_db)
        assert SMALL.min_duration_s <= y.size / 16000 <= SMALL.max_duration_s


# ------------------------------------------------------------------------------ manifest


def test_manifest_has_languages_genders_emotions_and_counts(small_dir: Path) -> None:
    manifest = load_corpus("synthetic", small_dir)
    t = manifest.table
    assert manifest.skipped.empty
    assert len(t) == SMALL.n_files
    assert set(t["corpus"]) == {"synthetic"}
    assert sorted(t["language"].unique()) == ["xa", "xb", "xc"]
    assert sorted(t["gender"].unique()) == ["f", "m"]
    assert sorted(t["emotion"].unique()) == sorted(RECIPE.study_emotions)
    assert set(t["sample_rate"]) == {16000}
    assert t["speaker"].nunique() == 3 * 2 * SMALL.speakers_per_gender
    assert set(t.groupby("language").size()) == {SMALL.n_files // 3}
    assert set(t.groupby("emotion").size()) == {SMALL.n_files // 5}
    assert set(t.groupby(["language", "gender"])["speaker"].nunique()) == {2}
    assert t["utterance"].is_unique
    assert t["duration_s"].between(SMALL.min_duration_s, SMALL.max_duration_s).all()


def test_recipe_is_registered() -> None:
    recipe = get_corpus("synthetic")
    assert recipe is RECIPE
    assert recipe.study_emotions == ("boredom", "disgust", "happiness", "neutral", "sadness")
    assert recipe.hyperparameters == {
        "dropout": 0.3, "lstm_dropout": 0.2, "lr": 1e-3, "batch_size": 32
    }
    assert recipe.default_data_dir is default_data_dir
    assert parse_synthetic(Path(recipe.example_name))["emotion"] == "happiness"


def test_default_data_dir_follows_the_cache_variable(tmp_path: Path, monkeypatch) -> None:
    h = SyntheticConfig().short_hash()
    assert len(h) == 12 and h != SyntheticConfig(seed=1).short_hash()
    monkeypatch.setenv("SERADV_CACHE_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path / "synthetic" / h
    monkeypatch.delenv("SERADV_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "seradv" / "synthetic" / h


def test_ensure_generates_the_default_only_into_missing_or_empty_folders(
    tmp_path: Path, monkeypatch, small_dir: Path
) -> None:
    calls: list[tuple[Path, SyntheticConfig]] = []
    monkeypatch.setattr(syn, "generate_synthetic_corpus", lambda d, c=None: calls.append((d, c)))
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "03a01Fa.wav").write_bytes(b"RIFF")
    syn.ensure_synthetic(tmp_path / "missing")
    syn.ensure_synthetic(tmp_path / "empty")
    syn.ensure_synthetic(tmp_path / "foreign")  # left alone: the scan reports it
    syn.ensure_synthetic(small_dir)  # repaired with its own recorded config
    default = SyntheticConfig()
    assert calls == [(tmp_path / "missing", default), (tmp_path / "empty", default),
                     (small_dir, SMALL)]


def test_manifest_of_an_empty_folder_generates_a_corpus(tmp_path: Path, monkeypatch) -> None:
    real = syn.generate_synthetic_corpus
    monkeypatch.setattr(syn, "generate_synthetic_corpus", lambda d, c=None: real(d, TINY))
    manifest = load_corpus("synthetic", tmp_path / "fresh")
    assert len(manifest.table) == TINY.n_files
    assert set(manifest.table["language"]) == {"xa", "xc"}


@pytest.mark.slow
def test_default_corpus_end_to_end() -> None:
    manifest = load_corpus("synthetic")  # default folder under $SERADV_CACHE_DIR
    assert len(manifest.table) == 360
    assert Path(manifest.table["path"].iloc[0]).parent == default_data_dir().resolve()


# ------------------------------------------------------------------------------ cues


def test_emotions_and_genders_differ_in_the_intended_direction(small_dir: Path) -> None:
    import librosa

    table = load_corpus("synthetic", small_dir).table
    f0s, rms = [], []
    for path in table["path"]:
        y, sr = sf.read(path)
        frame_rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=256)[0]
        f0 = librosa.yin(y, fmin=60, fmax=500, sr=sr, frame_length=1024, hop_length=256)
        loud = frame_rms[: f0.size] > np.percentile(frame_rms, 60)  # voiced, loud frames
        f0s.append(float(np.median(f0[: loud.size][loud])))
        rms.append(20 * math.log10(float(np.sqrt(np.mean(y**2)))))
    table = table.assign(f0=f0s, rms=rms)
    # F0 relative to each speaker's mean, so genders do not mask the emotion effect
    table["f0_rel"] = 12 * np.log2(table["f0"] / table.groupby("speaker")["f0"].transform("mean"))
    by_emotion = table.groupby("emotion")[["f0_rel", "rms"]].mean()
    assert by_emotion.loc["happiness", "f0_rel"] > by_emotion.loc["neutral", "f0_rel"] + 1.0
    assert by_emotion.loc["neutral", "f0_rel"] > by_emotion.loc["sadness", "f0_rel"]
    assert by_emotion.loc["neutral", "f0_rel"] > by_emotion.loc["boredom", "f0_rel"]
    rms_db = by_emotion["rms"]
    assert rms_db["happiness"] > rms_db["neutral"] > rms_db["sadness"]
    by_gender = table[table["emotion"] == "neutral"].groupby("gender")["f0"].mean()
    assert by_gender["f"] > 1.4 * by_gender["m"]
    assert 85 <= by_gender["m"] <= 160 and 160 <= by_gender["f"] <= 270
