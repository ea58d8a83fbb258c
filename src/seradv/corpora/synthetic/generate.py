"""Writing the corpus: deterministic, idempotent, atomic per file; the default folder."""

from __future__ import annotations

import io
import json
import logging
import os
import wave
from pathlib import Path
from typing import Any

import numpy as np

from seradv.fileio import atomic_write_bytes
from seradv.corpora.synthetic.config import GENERATOR_VERSION, SyntheticConfig, plan_utterances
from seradv.corpora.synthetic.voice import synthesize_utterance
from seradv.errors import CorpusError, ParameterError

log = logging.getLogger(__name__)

METADATA_NAME = "synthetic.json"


def _wav_bytes(y: np.ndarray, sr: int) -> bytes:
    pcm = np.clip(np.round(y * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def _metadata(config: SyntheticConfig) -> dict[str, Any]:
    return {
        "generator": "seradv.corpora.synthetic",
        "version": GENERATOR_VERSION,
        "config": config.to_dict(),
        "n_files": config.n_files,
        "naming": "<language>_<language>-<gender><nn>_<emotion>_<index:03d>.wav",
    }


def _read_metadata(out_dir: Path) -> dict[str, Any]:
    path = out_dir / METADATA_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or "config" not in meta:
            raise ValueError("no 'config' entry")
        return meta
    except (OSError, ValueError) as exc:
        raise CorpusError(
            f"synthetic: {path} is unreadable ({exc}); delete the folder or pick another one"
        ) from None


def _visible_entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def generate_synthetic_corpus(out_dir: str | Path, config: SyntheticConfig | None = None) -> Path:
    """Write the synthetic corpus of ``config`` into ``out_dir``; return the folder.

    Files are 16-bit PCM mono wav named ``<language>_<speaker>_<emotion>_<index>.wav``
    (e.g. ``xa_xa-f01_happiness_001.wav``), plus ``synthetic.json`` with the config.
    Generation is deterministic (same config, byte-identical files), idempotent (nothing is
    written when ``synthetic.json`` has the same config and every file is present; missing
    files are re-created) and atomic per file (temporary name, then ``os.replace``).

    Parameters
    ----------
    out_dir : str or Path
        Folder to fill; created if missing. It must be empty, or hold this same corpus.
    config : SyntheticConfig, optional
        What to generate; defaults to ``SyntheticConfig()``.

    Returns
    -------
    Path

    Raises
    ------
    CorpusError
        If the folder holds another synthetic config or unrelated files.
    """
    config = SyntheticConfig() if config is None else config
    if not isinstance(config, SyntheticConfig):
        raise ParameterError(f"config must be a SyntheticConfig, got {type(config).__name__}")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise CorpusError(f"synthetic: {out_dir} is a file, not a folder; pick another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / METADATA_NAME
    if meta_path.exists():
        meta = _read_metadata(out_dir)
        same_version = meta.get("version") == GENERATOR_VERSION
        try:
            same_config = SyntheticConfig.from_dict(meta["config"]) == config
        except (ParameterError, TypeError):
            same_config = False
        if not (same_version and same_config):
            raise CorpusError(
                f"synthetic: {out_dir} already holds a synthetic corpus generated with another "
                f"config or generator version ({json.dumps(meta.get('config'))}, version "
                f"{meta.get('version')}); pick another folder (or delete this one)"
            )
    elif _visible_entries(out_dir):
        raise CorpusError(
            f"synthetic: {out_dir} is not empty and holds no {METADATA_NAME}; "
            f"pick an empty or new folder for the synthetic corpus"
        )
    else:
        data = (json.dumps(_metadata(config), indent=2) + "\n").encode("utf-8")
        atomic_write_bytes(meta_path, data)

    todo = [u for u in plan_utterances(config) if not (out_dir / u.file_name).is_file()]
    if not todo:
        return out_dir
    log.info("synthetic: generating %d of %d files into %s", len(todo), config.n_files, out_dir)
    for spec in todo:
        y = synthesize_utterance(spec, config)
        atomic_write_bytes(out_dir / spec.file_name, _wav_bytes(y, config.sample_rate))
    return out_dir


def default_data_dir() -> Path:
    """Folder of the default synthetic corpus.

    ``$SERADV_CACHE_DIR/synthetic/<hash>`` or ``~/.cache/seradv/synthetic/<hash>``, where
    ``<hash>`` identifies the default config and the generator version.
    """
    root = os.environ.get("SERADV_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "seradv"
    return base / "synthetic" / SyntheticConfig().short_hash()


def ensure_synthetic(data_dir: str | Path) -> None:
    """Make ``data_dir`` ready to scan (the recipe's ``ensure`` hook).

    A missing or empty folder gets the default corpus; a folder with ``synthetic.json`` gets
    its missing files re-created from the recorded config; anything else is left alone (the
    scan then reports what it finds).
    """
    data_dir = Path(data_dir).expanduser()
    if not data_dir.exists() or (data_dir.is_dir() and not _visible_entries(data_dir)):
        generate_synthetic_corpus(data_dir, SyntheticConfig())
        return
    if data_dir.is_dir() and (data_dir / METADATA_NAME).is_file():
        meta = _read_metadata(data_dir)
        if meta.get("version") != GENERATOR_VERSION:
            log.warning("synthetic: %s was generated by generator version %s (current %s); "
                        "using the files as they are", data_dir, meta.get("version"),
                        GENERATOR_VERSION)
            return
        try:
            config = SyntheticConfig.from_dict(meta["config"])
        except (ParameterError, TypeError) as exc:
            raise CorpusError(f"synthetic: {data_dir / METADATA_NAME} has a bad config ({exc}); "
                              f"delete the folder or pick another one") from None
        generate_synthetic_corpus(data_dir, config)
