"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent

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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the tiny model gains nothing from two, and on a busy 2-core machine
    two OpenMP threads stall small LSTM calls for hundreds of milliseconds. Attack test modules
    use it for all their tests (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(one_thread):
    """The tiny trained SER model, its test data and clip box (``tests.helpers.attack.train_tiny``)."""
    from tests.helpers.attack import train_tiny

    return train_tiny()
