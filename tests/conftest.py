"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # make tests/audio_helpers.py importable in any import mode
    sys.path.insert(0, str(TESTS_DIR))

REPO_ROOT = TESTS_DIR.parent
EMODB_DIR = REPO_ROOT.parent / "shared" / "datasets" / "emodb"


@pytest.fixture(scope="session")
def emodb_dir() -> Path:
    """The real EmoDB folder next to the repository; the test is skipped if it is absent."""
    if not EMODB_DIR.is_dir():
        pytest.skip(f"real EmoDB not found at {EMODB_DIR} (download it there to run this test)")
    return EMODB_DIR


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Every test session gets its own feature cache (never the user's ~/.cache/seradv)."""
    import os

    old = os.environ.get("SERADV_CACHE_DIR")
    os.environ["SERADV_CACHE_DIR"] = str(tmp_path_factory.mktemp("seradv-cache"))
    os.environ["SERADV_PROGRESS"] = "0"
    yield
    if old is None:
        os.environ.pop("SERADV_CACHE_DIR", None)
    else:
        os.environ["SERADV_CACHE_DIR"] = old
