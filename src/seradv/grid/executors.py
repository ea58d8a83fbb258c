"""Executors: who computes a grid's cells, and where.

:func:`seradv.grid.run.run_grid` plans the cells and hands them to an :class:`Executor` with
one function, ``run_one(task, wait=...)``, that computes (or reuses) one cell under its lock and
returns ``False`` when another process holds the lock and ``wait`` is false. The
:class:`LocalExecutor` runs the cells one after another in this process; an executor that sends
cells to other processes or machines implements the same :meth:`Executor.run`.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from seradv.grid.plan import Cell
from seradv.progress import make_progress

log = logging.getLogger(__name__)

__all__ = ["CellTask", "Executor", "LocalExecutor", "RunOne"]


@dataclass(frozen=True)
class CellTask:
    """One cell to compute and the id its files are named by."""

    cell: Cell
    cell_id: str


RunOne = Callable[..., bool]
"""``run_one(task, *, wait: bool) -> bool``: compute or reuse ``task``'s cell; ``False`` if
another process holds its lock and ``wait`` is false."""


class Executor(abc.ABC):
    """Runs every task of a grid through ``run_one``; returns once each cell is finished."""

    @abc.abstractmethod
    def run(self, tasks: Sequence[CellTask], run_one: RunOne) -> None:
        """Compute (or reuse) the cell of every task."""


class LocalExecutor(Executor):
    """The cells in order in this process, with a progress bar; a cell locked by another
    process is left for later, then waited for and reused (or computed)."""

    def run(self, tasks: Sequence[CellTask], run_one: RunOne) -> None:
        with make_progress() as prog:
            bar = prog.add_task("attacks", total=len(tasks), status="")
            busy = []
            for task in tasks:
                cell, cid = task.cell, task.cell_id
                prog.update(bar, status=f"{cell.attack} {cell.label}")
                if run_one(task, wait=False):
                    prog.advance(bar)
                else:
                    log.info("cell %s (%s %s) is being computed by another process; later", cid, cell.attack, cell.label)
                    busy.append(task)
            for task in busy:  # wait for the other process, then reuse (or compute) its cell
                prog.update(bar, status=f"{task.cell.attack} {task.cell.label} (waiting)")
                run_one(task, wait=True)
                prog.advance(bar)
