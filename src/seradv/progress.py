"""Progress on stderr: rich bars on a terminal, plain log lines everywhere else.

On a terminal (and unless ``SERADV_PROGRESS=0`` or :func:`set_progress(False)`) every loop shows
a rich progress bar. When stderr is not a terminal (a pipe, a log file, CI) or bars are switched
off, the same loops print plain lines instead, at most one per :data:`LINE_INTERVAL_S` seconds
per task plus one when the task ends, e.g.::

    features: 120/535 (12 s)
    features: 535/535 done in 51 s

:func:`stage` brackets a whole stage of a run with a start and an end line (always printed).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

_ENABLED = [os.environ.get("SERADV_PROGRESS", "1") != "0"]

LINE_INTERVAL_S = float(os.environ.get("SERADV_PROGRESS_INTERVAL", "10"))
"""Seconds between two plain progress lines of one task (``$SERADV_PROGRESS_INTERVAL``)."""


def set_progress(enabled: bool) -> None:
    """Globally enable or disable progress bars (plain progress lines are printed instead)."""
    _ENABLED[0] = enabled


def progress_enabled() -> bool:
    """Whether loops show rich bars: enabled and stderr is a terminal."""
    return _ENABLED[0] and sys.stderr.isatty()


def _emit(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # no stderr or a closed pipe must not stop the work
        pass


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


class LineProgress:
    """The part of :class:`rich.progress.Progress` that seradv uses, printing plain lines.

    ``add_task``, ``advance``, ``update`` and use as a context manager; a line per task at
    most every ``interval_s`` seconds, and one when a task completes (or the block ends).
    """

    def __init__(self, interval_s: float | None = None) -> None:
        self.interval_s = LINE_INTERVAL_S if interval_s is None else interval_s
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        for tid, t in self._tasks.items():
            if not t["ended"] and t["completed"] > t["start"]:
                self._line(tid, final=exc[0] is None)  # e.g. training stopped early: done at 12/100

    def add_task(self, description: str, total: float | None = 100.0, completed: float = 0,
                 **fields: Any) -> int:
        tid = len(self._tasks)
        now = time.monotonic()
        self._tasks[tid] = {"description": description, "total": total, "completed": completed,
                            "start": completed, "status": fields.get("status", ""), "t0": now,
                            "last": now, "ended": False}
        return tid

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields: Any) -> None:
        t = self._tasks[task_id]
        if total is not None:
            t["total"] = total
        if completed is not None:
            t["completed"] = completed
        if advance is not None:
            t["completed"] += advance
        if description is not None:
            t["description"] = description
        if "status" in fields:
            t["status"] = fields["status"]
        if t["ended"] or (advance is None and completed is None):
            return
        done = t["total"] is not None and t["completed"] >= t["total"]
        if done or time.monotonic() - t["last"] >= self.interval_s:
            self._line(task_id, final=done)

    def _line(self, task_id: int, *, final: bool) -> None:
        t = self._tasks[task_id]
        now = time.monotonic()
        t["last"] = now
        n = f"{t['completed']:g}" + (f"/{t['total']:g}" if t["total"] is not None else "")
        elapsed = _seconds(now - t["t0"])
        status = f" {t['status']}" if t["status"] else ""
        if final:
            t["ended"] = True
            _emit(f"{t['description']}: {n} done in {elapsed}{status}")
        else:
            _emit(f"{t['description']}: {n} ({elapsed}){status}")


def make_progress() -> Progress | LineProgress:
    """Rich bars (count, elapsed, remaining) on a terminal; else a :class:`LineProgress`."""
    if not progress_enabled():
        return LineProgress()
    from rich.console import Console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (or plain progress lines)."""
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    n = total if total is not None else len(items)  # type: ignore[arg-type]
    with make_progress() as prog:
        task = prog.add_task(description, total=n, status="")
        for item in items:
            yield item
            prog.advance(task)


def reset_peak_memory() -> bool:
    """Reset this process's peak resident memory (Linux: ``5`` into ``/proc/self/clear_refs``);
    ``False`` where the system cannot (then :func:`peak_memory_mb` is the process's peak so far)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb() -> float | None:
    """Peak resident memory of this process in MiB since the last :func:`reset_peak_memory`
    (``VmHWM``; ``getrusage``'s lifetime peak where ``/proc`` is missing; ``None`` if neither)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except (ImportError, OSError):
        return None


@contextlib.contextmanager
def stage(name: str, index: int | None = None, count: int | None = None) -> Iterator[None]:
    """Print ``[i/n] name ...`` to stderr, then ``[i/n] name done in 12 s, peak memory 812 MiB``
    (or ``stopped after``). The peak is this process's resident memory during the stage."""
    tag = f"[{index}/{count}] " if index is not None and count is not None else ""
    _emit(f"{tag}{name} ...")
    fresh = reset_peak_memory()
    t0 = time.monotonic()
    try:
        yield
    except BaseException:
        _emit(f"{tag}{name} stopped after {_seconds(time.monotonic() - t0)}")
        raise
    peak = peak_memory_mb()
    mem = "" if peak is None else f", peak memory {peak:,.0f} MiB" + ("" if fresh else " (process so far)")
    _emit(f"{tag}{name} done in {_seconds(time.monotonic() - t0)}{mem}")
