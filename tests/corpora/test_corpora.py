"""Corpus recipes (EmoDB, EMOVO, RAVDESS) and audio reading on synthetic and real files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import itertools

from tests.helpers.audio import speech_tone
from tests.helpers.audio import write_wav as _write_wav
from seradv.audio import probe_audio, read_audio, validate_audio
from seradv.corpora import CORPORA, Manifest, SkipFile, get_corpus, guess_corpus, load_corpus
from seradv.corpora.emovo import parse_emovo
from seradv.corpora.ravdess import parse_ravdess
from seradv.errors import AudioError, CorpusError
from seradv.vocab import EMOTIONS, LANGUAGES, MANIFEST_COLUMNS

SECONDS = 0.3  # short files keep the whole module fast

_TONE = itertools.count()


def write_wav(path, seconds: float = 0.5, sr: int = 16000, channels: int = 1, subtype: str = "PCM_16",
              freq: float | None = None) -> Path:
    """``tests.helpers.audio.write_wav`` with another pitch for every file, so that no two files of a
    fake corpus are the same recording (recipes skip content duplicates)."""
    if freq is None:
        freq = 120.0 + 7.0 * (next(_TONE) % 150)
    return _write_wav(path, seconds, sr, channels, subtype, freq)


# --------------------------------------------------------------------------- helpers


def skipped_reason(manifest: Manifest, path: Path) -> str:
    """The skip reason recorded for ``path`` (fails the test if it was not skipped)."""
    rows = manifest.skipped[manifest.skipped["path"] == str(path)]
    records = manifest.skipped.to_dict("records")
    assert len(rows) == 1, f"{path} not skipped exactly once; skipped: {records}"
    return str(rows["reason"].iloc[0])


def write_truncated(path: Path, keep_bytes: int = 1000) -> Path:
    """A valid WAV header whose data chunk is cut after ``keep_bytes`` bytes."""
    tmp = path.with_name("full-" + path.name)
    write_wav(tmp, seconds=SECONDS)
    data = tmp.read_bytes()
    tmp.unlink()
    path.write_bytes(data[: 44 + keep_bytes])
    return path


def write_header_only(path: Path) -> Path:
    """A valid WAV file with 0 samples."""
    sf.write(str(path), np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    return path


def write_nan(path: Path) -> Path:
    """A 32-bit float WAV file with a NaN sample in the middle."""
    y = speech_tone(SECONDS, 16000)
    y[len(y) // 2] = np.nan
    sf.write(str(path), y, 16000, subtype="FLOAT")
    return path


def write_random(path: Path) -> Path:
    """Random bytes named like audio."""
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def write_text(path: Path) -> Path:
    """A text file named ``.wav``."""
    path.write_text("this is not audio\n" * 20)
    return path


def write_empty(path: Path) -> Path:
    """A 0-byte file."""
    path.write_bytes(b"")
    return path


# ------------------------------------------------------------------ trees like the releases

EMOVO_FILES = {
    "f1": ["dis-f1-b1", "gio-f1-b2", "neu-f1-l1"],
    "f2": ["pau-f2-n1", "rab-f2-d1"],
    "f3": ["sor-f3-b1", "tri-f3-l2"],
    "m1": ["dis-m1-b1", "gio-m1-n3"],
    "m2": ["neu-m2-d2", "pau-m2-l4"],
    "m3": ["rab-m3-n5", "SOR-M3-B3"],
}


@pytest.fixture
def emovo_tree(tmp_path: Path) -> Path:
    """EMOVO laid out like the release: EMOVO/<actor>/<file>.wav, 48 kHz stereo."""
    root = tmp_path / "emovo_download"
    for actor, stems in EMOVO_FILES.items():
        for i, stem in enumerate(stems):
            write_wav(root / "EMOVO" / actor / f"{stem}.wav", SECONDS + 0.05 * i, 48000, 2)
    return root


RAVDESS_GOOD = {
    "Actor_01": ["03-01-05-01-02-01-01", "03-01-03-02-01-02-01"],
    "Actor_02": ["03-01-04-01-01-01-02", "03-01-07-02-02-02-02"],
    "Actor_12": ["03-01-08-01-01-01-12", "03-01-01-01-02-02-12"],
    "Actor_23": ["03-01-06-02-01-01-23", "03-01-02-01-01-02-23"],
}


@pytest.fixture
def ravdess_tree(tmp_path: Path) -> Path:
    """RAVDESS like the release: Actor_NN folders nested variously, stereo files,
    a duplicated file in another folder, a song file and video-modality files."""
    root = tmp_path / "ravdess_download"
    for actor, stems in RAVDESS_GOOD.items():
        base = root / "Audio_Speech_Actors_01-24" if actor != "Actor_23" else root / "deeper" / "x"
        for i, stem in enumerate(stems):
            channels = 2 if i == 0 else 1
            write_wav(base / actor / f"{stem}.wav", SECONDS, 48000, channels)
    # the same file a second time in another folder
    dup_src = root / "Audio_Speech_Actors_01-24" / "Actor_01" / "03-01-05-01-02-01-01.wav"
    (root / "extra" / "Actor_01").mkdir(parents=True)
    shutil.copy(dup_src, root / "extra" / "Actor_01" / dup_src.name)
    write_wav(root / "Audio_Song_Actors_01-24" / "Actor_01" / "03-02-05-01-01-01-01.wav",
              SECONDS, 48000)
    write_wav(root / "Video" / "Actor_02" / "01-01-05-01-01-01-02.wav", SECONDS, 48000)
    write_wav(root / "Video" / "Actor_02" / "02-01-05-01-01-01-02.wav", SECONDS, 48000)
    return root


def emodb_folder(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A small EmoDB-named folder with two good files (one male, one female speaker)."""
    root = tmp_path / "emodb"
    good = [write_wav(root / "wav" / name, SECONDS) for name in ("03a01Fa.wav", "08b02Tb.wav")]
    return root, good


