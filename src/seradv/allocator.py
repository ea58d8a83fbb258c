"""Keep freed memory for reuse while a compute-heavy stage runs (glibc's malloc).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and returns it to the system on ``free``: a tensor of that size (the CNN-LSTM's first feature
maps are 57 MiB at batch 32) costs a page fault per 4 KiB page, zero-filled by the kernel, each
time it is allocated, i.e. several times per training step. :func:`reuse_freed_memory` turns
that off for its duration (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, ...)``:
large blocks come from the heap and stay there for the next step) and afterwards restores
glibc's defaults and returns the freed heap to the system (``malloc_trim``). It changes where
memory comes from, never what is computed: the same numbers, bit for bit.

Where the same tensor shapes recur (training steps, a white-box attack's gradient passes) the
kept blocks are reused and the peak resident memory stays what the stage needs; where sizes
vary from query to query (the black-box attacks) the heap fragments and grows (Pixel th 10:
1.9x the memory), so those run without it (:func:`seradv.attacks.context.kept_memory`).

Measured (docs/benchmarks.md, "Speed and memory", 2026-12-04): an EmoDB training epoch 1.9x
faster on one thread, an attack's input gradient 1.4-2.4x. Elsewhere than on glibc (macOS,
musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's malloc.h
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults
_KEEP = 2**31 - 1  # the largest trim threshold mallopt takes (an int): about "never"
_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    """The process's glibc, or ``None`` (another C library, or none found)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Within the block, freed large blocks stay in the process for reuse (module docstring).

    Yields whether it took effect (``False`` where the C library is not glibc). Nested and
    concurrent uses keep it on until the outermost one ends.
    """
    global _depth
    libc = _LIBC
    if libc is None:
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP) == 1
            if not ok:
                log.debug("mallopt refused: freed memory is not kept")
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
                libc.malloc_trim(0)
