"""Atomic file writes and the on-disk feature cache.

Everything seradv writes that a later run reuses goes through :func:`atomic_write_bytes`
(write to a temporary file in the same folder, fsync, ``os.replace``), so an interrupt never
leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "save_npy",
    "load_npy",
    "read_json",
]


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def save_npy(path: Path, array: np.ndarray) -> Path:
    """Save an array as ``.npy`` atomically (never pickled: object arrays are refused)."""
    if array.dtype == object:
        raise TypeError("object arrays would need pickle; refusing to save")
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """Load a ``.npy`` file written by :func:`save_npy` (pickle disabled)."""
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
