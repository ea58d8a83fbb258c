"""Fixtures shared by the grid tests: a small trained run (tone corpus) and copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.corpus import make_tone_corpus, tone_config
from seradv import pipeline


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A prepared, trained and evaluated run on the tone corpus (one per test module)."""
    root = tmp_path_factory.mktemp("grid")
    data = make_tone_corpus(root / "tones", n_per_gender=3, per=3)
    run_dir = root / "run"
    pipeline.prepare_run(tone_config(data, epochs=15), run_dir)
    pipeline.train_run(run_dir)
    pipeline.evaluate_run(run_dir)
    return run_dir


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of the run directory ``src`` at ``dst`` without its ``attacks/`` folder."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("attacks"))
    return dst
