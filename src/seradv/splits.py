"""Train / validation / test splits.

* :func:`speaker_split` (default): whole speakers held out for test and for validation,
  both genders in each, chosen with a seeded generator (or named in the config).
* :func:`paper_split`: the study's stratified random 80/20 split over (augmented) segments,
  seed 1938, validation = the last 20 % of the training order (Keras ``validation_split``).
  Copies of one utterance and every speaker land on both sides: leaky, for comparison only.
* :func:`speaker_folds` and :func:`fold_split` (``speaker_cv``): speaker-fold cross-validation.
  Every speaker is tested in exactly one fold; each fold's test speakers cover both genders;
  validation is taken from the training speakers' own utterances (whole utterances, so that
  no segment or augmented copy of a validation utterance is in training).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from seradv.config import SplitConfig
from seradv.errors import SplitError

__all__ = ["speaker_split", "paper_split", "describe_split", "speaker_folds", "fold_split", "default_folds"]


def speaker_split(table: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
    """Assign each utterance of ``table`` to ``train``, ``val`` or ``test`` by speaker.

    Returns a Series aligned with ``table`` holding the subset name.
    """
    spk = table.groupby("speaker")["gender"].first()
    if cfg.test_speakers is not None or cfg.val_speakers is not None:
        test, val = _named_speakers(spk, cfg)
    else:
        rng = np.random.default_rng(cfg.seed)
        test, val = [], []
        # stratify by language x gender when the corpus has several languages (synthetic)
        lang = table.groupby("speaker")["language"].first() if "language" in table else None
        multi = lang is not None and lang.nunique() > 1
        strata = sorted(set(zip(lang[spk.index] if multi else [""] * len(spk), spk)),
                        key=lambda lg: (lg[0], lg[1] != "m"))  # male first, as before
        for language, gender in strata:
            in_lang = (lang[spk.index] == language).to_numpy() if multi else np.ones(len(spk), bool)
            pool = sorted(spk[(spk == gender).to_numpy() & in_lang].index)
            where = f" in language {language!r}" if multi else ""
            if len(pool) < 3:
                raise SplitError(
                    f"speaker split needs at least 3 {('male', 'female')[gender == 'f']} speakers{where} "
                    f"(one each for train, validation and test), the corpus has {len(pool)} "
                    f"({', '.join(pool) or 'none'}); name split.test_speakers/val_speakers "
                    f"yourself or use --split paper"
                )
            n_test = max(1, int(round(cfg.test_size * len(pool))))
            n_val = max(1, int(round(cfg.val_size * len(pool))))
            if n_test + n_val >= len(pool):
                n_test, n_val = 1, 1
            order = list(rng.permutation(pool))
            test += order[:n_test]
            val += order[n_test : n_test + n_val]
    subset = pd.Series("train", index=table.index, name="subset")
    subset[table["speaker"].isin(test)] = "test"
    subset[table["speaker"].isin(val)] = "val"
    _check_classes(table, subset)
    return subset


def _named_speakers(spk: pd.Series, cfg: SplitConfig) -> tuple[list[str], list[str]]:
    test = list(cfg.test_speakers or ())
    val = list(cfg.val_speakers or ())
    unknown = sorted(set(test + val) - set(spk.index))
    if unknown:
        raise SplitError(f"split names unknown speakers {unknown}; the corpus has {sorted(spk.index)}")
    if not test or not val:
        raise SplitError("name both split.test_speakers and split.val_speakers (or neither)")
    if set(test) & set(val):
        raise SplitError(f"speakers {sorted(set(test) & set(val))} are in both test and validation")
    if len(set(spk.index) - set(test) - set(val)) == 0:
        raise SplitError("no speaker is left for training")
    return test, val


def _check_classes(table: pd.DataFrame, subset: pd.Series) -> None:
    classes = set(table["emotion"])
    for name in ("train", "val", "test"):
        part = table.loc[subset == name]
        if part.empty:
            raise SplitError(f"the {name} subset is empty")
        missing = sorted(classes - set(part["emotion"]))
        if missing and name == "train":
            raise SplitError(f"emotions {missing} have no training utterance after the split")
        genders = set(part["gender"])
        if name == "test" and genders != {"m", "f"}:
            raise SplitError(f"the test speakers cover only gender(s) {sorted(genders)}; need both")


def paper_split(segments: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
    """The study's split over segments: stratified by emotion, seeded, 80/20, then 20 % val.

    Returns a Series aligned with ``segments`` holding ``train``, ``val`` or ``test``.
    """
    counts = segments["emotion"].value_counts()
    if (counts < 2).any() or len(counts) < 2:
        raise SplitError(
            f"the paper split needs at least 2 classes with at least 2 segments each; "
            f"got {counts.to_dict()}"
        )
    idx = np.arange(len(segments))
    try:
        train_idx, test_idx = train_test_split(
            idx, test_size=cfg.test_size, stratify=segments["emotion"].to_numpy(), random_state=cfg.seed
        )
    except ValueError as exc:
        raise SplitError(f"cannot make the stratified paper split: {exc}") from None
    n_val = int(np.ceil(cfg.val_size * len(train_idx)))
    # Keras validation_split: the last fraction of the (already shuffled) training arrays.
    val_idx = train_idx[len(train_idx) - n_val :]
    train_idx = train_idx[: len(train_idx) - n_val]
    subset = np.empty(len(segments), dtype=object)
    subset[train_idx] = "train"
    subset[val_idx] = "val"
    subset[test_idx] = "test"
    out = pd.Series(subset, index=segments.index, name="subset")
    # Keep the study's order of the training arrays (used for the paper's validation tail).
    return out


def default_folds(table: pd.DataFrame, recipe_folds: int | None) -> int:
    """The number of folds when ``split.folds`` is not given: the corpus recipe's ``cv_folds``,
    else ``min(5, speakers of the smaller gender)``."""
    if recipe_folds is not None:
        return int(recipe_folds)
    per_gender = table.groupby("gender")["speaker"].nunique()
    return int(min(5, per_gender.min())) if len(per_gender) else 0


def speaker_folds(table: pd.DataFrame, folds: int, seed: int) -> pd.Series:
    """Fold (1..``folds``) of every speaker of ``table``: a Series indexed by speaker, named ``fold``.

    Speakers are dealt round-robin to the folds, gender by gender (male first), each gender's
    speakers (by language, then name, when a corpus has several languages) in an order
    shuffled by ``seed``; the deal continues across genders, so fold sizes differ by at most
    one speaker and every fold gets at least one speaker of each gender. Deterministic in
    ``seed``. A :class:`SplitError` if ``folds`` < 2 or exceeds the speakers of a gender.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise SplitError(f"split.folds={folds!r} must be an integer >= 2")
    spk = table.groupby("speaker")["gender"].first()
    lang = table.groupby("speaker")["language"].first() if "language" in table else pd.Series("", index=spk.index)
    for gender in ("m", "f"):
        pool = sorted(spk[spk == gender].index)
        if len(pool) < folds:
            name = ("male", "female")[gender == "f"]
            raise SplitError(
                f"speaker_cv with {folds} folds needs at least {folds} {name} speakers (one per fold), the "
                f"corpus has {len(pool)} ({', '.join(pool) or 'none'}); use --folds {max(len(pool), 2)} or fewer"
                if len(pool) >= 2 else
                f"speaker_cv needs at least 2 {name} speakers (each fold tests both genders), the corpus has "
                f"{len(pool)} ({', '.join(pool) or 'none'}); use --split paper"
            )
    rng = np.random.default_rng(seed)
    fold: dict[str, int] = {}
    k = 0
    for gender in ("m", "f"):
        pool = spk[spk == gender].index
        for language in sorted(set(lang[pool])):
            names = sorted(s for s in pool if lang[s] == language)
            for s in (names[i] for i in rng.permutation(len(names))):
                fold[s] = k % folds + 1
                k += 1
    return pd.Series(fold, name="fold").rename_axis("speaker").sort_index()


