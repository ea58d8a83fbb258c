"""Attack benchmark: every attack of the paper grid x every backend, against its cost floor.

On a fixed trained model (a run directory) and a fixed, seeded subset of its test segments, each
(attack, parameter set, backend) is timed and measured: wall time, samples/s, peak memory,
adversarial accuracy, mean |delta| (the study's metric), L2 / Linf / L0, and the cost *floor*:
the model evaluations the algorithm performed (the attack's counters) times the measured cost of
one forward (``t_f``), one forward+backward (``t_fb``) and one extra backward (``t_fb - t_f``) per
sample at the same batch size::

    floor = n_queries * t_f + n_grads * t_fb + n_backward * (t_fb - t_f)

This *algorithmic* floor prices every sample pass at the full batch's per-sample cost. A second
figure, the *pass floor*, prices the passes the backend really made (logged by hooks on the
model, each at its own batch size; :class:`PassLog`) with the measured cost of a pass of that
size (:class:`BatchCosts`): ``seconds / pass_floor`` is the backend's overhead outside the
model (Python, NumPy round trips, logging), while ``seconds / floor`` also charges redundant
passes and the small batches of an attack's tail (samples that need many more steps than the
rest run their last steps in a batch of one).

Backends: ``art`` (ART 1.20.1, the study's toolbox), ``torch`` (seradv's batched code) and
``torchattacks`` (3.5.1, FGSM / BIM / DeepFool only: its other attacks implement different
algorithms or parameters than the study's; it assumes inputs in [0, 1], so the model is wrapped
in an affine map from [0, 1] to the clip box and the budgets are divided by the box width).

Each finished row is written atomically to ``OUT/rows/<key>.json`` and reused, so an interrupted
benchmark continues where it stopped. At the end ``OUT/attacks.csv`` and ``OUT/attacks.md`` (a
Markdown table for docs/benchmarks.md) are written.

Usage (from the repository root, after ``make install``)::

    SERADV_CACHE_DIR=... .venv/bin/python benchmarks/attacks.py runs/emodb-paper \\
        --n 16 --backends torch,art --attacks fgsm,bim --out benchmarks/results/emodb-paper

``--n-art`` uses a smaller subset (>= 16) for the slow reference backend; every row reports the
full-test-set time extrapolated linearly from its own samples/s (stated as such).
"""

from __future__ import annotations

import argparse
from collections import Counter
import hashlib
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from seradv.allocator import reuse_freed_memory
from seradv.attacks import ATTACKS, STUDY_ATTACKS, get_attack, perturbation_norms, run_attack
from seradv.attacks.context import gradient_context
from seradv.fileio import atomic_write_json, atomic_write_text, read_json
from seradv.prepare import load_subset
from seradv.rundir import read_preprocessing
from seradv.rundir import load_model
from seradv.grid.plan import select_subset


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------
def reset_peak_memory(device: torch.device) -> None:
    """Reset the peak-RSS counter of this process (Linux ``clear_refs``) or CUDA's peak stats."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mib(device: torch.device) -> float:
    """Peak resident memory of the process (CPU) or peak allocated CUDA memory, MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------
