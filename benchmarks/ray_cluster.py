"""A multi-node Ray cluster simulated on this machine: cells per hour with 1 and 2 worker nodes.

A head node without CPUs (``ray start --head --num-cpus=0``) and worker nodes of one CPU each
(``ray start --address=HEAD --num-cpus=1``), all on this machine, each ``ray start --block`` a
child of this script (stopped by its own process id at the end, whatever happens: no
``ray stop``, which would stop every Ray node of the machine). On a small trained tone run
(the tests' tone corpus and tiny model) it runs one grid (default: the paper grid of fgsm,
bim, deepfool on 64 test segments, batches of 32) four ways, each on a fresh copy of the run:

* ``local``: the local executor, one torch thread (the baseline);
* ``ray-1``: ``RayExecutor(address=HEAD)`` with one worker node;
* ``ray-2``: with two worker nodes;
* ``ray-2-shards``: two worker nodes, ``shards=2`` (sample shards of the exact attacks);

and checks that the four tables are the same (timing columns aside). Prints and writes
``OUT/ray_cluster.json``: wall seconds of the grid's cells and cells per hour per setting.
The grid runs with ``trust=False`` (the trust checks run in the driver, not as tasks).

Usage::

    PYTHONPATH=src python benchmarks/ray_cluster.py [--out /tmp/seradv-ray-cluster] [--samples 64]
        [--attacks fgsm,bim,deepfool] [--grid paper] [--port 6390]

The nodes run their workers as nice as this script (``RAY_worker_niceness=0``; Ray's default,
15, lets every other process on the machine go first). On a shared machine the figures are noisy (other processes take the cores the workers
need): read them as the scaling of one run, not as a property of Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # seradv, and tests.helpers (the tones corpus, the tiny model)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# one machine, nodes on 127.0.0.1: no token authentication between them (keep it on a real cluster)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from seradv import pipeline  # noqa: E402
from seradv.grid.executors import LocalExecutor, RayExecutor  # noqa: E402
from seradv.grid.run import run_grid  # noqa: E402
from tests.helpers.corpus import make_tone_corpus, tone_config  # noqa: E402

TIMING = ("seconds", "wall_seconds", "samples_per_s", "seconds_per_sample")


def build_run(out: Path) -> Path:
    """A prepared, trained tone run with at least 64 test segments (the tiny model)."""
    run = out / "run"
    if (run / "model.safetensors").is_file():
        return run
    data = make_tone_corpus(out / "tones", n_per_gender=4, per=8)
    pipeline.prepare_run(tone_config(data, epochs=5).replace(**{"train.threads": 1}), run)
    pipeline.train_run(run)
    return run


def fresh_copy(run: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("attacks"))
    return dst


def cluster_env() -> dict:
    """The nodes' environment: workers import seradv and tests.helpers (the pickled tiny model)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    # Ray starts its worker processes 15 niceness steps down by default: on a shared machine
    # they then run behind everything else (measured here: 20x slower cells); as nice as the driver
    env.setdefault("RAY_worker_niceness", "0")
    return env


def start_node(args: list[str], log: Path) -> subprocess.Popen:
    ray = Path(sys.executable).with_name("ray")
    fh = open(log, "w")  # noqa: SIM115 - kept open for the node's life
    return subprocess.Popen([str(ray), "start", "--block", "--disable-usage-stats", *args], stdout=fh,
                            stderr=subprocess.STDOUT, env=cluster_env())


def wait_for_cpus(ray, n: int, timeout: float = 120) -> None:
    t0 = time.time()
    while ray.cluster_resources().get("CPU", 0) < n:
        if time.time() - t0 > timeout:
            raise RuntimeError(f"the cluster did not reach {n} CPUs in {timeout:.0f} s: {ray.cluster_resources()}")
        time.sleep(1)


def table(run: Path) -> pd.DataFrame:
    t = pd.read_csv(run / "attacks" / "results.csv")
    return t.drop(columns=[c for c in t.columns if c in TIMING]).sort_values(["cell_id", "group"]).reset_index(drop=True)


def timed_grid(run: Path, executor, **kw) -> dict:
    t0 = time.perf_counter()
    res = run_grid(run, executor=executor, trust=False, **kw)
    wall = time.perf_counter() - t0
    n = int(res[res["attack"].isin(kw["attacks"])]["cell_id"].nunique())
    split = sum('"shards"' in f.read_text() for f in (run / "attacks" / "cells").glob("*.json"))
    return {"cells": n, "cells_sharded": split, "wall_s": round(wall, 2), "cells_per_hour": round(n / wall * 3600, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/seradv-ray-cluster"))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--attacks", default="fgsm,bim,deepfool")
    ap.add_argument("--grid", default="paper")
    ap.add_argument("--port", type=int, default=6390)
    ap.add_argument("--batch-size", type=int, default=32, help="32: two batches of the 64 segments, so shards=2 splits a cell")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    run = build_run(a.out)
    kw = {"attacks": a.attacks.split(","), "grid": a.grid, "limit": a.samples, "seed": 0, "batch_size": a.batch_size}
    rows, tables = {}, {}
    rows["local"] = timed_grid(fresh_copy(run, a.out / "local"), LocalExecutor(), **kw)
    tables["local"] = table(a.out / "local")
    print("local", rows["local"], flush=True)

    import ray

    head_addr = f"127.0.0.1:{a.port}"
    temp = a.out / "ray-tmp"
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(start_node(["--head", "--num-cpus=0", f"--port={a.port}", f"--temp-dir={temp}",
                                 "--include-dashboard=false"], a.out / "head.log"))
        time.sleep(10)
        nodes.append(start_node([f"--address={head_addr}", "--num-cpus=1"], a.out / "worker1.log"))
        ray.init(address=head_addr, log_to_driver=False)
        wait_for_cpus(ray, 1)
        for name, workers, shards in (("ray-1", 1, 1), ("ray-2", 2, 1), ("ray-2-shards", 2, 2)):
            if workers == 2 and len(nodes) < 3:
                nodes.append(start_node([f"--address={head_addr}", "--num-cpus=1"], a.out / "worker2.log"))
                wait_for_cpus(ray, 2)
            run_copy = fresh_copy(run, a.out / name)
            rows[name] = {"worker_nodes": workers, "shards": shards,
                          **timed_grid(run_copy, RayExecutor(address=head_addr, num_cpus=1, shards=shards), **kw)}
            tables[name] = table(run_copy)
            print(name, rows[name], flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for p in reversed(nodes):  # our own nodes, by process id
            p.terminate()
        for p in reversed(nodes):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    same = {name: bool(t.equals(tables["local"])) for name, t in tables.items()}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu, "cores": os.cpu_count(),
           "load_avg_1m": os.getloadavg()[0], "ray": ray.__version__, **kw, "rows": rows,
           "tables_equal_local": same}
    (a.out / "ray_cluster.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
