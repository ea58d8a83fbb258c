"""Corpus recipes and their registry.

Each recipe turns a folder into a validated table (see :mod:`seradv.corpora.base`).
Add a corpus without touching the core::

    from seradv.corpora import Recipe, register_corpus
    register_corpus(Recipe(name="mycorpus", language="en", parse=my_parse, ...))
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

from seradv.corpora import emodb, emovo, ravdess, synthetic
from seradv.corpora.base import Manifest, NoMatchingFiles, Recipe, SkipFile, validate_manifest
from seradv.errors import CorpusError
from seradv.fileio import check_path_component

__all__ = [
    "Manifest",
    "Recipe",
    "SkipFile",
    "CORPORA",
    "register_corpus",
    "get_corpus",
    "load_corpus",
    "guess_corpus",
    "validate_manifest",
]

CORPORA: dict[str, Recipe] = {}


def register_corpus(recipe: Recipe, *, overwrite: bool = False) -> Recipe:
    """Add a recipe to the registry under ``recipe.name``."""
    check_path_component(recipe.name, "corpus name", error=CorpusError)
    if recipe.name in CORPORA and not overwrite:
        raise CorpusError(f"a corpus named {recipe.name!r} is already registered")
    CORPORA[recipe.name] = recipe
    return recipe


def get_corpus(name: str) -> Recipe:
    """The registered recipe called ``name`` (clear error listing the known ones)."""
    key = name.lower().strip()
    if key not in CORPORA:
        raise CorpusError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(CORPORA))}")
    return CORPORA[key]


def load_corpus(
    name: str,
    data_dir: str | Path | None = None,
    *,
    progress: Callable[[Iterable], Iterator] | None = None,
) -> Manifest:
    """Build the table of corpus ``name`` from ``data_dir``.

    ``data_dir`` may be omitted only for corpora with a default folder (``synthetic``).
    """
    recipe = get_corpus(name)
    if data_dir is None:
        if recipe.default_data_dir is None:
            raise CorpusError(f"{name}: no data folder given; pass --data-dir / data_dir=")
        data_dir = recipe.default_data_dir()
    try:
        return recipe.prepare_manifest(data_dir, progress=progress)
    except NoMatchingFiles as exc:  # name the corpus the files look like, if any
        guess = guess_corpus(exc.files, exclude=recipe.name)
        raise CorpusError(recipe.no_match_message(exc.data_dir, exc.files, guess=guess)) from None


def guess_corpus(files: Iterable[Path], *, exclude: str | None = None) -> str | None:
    """Name of the registered corpus whose naming scheme fits most of ``files``, if any."""
    files = list(files)[:200]
    best, best_hits = None, 0
    for name, recipe in CORPORA.items():
        if name == exclude:
            continue
        hits = 0
        for f in files:
            try:
                recipe.parse(f)
                hits += 1
            except SkipFile:
                pass
            except Exception:  # noqa: BLE001 - a foreign parser must never crash the hint
                pass
        if hits > best_hits:
            best, best_hits = name, hits
    return best if best_hits > 0 else None


for _builtin in (emodb, emovo, ravdess, synthetic):
    register_corpus(_builtin.RECIPE)
