"""Progress bars (rich) that can be switched off for tests and logs."""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

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


def set_progress(enabled: bool) -> None:
    """Globally enable or disable progress bars."""
    _ENABLED[0] = enabled


def progress_enabled() -> bool:
    return _ENABLED[0] and sys.stderr.isatty()


def make_progress() -> Progress:
    """A rich Progress with bar, count, elapsed and remaining time (on stderr)."""
    from rich.console import Console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
        disable=not progress_enabled(),
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    n = total if total is not None else len(items)  # type: ignore[arg-type]
    with make_progress() as prog:
        task = prog.add_task(description, total=n, status="")
        for item in items:
            yield item
            prog.advance(task)
