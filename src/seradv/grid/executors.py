"""Executors: who computes a grid's cells, and where.

:func:`seradv.grid.run.run_grid` plans the cells and hands them to an :class:`Executor` with
one function, ``run_one(task, wait=...)``, that computes (or reuses) one cell under its lock and
returns ``False`` when another process holds the lock and ``wait`` is false. Whoever runs it,
``run_one`` writes the cell's files itself (atomically, under the cell's lock), so every executor
leaves the same files and resume and reuse work across executors.

* :class:`LocalExecutor`: the cells one after another in this process (the default).
* :class:`RayExecutor`: every cell a Ray task (``pip install seradv[ray]``) on a local Ray
  instance or the cluster at ``address``; the run directory must be on storage every node
  sees (the tasks write the cells there). With ``shards=K`` a large cell of an attack in
  :data:`SHARD_RULES` is split into up to K sample shards, each a Ray task
  (:class:`ShardedAttack`), merged into the same cell files, bit for bit.

Sample shards are exact only where a sample's result does not depend on the other samples of
the cell: the shards are cut at multiples of ``batch_size`` (every shard runs exactly the
batches the unsharded cell runs, so even batched float kernels see the same inputs), and only
the attacks whose torch backend keeps no state across batches are sharded
(:data:`SHARD_RULES`): ``fgsm``, ``bim``, ``cw_l2``, ``cw_linf`` (no random draw at all) and
``deepfool`` when it differentiates every class (``nb_grads >= n_classes``; with fewer it
takes the union of every sample's top classes over the whole cell). Not sharded: every attack
that draws random numbers from one stream seeded once per cell (``pgd``/``pgd_l2`` random
starts, ``apgd_*``, ``boundary``, ``hopskipjump``, ``pixel``, ``square``, JSMA's targets: a
shard would start the stream afresh and draw other numbers), JSMA's rolling window over all
samples, every ART backend (ART computes some of its state over the whole input) and the
waveform attacks; those cells run whole, as one task.

:func:`get_executor` builds one from its name (``--executor``, ``attack.executor``).
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from seradv.attacks import AttackResult, get_attack, run_attack
from seradv.errors import EnvironmentFault, ParameterError
from seradv.grid.plan import Cell
from seradv.progress import make_progress

log = logging.getLogger(__name__)

__all__ = ["CellTask", "EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "RunOne", "SHARD_RULES",
           "ShardedAttack", "get_executor", "merge_results", "shard_bounds", "shardable"]


@dataclass(frozen=True)
class CellTask:
    """One cell to compute and the id its files are named by."""

    cell: Cell
    cell_id: str


RunOne = Callable[..., bool]
"""``run_one(task, *, wait: bool, attack_runner=None) -> bool``: compute or reuse ``task``'s
cell; ``False`` if another process holds its lock and ``wait`` is false. ``attack_runner``
replaces :func:`~seradv.attacks.run_attack` for the cell (e.g. a :class:`ShardedAttack`)."""


# --------------------------------------------------------------------------------------
# Sample shards of a cell
# --------------------------------------------------------------------------------------
def _always(params: Mapping[str, Any], n_classes: int) -> bool:
    return True


def _deepfool_all_classes(params: Mapping[str, Any], n_classes: int) -> bool:
    return int(params["nb_grads"]) >= n_classes


SHARD_RULES: dict[str, Callable[[Mapping[str, Any], int], bool]] = {
    "fgsm": _always, "bim": _always, "cw_l2": _always, "cw_linf": _always, "deepfool": _deepfool_all_classes,
}
"""The attacks whose ``torch`` backend may be split into sample shards, and when:
``rule(resolved_params, n_classes) -> bool`` (the module docstring says why the others are not)."""

SHARD_BACKENDS = ("torch",)
"""Backends that are sharded (ART's attacks are not)."""


def shardable(attack: str, params: Mapping[str, Any] | None, backend: str | None, n_classes: int) -> bool:
    """Whether a cell of ``attack`` (``params`` and ``backend`` as the grid gives them: missing
    values take the defaults) gives, split into batch-aligned sample shards, exactly the
    unsharded result (:data:`SHARD_RULES`)."""
    rule = SHARD_RULES.get(attack)
    if rule is None:
        return False
    spec = get_attack(attack)
    if (backend or spec.default_backend) not in SHARD_BACKENDS:
        return False
    return rule(spec.validate(params), n_classes)


def shard_bounds(n: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """Up to ``shards`` contiguous ``(start, stop)`` slices of ``n`` samples, cut at multiples
    of ``batch_size`` (so each shard runs exactly the unsharded run's batches), as even in
    batches as they can be; fewer shards when there are fewer batches."""
    if n < 1 or batch_size < 1 or shards < 1:
        raise ParameterError(f"shard_bounds needs n, batch_size, shards >= 1, got {n}, {batch_size}, {shards}")
    n_batches = -(-n // batch_size)
    k = min(shards, n_batches)
    cuts = [round(i * n_batches / k) * batch_size for i in range(k + 1)]
    return [(a, min(b, n)) for a, b in zip(cuts[:-1], cuts[1:])]


def _joined(parts: Sequence[np.ndarray | None], sizes: Sequence[int], fill: bool) -> np.ndarray | None:
    """Per-sample flags of the shards end to end; ``None`` when no shard has any (a shard
    without them: ``fill``, what ``None`` means for it)."""
    if all(p is None for p in parts):
        return None
    return np.concatenate([np.full(m, fill, bool) if p is None else p.astype(bool) for p, m in zip(parts, sizes)])


def merge_results(parts: Sequence[AttackResult]) -> AttackResult:
    """The shards' results, in order, as one :class:`AttackResult`: examples and per-sample
    flags end to end, counters and ``seconds`` (the attack's compute time) summed."""
    if not parts:
        raise ParameterError("merge_results needs at least one shard")
    sizes = [p.x_adv.shape[0] for p in parts]

    def total(name: str) -> int | None:
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else int(sum(values))

    return dataclasses.replace(
        parts[0], x_adv=np.concatenate([p.x_adv for p in parts]), seconds=float(sum(p.seconds for p in parts)),
        n_queries=total("n_queries"), n_grads=total("n_grads"), n_backward=total("n_backward"),
        attacked=_joined([p.attacked for p in parts], sizes, True),
        fooled_any=_joined([p.fooled_any for p in parts], sizes, False), shards=len(parts))


def _ray_shard(name: str, model: torch.nn.Module, x: np.ndarray, y: np.ndarray, params: dict, kw: dict,
               threads: int) -> AttackResult:
    """One shard inside a Ray worker: ``threads`` torch threads, then :func:`run_attack`."""
    torch.set_num_threads(threads)
    return run_attack(name, model, x, y, params, **kw)


@torch.no_grad()
def _n_classes(model: torch.nn.Module, x: np.ndarray, device: str) -> int:
    was = model.training
    model.eval()
    try:
        return int(model.to(device)(torch.from_numpy(np.ascontiguousarray(x[:1], np.float32)).to(device)).shape[1])
    finally:
        model.train(was)


class ShardedAttack:
    """:func:`~seradv.attacks.run_attack` (same signature and result), with the samples of a
    :func:`shardable` cell split into up to ``shards`` batch-aligned shards of at least
    ``min_samples`` samples, each a Ray task of ``num_cpus`` CPUs (and ``num_gpus`` GPUs),
    merged by :func:`merge_results`; any other cell runs here, whole. Call it inside a Ray
    task (or a driver with Ray initialized): it submits the shards to the same cluster."""

    def __init__(self, shards: int, *, num_cpus: int = 1, num_gpus: float = 0, min_samples: int = 1) -> None:
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ParameterError(f"shards={shards!r} must be a positive integer")
        self.shards, self.num_cpus, self.num_gpus, self.min_samples = shards, num_cpus, num_gpus, max(1, min_samples)

    def bounds(self, n: int, batch_size: int) -> list[tuple[int, int]]:
        """The shards of ``n`` samples: :func:`shard_bounds`, no more than ``n // min_samples``."""
        return shard_bounds(n, batch_size, max(1, min(self.shards, n // self.min_samples)))

    def __call__(self, name: str, model: torch.nn.Module, x: np.ndarray, y: np.ndarray,
                 params: Mapping[str, Any] | None = None, **kw: Any) -> AttackResult:
        batch_size = int(kw.get("batch_size", 64))
        bounds = self.bounds(len(x), batch_size)
        if len(bounds) < 2 or not shardable(name, params, kw.get("backend"),
                                            _n_classes(model, x, str(kw.get("device", "cpu")))):
            return run_attack(name, model, x, y, params, **kw)
        import ray  # the caller runs under Ray (a RayExecutor's cell task)

        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(_ray_shard)
        model_ref, p = ray.put(model), dict(params or {})
        t0 = time.perf_counter()
        refs = [remote.remote(name, model_ref, x[a:b], y[a:b], p, kw, self.num_cpus) for a, b in bounds]
        out = merge_results(ray.get(refs))
        log.info("%s: %d samples in %d shards, %.1f s wall (%.1f s of attack)", name, len(x), len(bounds),
                 time.perf_counter() - t0, out.seconds)
        return out


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


def _ray_cell(run_one: RunOne, task: CellTask, threads: int, sharded: ShardedAttack | None = None) -> bool:
    """A cell inside a Ray worker: ``threads`` torch threads (the task's CPUs), then ``run_one``
    waiting for the cell's lock (a second process on the same cell finishes it first), its
    attack split into shards by ``sharded`` where that is exact."""
    torch.set_num_threads(threads)
    if sharded is None:
        return run_one(task, wait=True)
    return run_one(task, wait=True, attack_runner=sharded)


def _ray_call(fn: Callable[..., Any], args: tuple, threads: int, imports: tuple[str, ...] = ()) -> Any:
    """``fn(*args)`` inside a Ray worker with ``threads`` torch threads, once the modules
    ``imports`` are imported (those that register custom corpora or models)."""
    for module in imports:
        importlib.import_module(module)
    torch.set_num_threads(threads)
    return fn(*args)


class RayExecutor(Executor):
    """Each cell a Ray task declaring ``num_cpus`` CPUs (and ``num_gpus`` GPUs); tasks run where
    the cluster has room, results land in the run directory exactly as the local executor
    writes them.

    ``address``: ``None`` starts (or joins) a local Ray instance with ``local_cpus`` CPUs (its
    workers as nice as this process, not Ray's default 15 steps nicer);
    ``"auto"`` or ``"ray://host:port"`` joins a running cluster. The model and the attacked
    samples travel once, in Ray's object store (``run_one`` holds them). Each worker runs torch
    with ``num_cpus`` threads: a cell's numbers equal the local executor's at the same thread
    count (float round-off of CPU kernels can depend on it).

    ``shards=K`` (K > 1) splits a cell of at least ``2 * min_shard_samples`` samples of an
    attack in :data:`SHARD_RULES` into up to K sample shards, each its own task
    (:class:`ShardedAttack`; the cell's task waits for them without holding its CPU); the
    cell's files are the unsharded cell's, bit for bit (its JSON's ``facts`` add ``shards``).

    ``imports``: modules every task of :meth:`map` imports first, e.g. the module that
    registers a custom corpus or model (``register_corpus``, ``register_model``): a Ray worker
    is a fresh process and knows only seradv's own. (Grid cells need none: the model travels.)
    """

    def __init__(self, address: str | None = None, *, num_cpus: int = 1, num_gpus: float = 0,
                 local_cpus: int | None = None, shards: int = 1, min_shard_samples: int = 1,
                 imports: Sequence[str] = ()) -> None:
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1:
            raise ParameterError(f"executor num_cpus={num_cpus} must be a positive integer")
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ParameterError(f"executor shards={shards!r} must be a positive integer")
        self.address, self.num_cpus, self.num_gpus, self.local_cpus = address, num_cpus, num_gpus, local_cpus
        self.imports = tuple(imports)
        self.sharded = (ShardedAttack(shards, num_cpus=num_cpus, num_gpus=num_gpus, min_samples=min_shard_samples)
                        if shards > 1 else None)

    def _ray(self) -> Any:
        try:
            import ray  # optional dependency: only this executor needs it
        except ImportError:
            raise ParameterError("--executor ray needs Ray: pip install 'seradv[ray]' (or pip install ray)") from None
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "ignore_reinit_error": True}
            if self.address is None:
                # Ray starts its workers 15 niceness steps below the driver: on a shared machine
                # they would wait behind every other process; a local instance's run as nice as this one
                kw.update(num_cpus=self.local_cpus, _system_config={"worker_niceness": 0})
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
        pending = {remote.remote(fn, task, self.num_cpus, self.sharded): task for task in tasks}
        with make_progress() as prog:
            bar = prog.add_task("attacks (ray)", total=len(tasks), status=f"{len(tasks)} cells submitted")
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(done[0])
                ray.get(done[0])  # a task's error surfaces here, with the cell it came from
                prog.update(bar, status=f"{task.cell.attack} {task.cell.label}")
                prog.advance(bar)

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], *, label: str = "tasks") -> list[Any]:
        """``[fn(*args) for args in calls]``, each call a Ray task of this executor's CPUs and
        GPUs (and as many torch threads as CPUs); the results in the order of ``calls``. The
        first task's error is raised once every task has ended."""
        if not calls:
            return []
        ray = self._ray()
        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(_ray_call)
        fn_ref = ray.put(fn)
        refs = [remote.remote(fn_ref, tuple(args), self.num_cpus, self.imports) for args in calls]
        with make_progress() as prog:
            bar = prog.add_task(f"{label} (ray)", total=len(refs), status=f"{len(refs)} submitted")
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                prog.advance(bar)
        return ray.get(refs)


EXECUTORS = ("local", "ray")
"""The executors :func:`get_executor` knows."""


def get_executor(name: str = "local", *, address: str | None = None, num_cpus: int = 1,
                 num_gpus: float = 0, shards: int = 1) -> Executor:
    """The executor called ``name`` (one of :data:`EXECUTORS`); ``shards``: see :class:`RayExecutor`."""
    if name == "local":
        if address is not None:
            raise ParameterError("an executor address needs --executor ray")
        if shards != 1:
            raise ParameterError("sample shards need --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, num_cpus=num_cpus, num_gpus=num_gpus, shards=shards)
    raise ParameterError(f"executor={name!r} must be one of {', '.join(EXECUTORS)}")
