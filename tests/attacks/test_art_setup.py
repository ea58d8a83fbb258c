"""ART's config file is created atomically, so parallel first imports of ART cannot fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seradv.attacks._art_setup import art_config_folder, ensure_art_config


def test_creates_the_default_config_once(tmp_path: Path) -> None:
    path = ensure_art_config(tmp_path)
    assert path == tmp_path / ".art" / "config.json"
    assert json.loads(path.read_text()) == {"ART_DATA_PATH": str(tmp_path / ".art" / "data")}
    path.write_text('{"ART_DATA_PATH": "/elsewhere"}')
    assert ensure_art_config(tmp_path) == path
    assert json.loads(path.read_text()) == {"ART_DATA_PATH": "/elsewhere"}  # left untouched
    assert not list((tmp_path / ".art").glob("*.tmp"))


def test_unwritable_home_falls_back_like_art(tmp_path: Path) -> None:
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    try:
        if os.access(home, os.W_OK):
            pytest.skip("running as root: file permissions do not bind, so the fallback cannot be exercised")
        assert art_config_folder(home) == Path("/tmp/.art")
    finally:
        home.chmod(0o700)


def test_parallel_first_imports_of_art_all_succeed(tmp_path: Path) -> None:
    """Four processes import seradv.attacks (hence ART) at once into a fresh home folder."""
    env = {**os.environ, "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    code = "import seradv.attacks, art.config; print(art.config.ART_DATA_PATH)"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == str(tmp_path / ".art" / "data")
    assert json.loads((tmp_path / ".art" / "config.json").read_text())["ART_DATA_PATH"]
