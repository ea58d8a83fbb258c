"""Atomic file writes, content hashes, safe path names and the on-disk feature cache.

Everything seradv writes that a later run reuses goes through :func:`atomic_write_bytes`
(write to a temporary file in the same folder, fsync, ``os.replace``), so an interrupt never
leaves a half-written file that a later run would trust. The file gets the mode a plain
``open()`` would give it (``0o666`` less the umask). A write that fails because of the machine
(disk full, quota, permission, read-only file system) raises
:class:`~seradv.errors.EnvironmentFault` naming the file, never a per-file skip.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from seradv.errors import EnvironmentFault, ParameterError, SeradvError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "save_npy",
    "load_npy",
    "npy_is_complete",
    "read_json",
    "file_sha256",
    "check_path_component",
    "environment_fault",
    "UnsafeNameError",
    "ENVIRONMENT_ERRNOS",
]

ENVIRONMENT_ERRNOS = frozenset(
    e for e in (getattr(errno, n, None) for n in ("ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS",
                                                   "ENOMEM", "EMFILE", "ENFILE"))
    if e is not None
)
"""errno values that mean the machine failed, not the input file."""


def environment_fault(exc: BaseException, path: str | Path | None = None) -> EnvironmentFault | None:
    """The :class:`EnvironmentFault` for ``exc`` if it is an environment failure, else ``None``.

    ``MemoryError`` and ``OSError`` with errno ENOSPC, EDQUOT, EACCES, EPERM, EROFS (and the
    out-of-memory / out-of-file-handles errnos) count; the message is one line naming ``path``.
    """
    if isinstance(exc, EnvironmentFault):
        return exc
    where = f" ({path})" if path is not None else ""
    if isinstance(exc, MemoryError):
        return EnvironmentFault(f"out of memory{where}; free memory or lower n_jobs and run again")
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        target = path if path is not None else exc.filename
        what = os.strerror(exc.errno)
        hint = {
            errno.ENOSPC: "free disk space (or point cache_dir / SERADV_CACHE_DIR elsewhere)",
            errno.EROFS: "write to a writable folder",
        }.get(exc.errno, "fix the disk, quota or permissions")
        return EnvironmentFault(f"cannot write {target}: {what} [{errno.errorcode.get(exc.errno, exc.errno)}]; "
                                f"{hint} and run the same command again")
    return None


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read-by-setting (briefly process-wide)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``.

    Raises :class:`EnvironmentFault` when the machine refuses the write (disk full, ...).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 -> what open() gives
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        fault = environment_fault(exc, path) if isinstance(exc, Exception) else None
        if fault is not None and fault is not exc:
            raise fault from exc
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


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


def npy_is_complete(path: Path) -> bool:
    """Whether ``path`` is a whole ``.npy`` file: a readable header and exactly the data bytes
    it declares (a truncated or padded file is not). Reads only the header."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                return False
            offset = fh.tell()
        if dtype.hasobject:
            return False
        expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return os.path.getsize(path) == expected
    except FileNotFoundError:
        return False
    except OSError as exc:
        fault = environment_fault(exc, path)
        if fault is not None and exc.errno not in (errno.EACCES, errno.EPERM):
            raise fault from exc
        return False
    except (ValueError, EOFError, SyntaxError, TypeError):
        return False


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (EmoDB's 535 files, 48 MB: about 0.15 s)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_path_component(name: Any, what: str, *, error: type[SeradvError] | None = None) -> str:
    """``name`` if it is safe as one file or folder name; else :class:`SeradvError`.

    Refused: non-strings, empty names, ``.`` and ``..``, path separators (``/``, ``\\``) and
    NUL, so that an id from the Python API can never write outside its folder. ``error`` is
    the exception class raised (default :class:`UnsafeNameError`).
    """
    UnsafeNameError = error or globals()["UnsafeNameError"]  # noqa: N806
    if not isinstance(name, str):
        raise UnsafeNameError(f"{what} {name!r} must be a string, got {type(name).__name__}")
    if name in ("", ".", ".."):
        raise UnsafeNameError(f"{what} {name!r} is not a usable file name (empty, '.' or '..')")
    bad = [c for c in ("/", "\\", "\x00") if c in name]
    if bad:
        shown = ", ".join({"/": "'/'", "\\": "'\\\\'", "\x00": "NUL"}[c] for c in bad)
        raise UnsafeNameError(f"{what} {name!r} contains a path separator or NUL ({shown}); ids "
                              f"become file names and must be plain names")
    return name


class UnsafeNameError(ParameterError):
    """An id or name that would be used as a file name is not a plain name."""


def json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