def fold_split(table: pd.DataFrame, folds: pd.Series, fold: int, *, val_size: float, seed: int) -> pd.Series:
    """``train`` / ``val`` / ``test`` of every utterance of ``table`` in fold ``fold``.

    Test: the utterances of the speakers of ``folds`` (:func:`speaker_folds`) in ``fold``;
    validation: a share ``val_size`` of the other speakers' utterances, drawn evenly over
    emotion x speaker (the utterances ordered by emotion, speaker and a seeded shuffle, every
    ``1 / val_size``-th taken; at least one); the rest train. Whole utterances are assigned,
    so all segments and augmented copies of a validation utterance are in validation.
    Returns a Series aligned with ``table`` holding the subset name.
    """
    is_test = table["speaker"].map(folds).to_numpy() == fold
    rest = table.loc[~is_test]
    rng = np.random.default_rng([seed, int(fold)])
    order = rest.assign(_r=rng.permutation(len(rest))).sort_values(["emotion", "speaker", "_r"], kind="stable").index
    pos = np.arange(len(order))
    take = np.floor((pos + 1) * val_size) > np.floor(pos * val_size)
    if not take.any() and len(order) > 1:
        take[len(order) // 2] = True
    subset = pd.Series("train", index=table.index, name="subset")
    subset[is_test] = "test"
    subset[order[take]] = "val"
    try:
        _check_classes(table, subset)
    except SplitError as exc:
        raise SplitError(f"speaker_cv fold {fold}: {exc}") from None
    return subset


def describe_split(frame: pd.DataFrame, subset_col: str = "subset") -> pd.DataFrame:
    """Counts per subset x gender with the speakers of each subset."""
    rows = []
    for name in ("train", "val", "test"):
        part = frame[frame[subset_col] == name]
        rows.append(
            {
                "subset": name,
                "n": len(part),
                "male": int((part["gender"] == "m").sum()),
                "female": int((part["gender"] == "f").sum()),
                "speakers": " ".join(sorted(part["speaker"].unique())),
            }
        )
    return pd.DataFrame(rows)