def assert_table_ok(m: Manifest) -> pd.DataFrame:
    """Common checks of a corpus table; returns it."""
    t = m.table
    assert tuple(t.columns) == MANIFEST_COLUMNS
    assert set(t["emotion"]) <= set(EMOTIONS)
    assert set(t["gender"]) <= {"m", "f"}
    assert set(t["language"]) <= set(LANGUAGES)
    assert not t["utterance"].duplicated().any()
    assert (t["duration_s"] > 0).all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in t["path"])
    assert list(m.skipped.columns) == ["path", "reason"]
    return t


# --------------------------------------------------------------------------- registry


def test_registry_has_the_three_corpora() -> None:
    assert {"emodb", "emovo", "ravdess"} <= set(CORPORA)
    assert get_corpus(" EMOVO ").language == "it"
    assert get_corpus("ravdess").language == "en"
    for name in ("emodb", "emovo", "ravdess"):
        recipe = get_corpus(name)
        assert len(recipe.study_emotions) == 5
        assert set(recipe.study_emotions) <= set(EMOTIONS)
        assert set(recipe.hyperparameters) == {"dropout", "lstm_dropout", "lr", "batch_size"}
        example = Path(recipe.example_name)
        assert recipe.parse(example)["utterance"] == example.stem


def test_study_settings_match_spec() -> None:
    emovo, ravdess = get_corpus("emovo"), get_corpus("ravdess")
    assert emovo.study_emotions == ("disgust", "fear", "happiness", "neutral", "surprise")
    assert emovo.hyperparameters == {
        "dropout": 0.3, "lstm_dropout": 0.0, "lr": 1e-4, "batch_size": 8
    }
    assert ravdess.study_emotions == ("disgust", "fear", "happiness", "sadness", "surprise")
    assert ravdess.hyperparameters == {
        "dropout": 0.6, "lstm_dropout": 0.2, "lr": 1e-3, "batch_size": 128
    }


def test_unknown_corpus_lists_known() -> None:
    with pytest.raises(CorpusError, match="known corpora: .*emovo.*ravdess"):
        get_corpus("iemocap")


# --------------------------------------------------------------------------- name parsers


@pytest.mark.parametrize(
    "name, speaker, gender, emotion",
    [
        ("dis-f1-b1.wav", "emovo-f1", "f", "disgust"),
        ("gio-f2-l3.wav", "emovo-f2", "f", "happiness"),
        ("neu-f3-n5.wav", "emovo-f3", "f", "neutral"),
        ("pau-m1-d1.wav", "emovo-m1", "m", "fear"),
        ("rab-m2-b2.wav", "emovo-m2", "m", "anger"),
        ("sor-m3-l4.wav", "emovo-m3", "m", "surprise"),
        ("tri-m1-n1.wav", "emovo-m1", "m", "sadness"),
        ("TRI-M1-N2.WAV", "emovo-m1", "m", "sadness"),
    ],
)
def test_parse_emovo(name: str, speaker: str, gender: str, emotion: str) -> None:
    out = parse_emovo(Path("EMOVO") / name)
    assert out == {"speaker": speaker, "gender": gender, "emotion": emotion,
                   "utterance": Path(name).stem}


