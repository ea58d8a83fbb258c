"""Executors: who computes a grid's cells, and where.

:func:`seradv.grid.run.run_grid` plans the cells and hands them to an :class:`Executor` with
one function, ``run_one(task, wait=...)``, that computes (or reuses) one cell under its lock and
returns ``False`` when another process holds the lock and ``wait`` is false. Whoever runs it,
``run_one`` writes the cell's files itself (atomically, under the cell's lock), so every executor
leaves the same files and resume and reuse work across executors.

* :class:`LocalExecutor`: the cells one after another in this process (the default).
* :class:`RayExecutor`: every cell a Ray task (``pip install seradv[ray]``) on a local Ray
  instance or the cluster at ``address``; the run directory must be on storage every node
  sees (the tasks write the cells there).

:func:`get_executor` builds one from its name (``--executor``, ``attack.executor``).
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from seradv.errors import EnvironmentFault, ParameterError
from seradv.grid.plan import Cell
from seradv.progress import make_progress

log = logging.getLogger(__name__)

__all__ = ["CellTask", "EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "RunOne", "get_executor"]


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


def _ray_cell(run_one: RunOne, task: CellTask, threads: int) -> bool:
    """A cell inside a Ray worker: ``threads`` torch threads (the task's CPUs), then ``run_one``
    waiting for the cell's lock (a second process on the same cell finishes it first)."""
    torch.set_num_threads(threads)
    return run_one(task, wait=True)


class RayExecutor(Executor):
    """Each cell a Ray task declaring ``num_cpus`` CPUs (and ``num_gpus`` GPUs); tasks run where
    the cluster has room, results land in the run directory exactly as the local executor
    writes them.

    ``address``: ``None`` starts (or joins) a local Ray instance with ``local_cpus`` CPUs;
    ``"auto"`` or ``"ray://host:port"`` joins a running cluster. The model and the attacked
    samples travel once, in Ray's object store (``run_one`` holds them). Each worker runs torch
    with ``num_cpus`` threads: a cell's numbers equal the local executor's at the same thread
    count (float round-off of CPU kernels can depend on it).
    """

    def __init__(self, address: str | None = None, *, num_cpus: int = 1, num_gpus: float = 0,
                 local_cpus: int | None = None) -> None:
        if num_cpus < 1:
            raise ParameterError(f"executor num_cpus={num_cpus} must be a positive integer")
        self.address, self.num_cpus, self.num_gpus, self.local_cpus = address, num_cpus, num_gpus, local_cpus

    def _ray(self) -> Any:
        try:
            import ray  # optional dependency: only this executor needs it
        except ImportError:
            raise ParameterError("--executor ray needs Ray: pip install 'seradv[ray]' (or pip install ray)") from None
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "ignore_reinit_error": True}
            if self.address is None:
                kw["num_cpus"] = self.local_cpus
            try:
                ray.init(address=self.address, **kw)
            except Exception as exc:  # noqa: BLE001 - Ray raises many types (ConnectionError, RuntimeError, ...)
                where = self.address or "a local instance"
                raise EnvironmentFault(f"Ray could not start or join {where}: {type(exc).__name__}: {exc}") from None
        return ray

    def run(self, tasks: Sequence[CellTask], run_one: RunOne) -> None:
        if not tasks:
            return
        ray = self._ray()
        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(_ray_cell)
        fn = ray.put(run_one)
        pending = {remote.remote(fn, task, self.num_cpus): task for task in tasks}
        with make_progress() as prog:
            bar = prog.add_task("attacks (ray)", total=len(tasks), status=f"{len(tasks)} cells submitted")
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(done[0])
                ray.get(done[0])  # a task's error surfaces here, with the cell it came from
                prog.update(bar, status=f"{task.cell.attack} {task.cell.label}")
                prog.advance(bar)


EXECUTORS = ("local", "ray")
"""The executors :func:`get_executor` knows."""


def get_executor(name: str = "local", *, address: str | None = None, num_cpus: int = 1,
                 num_gpus: float = 0) -> Executor:
    """The executor called ``name`` (one of :data:`EXECUTORS`)."""
    if name == "local":
        if address is not None:
            raise ParameterError("an executor address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, num_cpus=num_cpus, num_gpus=num_gpus)
    raise ParameterError(f"executor={name!r} must be one of {', '.join(EXECUTORS)}")