# Floor
# --------------------------------------------------------------------------------------
def _passes(model: nn.Module, xb: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """The three passes priced here, on batch ``xb``: a forward in inference mode (``inf``), a
    graph forward (``fwd``) and a forward+backward to the input of the summed logits (``fb``)."""

    def inf() -> None:
        with torch.inference_mode():
            model(xb)

    def fwd() -> None:
        xr = xb.clone().requires_grad_(True)
        with gradient_context(device), torch.enable_grad():
            model(xr)

    def fb() -> None:
        xr = xb.clone().requires_grad_(True)
        with gradient_context(device), torch.enable_grad():
            torch.autograd.grad(model(xr).sum(), xr)

    return {"inf": inf, "fwd": fwd, "fb": fb}


def _median_seconds(fn: Any, repeats: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one warm-up call, with freed
    memory kept as :func:`seradv.attacks.run_attack` keeps it (:mod:`seradv.allocator`)."""
    with reuse_freed_memory():
        fn()
        _sync(device)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def measure_pass_costs(model: nn.Module, x: np.ndarray, batch_size: int, device: torch.device,
                       repeats: int = 5) -> dict[str, float]:
    """Seconds per *sample* of one forward (inference mode) and one forward+backward (input
    gradient of the summed logits) at ``batch_size``; median of ``repeats`` after a warm-up."""
    model.eval()
    xb = torch.from_numpy(np.ascontiguousarray(x[:batch_size])).to(device)
    while xb.shape[0] < batch_size:  # tile to a full batch
        xb = torch.cat([xb, xb])[:batch_size]
    passes = _passes(model, xb, device)
    return {name: _median_seconds(passes[p], repeats, device) / batch_size
            for name, p in (("t_f", "inf"), ("t_fb", "fb"))}


class PassLog:
    """The model's forward and backward passes by batch size, from module hooks.

    A forward pass whose output requires grad is a graph forward; every backward pass
    through that output (one per ``autograd.grad`` / ``backward`` call, so ``k`` for a
    ``k``-class Jacobian) is logged when it reaches the output. Passes that bypass
    ``model.forward`` (the Pixel attack's chunked queries) are not seen.
    """

    def __init__(self, model: nn.Module) -> None:
        self.fwd_inf: Counter[int] = Counter()
        self.fwd_grad: Counter[int] = Counter()
        self.bwd: Counter[int] = Counter()
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        m = int(out.shape[0])
        if out.requires_grad:
            self.fwd_grad[m] += 1
            out.register_hook(lambda grad, m=m: self.bwd.update([m]))
        else:
            self.fwd_inf[m] += 1

    def close(self) -> None:
        self._handle.remove()

    def batch_sizes(self) -> set[int]:
        return set(self.fwd_inf) | set(self.fwd_grad) | set(self.bwd)


class BatchCosts:
    """Seconds of one forward (no graph), one graph forward and one forward+backward of a batch
    of ``m`` samples, measured once per ``m`` (median of ``repeats``) and kept in a JSON file."""

    def __init__(self, model: nn.Module, x: np.ndarray, device: torch.device, path: Path, repeats: int = 3):
        self.model, self.x, self.device, self.path, self.repeats = model, x, device, path, repeats
        self.table: dict[str, dict[str, float]] = read_json(path) if path.exists() else {}

    def _measure(self, m: int) -> dict[str, float]:
        xb = torch.from_numpy(np.ascontiguousarray(self.x[np.arange(m) % len(self.x)])).to(self.device)
        return {name: _median_seconds(fn, self.repeats, self.device)
                for name, fn in _passes(self.model, xb, self.device).items()}

    def __call__(self, m: int) -> dict[str, float]:
        if str(m) not in self.table:
            self.table[str(m)] = self._measure(m)
            atomic_write_json(self.path, self.table)
        return self.table[str(m)]

    def pass_floor(self, log: PassLog) -> float:
        """Seconds the logged passes take on their own, each at its batch size; NaN if none."""
        if not log.batch_sizes():
            return float("nan")
        total = 0.0
        for m, k in log.fwd_inf.items():
            total += k * self(m)["inf"]
        for m, k in log.fwd_grad.items():
            total += k * self(m)["fwd"]
        for m, k in log.bwd.items():
            c = self(m)
            total += k * max(c["fb"] - c["fwd"], 0.0)
        return total


def without_unseen_passes(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with no pass floor where the hooks missed most passes: a pass floor under 5 % of
    the algorithmic floor (the Pixel attack's chunked queries bypass ``model.forward``)."""
    pf, floor = row.get("pass_floor_seconds", float("nan")), row.get("floor_seconds", float("nan"))
    if pf == pf and floor == floor and pf < 0.05 * floor:
        return {**row, "pass_floor_seconds": float("nan"), "pass_floor_ratio": float("nan")}
    return row


def floor_seconds(counters: dict[str, int | None], costs: dict[str, float]) -> float:
    """The algorithm's cost floor from its counters and the per-sample pass costs."""
    nq = counters.get("n_queries") or 0
    ng = counters.get("n_grads") or 0
    nb = counters.get("n_backward") or 0
    return nq * costs["t_f"] + ng * costs["t_fb"] + nb * max(costs["t_fb"] - costs["t_f"], 0.0)


# --------------------------------------------------------------------------------------
# torchattacks adapter (benchmark only)
# --------------------------------------------------------------------------------------
class UnitBox(nn.Module):
    """``model(lo + (hi - lo) * u)``: the model seen on inputs in [0, 1] (torchattacks' domain)."""

    def __init__(self, model: nn.Module, lo: float, hi: float) -> None:
        super().__init__()
        self.model, self.lo, self.width = model, lo, hi - lo

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.lo + self.width * u)


TORCHATTACKS = ("fgsm", "bim", "deepfool")


def run_torchattacks(name: str, model: nn.Module, x: np.ndarray, y: np.ndarray, params: dict[str, Any],
                     clip: tuple[float, float], batch_size: int, device: torch.device) -> tuple[np.ndarray, float]:
    """Run torchattacks' version of ``name``; returns ``x_adv`` and seconds."""
    import torchattacks

    lo, hi = clip
    w = hi - lo
    wrapped = UnitBox(model, lo, hi).to(device).eval()
    if name == "fgsm":
        atk = torchattacks.FGSM(wrapped, eps=params["eps"] / w)
    elif name == "bim":
        atk = torchattacks.BIM(wrapped, eps=params["eps"] / w, alpha=params["eps_step"] / w,
                               steps=params["max_iter"])
    elif name == "deepfool":
        atk = torchattacks.DeepFool(wrapped, steps=params["max_iter"], overshoot=params["overshoot"])
    else:
        raise ValueError(f"torchattacks backend not benchmarked for {name}")
    out = np.empty_like(x)
    t0 = time.perf_counter()
    for i in range(0, len(x), batch_size):
        u = torch.from_numpy((x[i:i + batch_size] - lo) / w).to(device)
        yb = torch.from_numpy(y[i:i + batch_size]).to(device)
        adv = atk(u, yb)
        out[i:i + batch_size] = (lo + w * adv.detach()).cpu().numpy()
    _sync(device)
    return np.clip(out, lo, hi), time.perf_counter() - t0


# --------------------------------------------------------------------------------------
# One row
# --------------------------------------------------------------------------------------
def row_key(attack: str, params: dict, backend: str, n: int, seed: int, early_stop: bool) -> str:
    blob = json.dumps([attack, params, backend, n, seed, early_stop], sort_keys=True, default=str)
    return f"{attack}-{backend}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def bench_row(model: nn.Module, x: np.ndarray, y: np.ndarray, attack: str, params: dict, backend: str, *,
              clip: tuple[float, float], batch_size: int, seed: int, device: torch.device,
              costs: dict[str, float], n_full: int, early_stop: bool = False,
              batch_costs: BatchCosts | None = None) -> dict[str, Any]:
    """Time and measure one (attack, params, backend) on ``x``."""
    reset_peak_memory(device)
    log = PassLog(model)
    try:
        if backend == "torchattacks":
            x_adv, seconds = run_torchattacks(attack, model, x, y, params, clip, batch_size, device)
            counters: dict[str, int | None] = {"n_queries": None, "n_grads": None, "n_backward": None}
        else:
            res = run_attack(attack, model, x, y, params, clip=clip, backend=backend, batch_size=batch_size,
                             seed=seed, device=device, early_stop=early_stop)
            x_adv, seconds = res.x_adv, res.seconds
            counters = {"n_queries": res.n_queries, "n_grads": res.n_grads, "n_backward": res.n_backward}
    finally:
        log.close()
    peak = peak_memory_mib(device)
    pass_floor = batch_costs.pass_floor(log) if batch_costs is not None else float("nan")
    with torch.inference_mode():
        preds = []
        for i in range(0, len(x_adv), 128):
            preds.append(model(torch.from_numpy(x_adv[i:i + 128]).to(device)).argmax(1).cpu())
    pred = torch.cat(preds).numpy()
    norms = perturbation_norms(x, x_adv)
    floor = floor_seconds(counters, costs) if counters["n_grads"] is not None else float("nan")
    n = len(x)
    return {
        "attack": attack, "params": json.dumps(params, sort_keys=True), "backend": backend,
        "early_stop": early_stop, "n": n, "seconds": seconds, "samples_per_s": n / seconds,
        "full_set_seconds": seconds / n * n_full, "full_set_extrapolated": n < n_full,
        "peak_mib": peak, "adv_accuracy": float(np.mean(pred == y)),
        "mean_abs_delta": float(norms["mean_abs"].mean()), "mean_l2": float(norms["l2"].mean()),
        "mean_linf": float(norms["linf"].mean()), "mean_l0": float(norms["l0"].mean()),
        **counters, "floor_seconds": floor, "floor_ratio": seconds / floor if floor == floor and floor > 0 else float("nan"),
        "passes": int(sum(log.fwd_inf.values()) + sum(log.fwd_grad.values())),
        "pass_floor_seconds": pass_floor,
        "pass_floor_ratio": seconds / pass_floor if pass_floor == pass_floor and pass_floor > 0 else float("nan"),
    }


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------
def _fmt_params(spec_name: str, params_json: str) -> str:
    spec = get_attack(spec_name)
    params = json.loads(params_json)
    grid = list(spec.paper_grid)
    varying = {k for k in params if len({json.dumps(g.get(k)) for g in grid}) > 1}
    return ", ".join(f"{k}={params[k]:g}" if isinstance(params[k], float) else f"{k}={params[k]}"
                     for k in sorted(varying)) or "study"


def grid_totals(table: pd.DataFrame) -> pd.DataFrame:
    """Whole-grid time per backend setting, each cell extrapolated to the full test set.

    Only the study's attacks, and only cells that every setting ran, are summed, so the totals
    compare like with like; ``default`` is each cell's default backend (without early stop).
    torchattacks has three of the eight attacks and is left out of the totals.
    """
    t = table[(table.backend != "torchattacks") & table.attack.map(lambda a: get_attack(a).in_study)]
    if t.empty:  # e.g. a run of attacks beyond the study's grid only
        return pd.DataFrame(columns=["cells", "seconds", "full_set_seconds"])
    t = t.assign(setting=[f"{b} (early stop)" if es else b for b, es in zip(t.backend, t.early_stop)])
    defaults = {a: get_attack(a).default_backend for a in t.attack.unique()}
    dflt = t[(~t.early_stop) & (t.backend == t.attack.map(defaults))].assign(setting="default")
    t = pd.concat([t, dflt])
    cells = t.groupby("setting")[["attack", "params"]].apply(lambda g: set(map(tuple, g.to_numpy())))
    common = set.intersection(*cells.to_list()) if len(cells) else set()
    keep = t[[(a, p) in common for a, p in zip(t.attack, t.params)]]
    out = keep.groupby("setting").agg(cells=("attack", "size"), seconds=("seconds", "sum"),
                                      full_set_seconds=("full_set_seconds", "sum"))
    return out.sort_values("full_set_seconds", ascending=False)


def markdown(table: pd.DataFrame, meta: dict[str, Any]) -> str:
    """Markdown table of the benchmark rows plus the machine line."""
    lines = [
        f"Machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} threads, device {meta['device']}; "
        f"date {meta['date']}. Model: {meta['run_dir']} ({meta['n_full']} test segments). "
        f"Pass costs per sample at batch {meta['batch_size']}: forward {1e3 * meta['t_f']:.2f} ms, "
        f"forward+backward {1e3 * meta['t_fb']:.2f} ms.",
        "",
        "| attack | params | backend | n | s | samples/s | full set s (extrap.) | floor s | ratio "
        "| pass floor s | ratio | peak MiB | adv acc | mean \\|d\\| | L2 | Linf | L0 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        es = " (early stop)" if r.early_stop else ""
        ratio = f"{r.floor_ratio:.2f}" if r.floor_ratio == r.floor_ratio else "-"
        floor = f"{r.floor_seconds:.1f}" if r.floor_seconds == r.floor_seconds else "-"
        pf = getattr(r, "pass_floor_seconds", float("nan"))
        pr = getattr(r, "pass_floor_ratio", float("nan"))
        pfloor = f"{pf:.1f}" if pf == pf else "-"
        pratio = f"{pr:.2f}" if pr == pr else "-"
        lines.append(
            f"| {r.attack} | {_fmt_params(r.attack, r.params)} | {r.backend}{es} | {r.n} | {r.seconds:.1f} | "
            f"{r.samples_per_s:.3g} | {r.full_set_seconds:,.0f} | {floor} | {ratio} | {pfloor} | {pratio} | {r.peak_mib:,.0f} | "
            f"{r.adv_accuracy:.3f} | {r.mean_abs_delta:.4g} | {r.mean_l2:.3g} | {r.mean_linf:.3g} | {r.mean_l0:,.0f} |"
        )
    tot = grid_totals(table)
    if len(tot) > 1:
        ref = tot.loc["art", "full_set_seconds"] if "art" in tot.index else float("nan")
        lines += ["", f"Whole grid, the {int(tot.cells.iloc[0])} cells every setting ran, each extrapolated "
                  f"linearly to the {meta['n_full']} test segments:", "",
                  "| setting | s measured | full test set s (extrap.) | ART / setting |", "|---|---|---|---|"]
        for name, r in tot.iterrows():
            lines.append(f"| {name} | {r.seconds:,.0f} | {r.full_set_seconds:,.0f} | {ref / r.full_set_seconds:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="trained run directory (e.g. runs/emodb-paper)")
    ap.add_argument("--attacks", default=",".join(STUDY_ATTACKS), help="comma-separated attacks (default: the study's eight)")
    ap.add_argument("--backends", default="torch,art", help="comma-separated: torch, art, torchattacks")
    ap.add_argument("--grid", default="paper", choices=("paper", "quick"))
    ap.add_argument("--n", type=int, default=64, help="seeded test subset size")
    ap.add_argument("--n-art", type=int, default=None, help="smaller subset for the art backend (>= 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--early-stop", action="store_true", help="also run the torch backend with early stop")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/attacks"))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = read_preprocessing(args.run_dir)
    clip = info.clip
    model = load_model(args.run_dir, device=str(device)).eval()
    for p in model.parameters():  # as run_attack runs every backend: input gradients only
        p.requires_grad_(False)
    test = load_subset(args.run_dir, "test")
    n_full = len(test)
    x_all = np.clip(test.x, *clip).astype(np.float32)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    names = [a.strip() for a in args.attacks.split(",") if a.strip()]
    for nm in names:
        if get_attack(nm).input != "features":
            ap.error(f"{nm} attacks the waveform: benchmark it with benchmarks/waveform_first.py "
                     f"(or seradv attack RUN --attacks {nm} --grid standard)")
    rows_dir = args.out / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    costs_path = args.out / f"pass_costs-{args.threads}threads.json"
    if costs_path.exists():  # the rows' floors were priced with these: reuse them with the rows
        costs = read_json(costs_path)
    else:
        costs = measure_pass_costs(model, x_all, args.batch_size, device)
        atomic_write_json(costs_path, costs)
    batch_costs = BatchCosts(model, x_all, device, args.out / f"batch_costs-{args.threads}threads.json")
    print(f"pass costs per sample at batch {args.batch_size}: forward {1e3 * costs['t_f']:.2f} ms, "
          f"forward+backward {1e3 * costs['t_fb']:.2f} ms", flush=True)
    subsets: dict[int, np.ndarray] = {}
    rows = []
    for name in names:
        spec = ATTACKS[name]
        for params in spec.grid(args.grid):
            params = spec.validate(params)
            runs = [(b, False) for b in backends]
            if args.early_stop and "torch" in spec.backends and spec.in_study:  # a setting of the grid
                runs.append(("torch", True))
            for backend, es in runs:
                if backend == "torchattacks" and name not in TORCHATTACKS:
                    continue
                if backend not in ("torchattacks",) and backend not in spec.backends:
                    continue
                n = args.n_art if (backend == "art" and args.n_art) else args.n
                if n not in subsets:
                    subsets[n] = select_subset(test.meta, n, args.seed)
                idx = subsets[n]
                key = row_key(name, params, backend, len(idx), args.seed, es)
                path = rows_dir / f"{key}.json"
                if path.exists():
                    row = read_json(path)
                else:
                    print(f"{name} {_fmt_params(name, json.dumps(params, sort_keys=True))} [{backend}"
                          f"{', early stop' if es else ''}] on {len(idx)} samples ...", flush=True)
                    row = bench_row(model, x_all[idx], test.y[idx], name, params, backend, clip=clip,
                                    batch_size=args.batch_size, seed=args.seed, device=device, costs=costs,
                                    n_full=n_full, early_stop=es, batch_costs=batch_costs)
                    atomic_write_json(path, row)
                row = without_unseen_passes(row)
                print(f"  {row['seconds']:.1f} s, {row['samples_per_s']:.3g} samples/s, adv acc "
                      f"{row['adv_accuracy']:.3f}, mean|d| {row['mean_abs_delta']:.4g}, floor ratio "
                      f"{row['floor_ratio']:.2f}", flush=True)
                rows.append(row)
    table = pd.DataFrame(rows)
    meta = {"machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
            "date": date.today().isoformat(), "run_dir": str(args.run_dir), "n_full": n_full,
            "batch_size": args.batch_size, "python": sys.version.split()[0], "command": " ".join(sys.argv), **costs}
    table.to_csv(args.out / "attacks.csv", index=False)
    atomic_write_json(args.out / "meta.json", meta)
    atomic_write_text(args.out / "attacks.md", markdown(table, meta))
    print(markdown(table, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