@pytest.mark.parametrize(
    "name, match",
    [
        ("xyz-f1-b1.wav", r"unknown EMOVO emotion code 'xyz' in 'xyz-f1-b1.wav'"),
        ("dis-f4-b1.wav", r"unknown EMOVO actor 'f4' in 'dis-f4-b1.wav'"),
        ("dis-x1-b1.wav", r"unknown EMOVO actor 'x1' in 'dis-x1-b1.wav'"),
        ("03a01Fa.wav", r"'03a01Fa.wav' does not follow the EMOVO scheme"),
        ("dis_f1_b1.wav", r"'dis_f1_b1.wav' does not follow the EMOVO scheme"),
    ],
)
def test_parse_emovo_rejects(name: str, match: str) -> None:
    with pytest.raises(SkipFile, match=match):
        parse_emovo(Path(name))


@pytest.mark.parametrize(
    "name, speaker, gender, emotion",
    [
        ("03-01-01-01-01-01-01.wav", "ravdess-01", "m", "neutral"),
        ("03-01-02-02-02-02-02.wav", "ravdess-02", "f", "calm"),
        ("03-01-03-01-01-01-03.wav", "ravdess-03", "m", "happiness"),
        ("03-01-04-01-01-01-10.wav", "ravdess-10", "f", "sadness"),
        ("03-01-05-01-02-01-12.wav", "ravdess-12", "f", "anger"),
        ("03-01-06-01-01-01-15.wav", "ravdess-15", "m", "fear"),
        ("03-01-07-01-01-01-23.wav", "ravdess-23", "m", "disgust"),
        ("03-01-08-01-01-01-24.wav", "ravdess-24", "f", "surprise"),
    ],
)
def test_parse_ravdess(name: str, speaker: str, gender: str, emotion: str) -> None:
    out = parse_ravdess(Path("Actor_xx") / name)
    assert out == {"speaker": speaker, "gender": gender, "emotion": emotion,
                   "utterance": Path(name).stem}


@pytest.mark.parametrize(
    "name, match",
    [
        ("01-01-05-01-01-01-01.wav",
         r"modality '01' \(full audio-video\) in '01-01-05-01-01-01-01.wav'"),
        ("02-01-05-01-01-01-01.wav", r"modality '02' \(video-only\)"),
        ("03-02-05-01-01-01-01.wav", r"vocal channel '02' \(song\) in '03-02-05-01-01-01-01.wav'"),
        ("03-01-09-01-01-01-01.wav", r"unknown RAVDESS emotion code '09' in"),
        ("03-01-00-01-01-01-01.wav", r"unknown RAVDESS emotion code '00'"),
        ("03-01-05-03-01-01-01.wav",
         r"invalid RAVDESS intensity '03' in '03-01-05-03-01-01-01.wav'"),
        ("03-01-05-01-00-01-01.wav", r"invalid RAVDESS statement '00'"),
        ("03-01-05-01-01-03-01.wav", r"invalid RAVDESS repetition '03'"),
        ("03-01-05-01-01-01-25.wav", r"unknown RAVDESS actor '25' in '03-01-05-01-01-01-25.wav'"),
        ("03-01-05-01-01-01-00.wav", r"unknown RAVDESS actor '00'"),
        ("03-01-05-01-01-01.wav", r"does not follow the RAVDESS scheme"),
        ("dis-f1-b1.wav", r"'dis-f1-b1.wav' does not follow the RAVDESS scheme"),
    ],
)
def test_parse_ravdess_rejects(name: str, match: str) -> None:
    with pytest.raises(SkipFile, match=match):
        parse_ravdess(Path(name))


# --------------------------------------------------------------------------- synthetic releases


