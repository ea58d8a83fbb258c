"""Common machinery of corpus recipes: a recipe turns a folder into a validated table.

A recipe (lhotse-style ``prepare_<corpus>``) finds every audio file (``.wav``, ``.flac`` and
the other formats libsndfile reads, :data:`AUDIO_SUFFIXES`) under the folder it is given
(recursively, since downloads nest files differently), parses each file name by the corpus's
naming scheme, reads and validates the audio, and returns a :class:`Manifest`: a table with the
columns of :data:`seradv.vocab.MANIFEST_COLUMNS` plus the files it skipped, each with the
reason. A bad file is skipped and reported, never fatal. A file whose decoded audio (samples and
sample rate) equals an earlier file's is a duplicate recording: the first is kept, the other
skipped with the reason ``duplicate of <utterance> (<path>)``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from seradv.audio import read_audio
from seradv.fileio import check_path_component
from seradv.errors import AudioError, CorpusError
from seradv.vocab import EMOTIONS, GENDERS, LANGUAGES, MANIFEST_COLUMNS

log = logging.getLogger(__name__)

__all__ = ["SkipFile", "Manifest", "Recipe", "validate_manifest", "find_audio_files", "AUDIO_SUFFIXES",
           "audio_sha256"]

AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc",
                            ".au", ".snd", ".caf", ".w64", ".rf64", ".mp3"})
"""File name endings a recipe reads (formats libsndfile decodes), case-insensitive."""


def audio_sha256(y, sr: int) -> str:
    """Hex sha256 of decoded audio: the sample rate and the float32 samples."""
    h = hashlib.sha256(int(sr).to_bytes(8, "little"))
    h.update(np.ascontiguousarray(y, dtype=np.float32).tobytes())
    return h.hexdigest()


class SkipFile(Exception):
    """Raised by a name parser when a file does not fit the corpus's scheme."""


@dataclass
class Manifest:
    """A corpus table and the files that were skipped while building it."""

    table: pd.DataFrame
    skipped: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["path", "reason"])
    )

    def summary(self) -> str:
        """A one-paragraph human summary (counts of utterances, speakers, emotions)."""
        t = self.table
        if t.empty:
            return "0 utterances"
        spk = t.groupby("gender")["speaker"].nunique().to_dict()
        emo = ", ".join(f"{k} {v}" for k, v in t["emotion"].value_counts().sort_index().items())
        return (
            f"{len(t)} utterances, {t['speaker'].nunique()} speakers "
            f"({spk.get('m', 0)} m / {spk.get('f', 0)} f), {t['duration_s'].sum() / 60:.1f} min; "
            f"emotions: {emo}; skipped files: {len(self.skipped)}"
        )


ParseResult = dict  # keys: speaker, gender, emotion, utterance


class NoMatchingFiles(CorpusError):
    """No audio file under a corpus folder follows the recipe's naming scheme."""

    def __init__(self, recipe: "Recipe", data_dir: Path, files: list[Path]) -> None:
        self.recipe, self.data_dir, self.files = recipe, data_dir, files
        super().__init__(recipe.no_match_message(data_dir, files))