def test_emovo_tree(emovo_tree: Path) -> None:
    m = load_corpus("emovo", emovo_tree)
    t = assert_table_ok(m)
    assert len(t) == sum(len(v) for v in EMOVO_FILES.values())
    assert m.skipped.empty
    assert set(t["corpus"]) == {"emovo"}
    assert set(t["language"]) == {"it"}
    assert set(t["sample_rate"]) == {48000}
    actors = ("f1", "f2", "f3", "m1", "m2", "m3")
    assert sorted(t["speaker"].unique()) == [f"emovo-{a}" for a in actors]
    genders = t.groupby("speaker")["gender"].first().to_dict()
    assert genders == {"emovo-f1": "f", "emovo-f2": "f", "emovo-f3": "f",
                       "emovo-m1": "m", "emovo-m2": "m", "emovo-m3": "m"}
    assert set(t["emotion"]) == {
        "disgust", "happiness", "neutral", "fear", "anger", "surprise", "sadness"
    }
    row = t.set_index("utterance").loc["SOR-M3-B3"]
    assert (row["speaker"], row["gender"], row["emotion"]) == ("emovo-m3", "m", "surprise")
    row = t.set_index("utterance").loc["dis-f1-b1"]
    assert row["duration_s"] == pytest.approx(SECONDS, abs=1e-3)
    assert f"{len(t)} utterances, 6 speakers (3 m / 3 f)" in m.summary()


def test_emovo_skips_unknown_codes(emovo_tree: Path) -> None:
    bad_emo = write_wav(emovo_tree / "EMOVO" / "f1" / "abc-f1-b1.wav", SECONDS, 48000, 2)
    bad_actor = write_wav(emovo_tree / "EMOVO" / "f1" / "dis-f9-b1.wav", SECONDS, 48000, 2)
    m = load_corpus("emovo", emovo_tree)
    assert len(m.table) == sum(len(v) for v in EMOVO_FILES.values())
    assert "unknown EMOVO emotion code 'abc' in 'abc-f1-b1.wav'" in skipped_reason(m, bad_emo)
    assert "unknown EMOVO actor 'f9' in 'dis-f9-b1.wav'" in skipped_reason(m, bad_actor)


def test_ravdess_tree(ravdess_tree: Path) -> None:
    m = load_corpus("ravdess", ravdess_tree)
    t = assert_table_ok(m)
    assert len(t) == 8
    assert set(t["corpus"]) == {"ravdess"}
    assert set(t["language"]) == {"en"}
    assert set(t["sample_rate"]) == {48000}
    assert sorted(t["speaker"].unique()) == ["ravdess-01", "ravdess-02", "ravdess-12", "ravdess-23"]
    genders = t.groupby("speaker")["gender"].first().to_dict()
    assert genders == {"ravdess-01": "m", "ravdess-02": "f", "ravdess-12": "f", "ravdess-23": "m"}
    assert set(t["emotion"]) == {"neutral", "calm", "happiness", "sadness", "anger", "fear",
                                 "disgust", "surprise"}
    row = t.set_index("utterance").loc["03-01-05-01-02-01-01"]
    assert "Audio_Speech_Actors_01-24" in row["path"]  # the first copy (sorted path) is kept
    assert (row["emotion"], row["speaker"]) == ("anger", "ravdess-01")
    reasons = dict(zip(m.skipped["path"], m.skipped["reason"]))
    assert len(reasons) == 4
    dup = ravdess_tree / "extra" / "Actor_01" / "03-01-05-01-02-01-01.wav"
    assert "duplicate of utterance 03-01-05-01-02-01-01" in reasons[str(dup)]
    song = ravdess_tree / "Audio_Song_Actors_01-24" / "Actor_01" / "03-02-05-01-01-01-01.wav"
    assert "vocal channel '02' (song)" in reasons[str(song)]
    video = ravdess_tree / "Video" / "Actor_02"
    assert "modality '01'" in reasons[str(video / "01-01-05-01-01-01-02.wav")]
    assert "modality '02'" in reasons[str(video / "02-01-05-01-01-01-02.wav")]


def test_ravdess_skips_bad_fields(ravdess_tree: Path) -> None:
    actor = ravdess_tree / "Audio_Speech_Actors_01-24" / "Actor_01"
    bad = {
        write_wav(actor / "03-01-05-03-01-01-01.wav", SECONDS): "invalid RAVDESS intensity '03'",
        write_wav(actor / "03-01-05-01-01-01-25.wav", SECONDS): "unknown RAVDESS actor '25'",
        write_wav(actor / "03-01-11-01-01-01-01.wav", SECONDS): "unknown RAVDESS emotion code '11'",
    }
    m = load_corpus("ravdess", ravdess_tree)
    assert len(m.table) == 8
    for path, reason in bad.items():
        assert reason in skipped_reason(m, path)
        assert path.name in skipped_reason(m, path)


# --------------------------------------------------------------------------- real EmoDB


@pytest.mark.emodb
def test_real_emodb(emodb_dir: Path) -> None:
    m = load_corpus("emodb", emodb_dir)
    t = assert_table_ok(m)
    assert m.skipped.empty, m.skipped.to_dict("records")
    assert len(t) == 535
    assert t["speaker"].nunique() == 10
    spk = t.groupby("gender")["speaker"].nunique().to_dict()
    assert spk == {"m": 5, "f": 5}
    assert t["emotion"].value_counts().to_dict() == {
        "anger": 127, "boredom": 81, "neutral": 79, "happiness": 71,
        "fear": 69, "sadness": 62, "disgust": 46,
    }
    assert set(t["language"]) == {"de"}
    assert set(t["sample_rate"]) == {16000}


# --------------------------------------------------------------------------- bad folders


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CorpusError, match=r"emodb: data folder .*nope does not exist"):
        load_corpus("emodb", missing)


def test_file_instead_of_folder(tmp_path: Path) -> None:
    f = write_wav(tmp_path / "03a01Fa.wav", SECONDS)
    with pytest.raises(CorpusError, match="is not a folder"):
        load_corpus("emodb", f)


@pytest.mark.parametrize("corpus", ["emodb", "emovo", "ravdess"])
def test_empty_folder(tmp_path: Path, corpus: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(CorpusError, match=rf"{corpus}: no audio files \(\.wav, \.flac, \.\.\.\) found under"):
        load_corpus(corpus, tmp_path)


@pytest.mark.parametrize(
    "given, files, guess",
    [
        ("emodb",
         ["Actor_01/03-01-05-01-02-01-01.wav", "Actor_02/03-01-03-01-01-01-02.wav"],
         "ravdess"),
        ("emovo", ["Actor_01/03-01-05-01-02-01-01.wav"], "ravdess"),
        ("ravdess", ["f1/dis-f1-b1.wav", "m1/neu-m1-b2.wav"], "emovo"),
        ("emodb", ["f1/dis-f1-b1.wav"], "emovo"),
        ("emovo", ["wav/03a01Fa.wav", "wav/08b02Tb.wav"], "emodb"),
        ("ravdess", ["wav/03a01Fa.wav"], "emodb"),
    ],
)
def test_folder_of_another_corpus(tmp_path: Path, given: str, files: list[str], guess: str) -> None:
    for rel in files:
        write_wav(tmp_path / rel, SECONDS)
    pattern = rf"{given}: none of the {len(files)} audio files"
    with pytest.raises(CorpusError, match=pattern) as info:
        load_corpus(given, tmp_path)
    assert f"`seradv manifest {guess}`" in str(info.value)


def test_unrelated_names_give_no_guess(tmp_path: Path) -> None:
    write_wav(tmp_path / "recording.wav", SECONDS)
    with pytest.raises(CorpusError, match="follows the emodb naming scheme") as info:
        load_corpus("emodb", tmp_path)
    assert "look like" not in str(info.value)
    assert guess_corpus([tmp_path / "recording.wav"]) is None


def test_all_files_unreadable(tmp_path: Path) -> None:
    write_random(tmp_path / "03a01Fa.wav")
    write_empty(tmp_path / "08b02Tb.wav")
    pattern = r"emodb: none of the 2 audio files .* could be read"
    with pytest.raises(CorpusError, match=pattern) as info:
        load_corpus("emodb", tmp_path)
    assert "03a01Fa.wav" in str(info.value) and "08b02Tb.wav" in str(info.value)


# --------------------------------------------------------------------------- bad and odd files


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "corrupt": (write_random, r"not a readable audio file \(.*Format not recognised"),
    "empty-bytes": (write_empty, r"file is empty \(0 bytes\)"),
    "zero-samples": (write_header_only, r"audio is empty \(0 samples\)"),
    "truncated": (
        write_truncated, r"file is truncated \(header declares 4800 samples, only 500 present\)"
    ),
    "header-only-truncated": (
        lambda p: write_truncated(p, 0),
        r"file is truncated \(header declares 4800 samples, only 0 present\)",
    ),
    "text": (write_text, r"not a readable audio file"),
    "nan": (write_nan, r"audio contains 1 non-finite samples \(NaN or inf\)"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_is_skipped_with_reason(tmp_path: Path, kind: str) -> None:
    root, good = emodb_folder(tmp_path)
    writer, reason = BAD_FILES[kind]
    bad = writer(root / "wav" / "09a05Wa.wav")
    m = load_corpus("emodb", root)
    assert sorted(m.table["utterance"]) == sorted(p.stem for p in good)
    assert list(m.skipped["path"]) == [str(bad)]

    assert re.search(reason, skipped_reason(m, bad)), skipped_reason(m, bad)
    # read_audio itself names the file
    with pytest.raises(AudioError, match=re.escape(str(bad))):
        read_audio(bad)


@pytest.mark.parametrize(
    "sr, channels, subtype",
    [(16000, 2, "PCM_16"), (16000, 1, "PCM_U8"), (44100, 1, "PCM_16"), (48000, 1, "PCM_24"),
     (48000, 2, "FLOAT"), (22050, 1, "PCM_32")],
)
def test_odd_but_valid_files_are_accepted(
    tmp_path: Path, sr: int, channels: int, subtype: str
) -> None:
    root, good = emodb_folder(tmp_path)
    odd = write_wav(root / "wav" / "09a05Wa.wav", SECONDS, sr, channels, subtype)
    m = load_corpus("emodb", root)
    assert m.skipped.empty
    row = m.table.set_index("utterance").loc["09a05Wa"]
    assert row["sample_rate"] == sr
    assert row["duration_s"] == pytest.approx(SECONDS, abs=1.0 / sr)
    assert (row["speaker"], row["gender"], row["emotion"]) == ("emodb-09", "f", "anger")
    assert len(m.table) == 3 and Path(row["path"]) == odd.resolve()


def test_unknown_emodb_codes_are_skipped(tmp_path: Path) -> None:
    root, good = emodb_folder(tmp_path)
    bad_emo = write_wav(root / "wav" / "03a01Xa.wav", SECONDS)
    bad_spk = write_wav(root / "wav" / "04a01Fa.wav", SECONDS)
    other = write_wav(root / "wav" / "notes.wav", SECONDS)
    m = load_corpus("emodb", root)
    assert len(m.table) == 2
    assert "unknown EmoDB emotion code 'X' in '03a01Xa.wav'" in skipped_reason(m, bad_emo)
    assert "unknown EmoDB speaker '04' in '04a01Fa.wav'" in skipped_reason(m, bad_spk)
    assert "'notes.wav' does not follow the EmoDB scheme" in skipped_reason(m, other)


def test_non_wav_files_are_ignored(tmp_path: Path) -> None:
    root, good = emodb_folder(tmp_path)
    (root / "wav" / "03a01Fa.txt").write_text("label file")
    (root / "wav" / "03a01Fa.WAV.bak").write_text("backup")
    m = load_corpus("emodb", root)
    assert len(m.table) == 2 and m.skipped.empty


# ------------------------------------------------------------------ read_audio / validate_audio


def test_read_audio_downmixes_stereo(tmp_path: Path) -> None:
    left = speech_tone(SECONDS, 16000)
    right = 0.5 * speech_tone(SECONDS, 16000, freq=300)
    sf.write(str(tmp_path / "s.wav"), np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    y, sr = read_audio(tmp_path / "s.wav")
    assert sr == 16000 and y.ndim == 1 and y.dtype == np.float32
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("fmt,channels", [("wav", 2), ("flac", 2), ("wav", 4), ("flac", 1)])
def test_read_audio_in_blocks_equals_the_whole_file_read(tmp_path: Path, monkeypatch, fmt: str,
                                                         channels: int) -> None:
    """Decoded in blocks (a small block size here: many blocks, a short last one), the mono
    signal is the whole-file read's channel mean, bit for bit."""
    import seradv.audio as audio_mod

    sig = np.stack([speech_tone(SECONDS, 48000, freq=150 + 60 * c) * (0.9 - 0.2 * c) for c in range(channels)], axis=1)
    path = tmp_path / f"s.{fmt}"
    sf.write(str(path), sig, 48000, subtype="PCM_24" if fmt == "flac" else "PCM_16")
    whole, _ = sf.read(str(path), dtype="float32", always_2d=True)
    expected = whole.mean(axis=1) if channels > 1 else whole[:, 0]
    monkeypatch.setattr(audio_mod, "READ_BLOCK_FRAMES", 4099)
    y, sr = read_audio(path)
    assert sr == 48000 and y.dtype == np.float32 and y.flags.c_contiguous
    assert np.array_equal(y, expected)


def test_read_audio_8bit_is_float_in_range(tmp_path: Path) -> None:
    x = np.linspace(-1.0, 1.0, 4000, dtype=np.float32)
    sf.write(str(tmp_path / "u8.wav"), x, 8000, subtype="PCM_U8")
    assert sf.info(str(tmp_path / "u8.wav")).subtype == "PCM_U8"
    y, sr = read_audio(tmp_path / "u8.wav")
    assert sr == 8000 and y.dtype == np.float32 and y.shape == (4000,)
    assert -1.0 <= y.min() < -0.99 and 0.99 < y.max() <= 1.0
    np.testing.assert_allclose(y, x, atol=1.5 / 128)


def test_read_audio_24bit_and_probe(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "a.wav", 0.5, 44100, 1, "PCM_24")
    y, sr = read_audio(p)
    assert sr == 44100 and y.shape == (22050,)
    assert np.abs(y).max() == pytest.approx(0.5, abs=1e-3)
    assert probe_audio(p) == (pytest.approx(0.5), 44100)


def test_read_audio_rejects_nan_naming_file(tmp_path: Path) -> None:
    p = write_nan(tmp_path / "nan.wav")
    with pytest.raises(AudioError, match=r"nan\.wav: audio contains 1 non-finite samples"):
        read_audio(p)


def test_read_audio_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"missing\.wav: file does not exist"):
        read_audio(tmp_path / "missing.wav")


def test_libsndfile_clamps_truncated_files(tmp_path: Path) -> None:
    """libsndfile does not fail on a cut data chunk: it reports only the frames present.

    read_audio must therefore check the header itself (this documents why it does).
    """
    p = write_truncated(tmp_path / "t.wav", keep_bytes=1001)  # also cut mid-sample
    assert sf.info(str(p)).frames == 500
    assert sf.read(str(p))[0].shape == (500,)
    pattern = r"t\.wav: file is truncated \(header declares 4800 samples, only 500 present"
    with pytest.raises(AudioError, match=pattern):
        read_audio(p)


def test_complete_file_with_trailing_chunk_is_not_truncated(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "ok.wav", SECONDS)
    data = bytearray(p.read_bytes())
    data += b"LIST" + (4).to_bytes(4, "little") + b"INFO"  # a chunk after the data
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    p.write_bytes(bytes(data))
    y, sr = read_audio(p)
    assert y.shape == (int(SECONDS * 16000),)


def test_validate_audio() -> None:
    y = np.ones(10, dtype=np.float64)
    out = validate_audio(y)
    assert out.dtype == np.float32 and out.shape == (10,)
    with pytest.raises(AudioError, match="x.wav: audio must be mono"):
        validate_audio(np.ones((10, 2)), where="x.wav")
    with pytest.raises(AudioError, match=r"x.wav: audio is empty \(0 samples\)"):
        validate_audio(np.ones(0), where="x.wav")
    with pytest.raises(AudioError, match="floating point, got dtype int16"):
        validate_audio(np.ones(10, dtype=np.int16))
    with pytest.raises(AudioError, match="must be a numpy array"):
        validate_audio([0.0, 1.0])  # type: ignore[arg-type]
    bad = np.ones(10, dtype=np.float32)
    bad[[2, 5]] = [np.nan, np.inf]
    with pytest.raises(AudioError, match=r"x.wav: audio contains 2 non-finite samples"):
        validate_audio(bad, where="x.wav")


def test_synthetic_tone_survives_trimming() -> None:
    """The helper tone is speech-like: loud body, quiet edges (so top_db=30 trimming keeps it)."""
    librosa = pytest.importorskip("librosa")
    y = speech_tone(1.0, 16000)
    kept, (start, end) = librosa.effects.trim(y, top_db=30, frame_length=512, hop_length=64)
    assert 0.8 * len(y) < len(kept) <= len(y)
    assert start > 0 and end < len(y)
    assert np.abs(y[: int(0.04 * 16000)]).max() == 0.0