@dataclass(frozen=True)
class Recipe:
    """How one corpus is read.

    Attributes
    ----------
    name : str
        Registry name (``emodb``).
    language : str
        ISO 639-1 code of the corpus language.
    parse : Callable[[Path], dict]
        File path -> ``{speaker, gender, emotion, utterance}``; raises :class:`SkipFile`
        with the reason when the name does not fit the scheme.
    study_emotions : tuple[str, ...]
        The five classes the reference study keeps for this corpus.
    hyperparameters : dict
        The study's per-corpus training hyperparameters (dropout, lstm_dropout, lr, batch_size).
    example_name : str
        An example file name of the scheme, for error messages.
    description : str
        One line about the corpus.
    ensure : Callable[[Path], None] | None
        Called before scanning (the synthetic corpus generates its files here).
    cv_folds : int | None
        Default number of folds of the ``speaker_cv`` split (``None``: ``min(5, speakers per
        gender)``, :func:`seradv.splits.default_folds`).
    """

    name: str
    language: str
    parse: Callable[[Path], ParseResult]
    study_emotions: tuple[str, ...]
    hyperparameters: dict
    example_name: str
    description: str = ""
    ensure: Callable[[Path], None] | None = None
    default_data_dir: Callable[[], Path] | None = None
    cv_folds: int | None = None

    def prepare_manifest(
        self, data_dir: str | Path, *, progress: Callable[[Iterable], Iterator] | None = None
    ) -> Manifest:
        """Scan ``data_dir`` and return the validated corpus table with skipped files."""
        data_dir = Path(data_dir).expanduser()
        if self.ensure is not None:
            self.ensure(data_dir)
        files = find_audio_files(data_dir, corpus=self.name)
        rows: list[dict] = []
        skipped: list[dict] = []
        seen: dict[str, Path] = {}
        seen_audio: dict[str, tuple[str, Path]] = {}  # decoded-audio hash -> (utterance, path)
        parsed_any = 0
        iterator = progress(files) if progress is not None else files
        for path in iterator:
            try:
                fields = self.parse(path)
            except SkipFile as exc:
                skipped.append({"path": str(path), "reason": str(exc)})
                continue
            parsed_any += 1
            utt = fields["utterance"]
            if utt in seen:
                skipped.append(
                    {"path": str(path), "reason": f"duplicate of utterance {utt} ({seen[utt]})"}
                )
                continue
            try:
                y, sr = read_audio(path)
            except AudioError as exc:
                skipped.append({"path": str(path), "reason": str(exc).split(": ", 1)[-1]})
                continue
            duration = y.size / float(sr)
            digest = audio_sha256(y, sr)
            del y
            if digest in seen_audio:
                first_utt, first_path = seen_audio[digest]
                skipped.append({"path": str(path), "reason": f"duplicate of {first_utt} ({first_path}): "
                                                             f"identical audio samples"})
                continue
            seen[utt] = path
            seen_audio[digest] = (utt, path)
            rows.append(
                {
                    "path": str(path.resolve()),
                    "corpus": self.name,
                    "language": self.language,
                    **fields,
                    "duration_s": round(duration, 6),
                    "sample_rate": sr,
                }
            )
        if parsed_any == 0:
            raise NoMatchingFiles(self, data_dir, files)
        skipped_df = pd.DataFrame(skipped, columns=["path", "reason"])
        for rec in skipped:
            log.warning("skipped %s: %s", rec["path"], rec["reason"])
        if not rows:
            raise CorpusError(
                f"{self.name}: none of the {len(files)} audio files under {data_dir} could be "
                f"read; see the skipped files and their reasons"
                + _first_reasons(skipped_df)
            )
        table = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
        table = table.sort_values(["speaker", "utterance"], kind="stable").reset_index(drop=True)
        validate_manifest(table)
        return Manifest(table=table, skipped=skipped_df)

    def no_match_message(self, data_dir: Path, files: list[Path], *, guess: str | None = None) -> str:
        """The error for a folder where no file follows this recipe's naming scheme; ``guess``:
        the registered corpus the files look like (the registry fills it in, see
        :func:`seradv.corpora.load_corpus`)."""
        hint = f" They look like the {guess!r} corpus: try `seradv manifest {guess}`." if guess else ""
        return (
            f"{self.name}: none of the {len(files)} audio files under {data_dir} follows the "
            f"{self.name} naming scheme (e.g. {self.example_name!r}).{hint} "
            f"Check that --data-dir points at the {self.name} folder."
        )


def _first_reasons(skipped: pd.DataFrame, n: int = 3) -> str:
    if skipped.empty:
        return ""
    lines = [f"\n  {r.path}: {r.reason}" for r in skipped.head(n).itertuples()]
    return "".join(lines)


def find_audio_files(data_dir: Path, *, corpus: str) -> list[Path]:
    """All audio files (:data:`AUDIO_SUFFIXES`) under ``data_dir`` (recursive, sorted); clear errors if none."""
    if not data_dir.exists():
        raise CorpusError(
            f"{corpus}: data folder {data_dir} does not exist; pass --data-dir with the "
            f"folder that holds the {corpus} audio files"
        )
    if not data_dir.is_dir():
        raise CorpusError(f"{corpus}: {data_dir} is not a folder; pass the corpus folder")
    files = sorted(
        p for p in data_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
    )
    if not files:
        raise CorpusError(
            f"{corpus}: no audio files (.wav, .flac, ...) found under {data_dir} (searched "
            f"recursively); is the corpus downloaded and unpacked there?"
        )
    return files


def validate_manifest(table: pd.DataFrame) -> pd.DataFrame:
    """Check a corpus table's schema and vocabulary; return it unchanged.

    Raises :class:`CorpusError` naming the first offending column and values.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise CorpusError(f"corpus table lacks columns {missing}; expected {list(MANIFEST_COLUMNS)}")
    bad = sorted(set(table["emotion"]) - set(EMOTIONS))
    if bad:
        raise CorpusError(f"corpus table has unknown emotions {bad}; allowed: {list(EMOTIONS)}")
    bad = sorted(set(table["gender"]) - set(GENDERS))
    if bad:
        raise CorpusError(f"corpus table has unknown genders {bad}; allowed: {list(GENDERS)}")
    bad = sorted(set(table["language"]) - set(LANGUAGES))
    if bad:
        raise CorpusError(f"corpus table has unknown languages {bad}; allowed: {list(LANGUAGES)}")
    for column, what in (("utterance", "utterance id"), ("corpus", "corpus name")):
        for value in pd.unique(table[column]):
            check_path_component(value, what, error=CorpusError)
    if table["utterance"].duplicated().any():
        dup = table.loc[table["utterance"].duplicated(), "utterance"].iloc[0]
        raise CorpusError(f"corpus table has duplicated utterance id {dup!r}")
    return table
