"""The ``seradv`` command line: a thin layer over :mod:`seradv.pipeline` and :mod:`seradv.grid.run`.

Verbs: ``manifest``, ``prepare``, ``train``, ``evaluate``, ``attack``, ``report``, ``run``. Every error that seradv
raises on purpose (and every file-system error) is printed as one clear line (exit code 2), never
as a traceback; options are checked before any work starts or any file is written.

Output: tables and messages on stdout, progress and errors on stderr. On a terminal tables fit
its width and progress shows as bars; in a pipe or a log file tables are printed at full width
and progress as plain lines (:mod:`seradv.progress`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from seradv.errors import ParameterError, RunDirError, SeradvError

# The seradv modules behind each command (torch, pandas, the attacks, the report) are imported
# inside the command functions, so that `seradv --help` and option errors answer fast.

LOG_WIDTH = 10_000
"""Console width when the output is not a terminal: tables and lines are never cut or wrapped."""


PRECISION_HELP = "fp32 (the study's), bf16 or fp16 (CUDA only): the precision of the model's forward passes"


def _console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr): the terminal's width, or :data:`LOG_WIDTH` in a pipe or file."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return Console(stderr=stderr, width=None if tty else LOG_WIDTH)


console = _console()
err_console = _console(stderr=True)


def _error(message: str) -> None:
    """``error: <message>`` on one line of stderr."""
    one_line = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    err_console.print(f"[bold red]error:[/] {escape(one_line)}", soft_wrap=True, highlight=False)


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    names = [n for n in (exc.filename, exc.filename2) if n]
    return f"{what}: {' -> '.join(map(str, names))}" if names else what


class _Group(TyperGroup):
    """Runs a command and turns seradv's errors into one line (exit code 2), not a traceback."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except SeradvError as exc:
            _error(str(exc))
            raise typer.Exit(2) from None
        except OSError as exc:  # disk full, permission denied, a path that is a file...
            _error(_os_error(exc))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished work is saved; run the same command again to resume")
            raise typer.Exit(130) from None


app = typer.Typer(
    name="seradv",
    cls=_Group,
    help="Adversarial robustness of speech emotion recognition: corpora -> features -> "
    "CNN-LSTM -> attacks -> per-language and per-gender results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version() -> str:
    """The installed seradv version (package metadata), else ``seradv.__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("seradv")
    except PackageNotFoundError:
        from seradv import __version__

        return __version__


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("seradv")
    for h in [h for h in logger.handlers if getattr(h, "_seradv_cli", False) or isinstance(h, RichHandler)]:
        logger.removeHandler(h)  # a handler of an earlier invocation (tests) holds an old console
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False, show_time=False)
    else:  # a log file or pipe: plain lines, never padded to the console's width
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._seradv_cli = True  # type: ignore[attr-defined]
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"seradv {version()}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every step."),
    show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print the seradv version and exit."),
) -> None:
    global console, err_console
    console, err_console = _console(), _console(stderr=True)  # the streams of this invocation
    _setup_logging(verbose)


def _table(df, title: str = "") -> Table:
    t = Table(title=title or None)
    for c in df.columns:
        t.add_column(escape(str(c)))
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.3f}" if isinstance(v, float) else escape(str(v)) for v in row])
    return t


# ------------------------------------------------------------------------------ checks


def _at_least(option: str, value: Optional[int], low: int, what: str) -> None:
    if value is not None and value < low:
        raise ParameterError(f"{option} {value} must be {what}")


def _resolve_device(device: str, option: str = "--device") -> str:
    """``device`` checked now (syntax and availability), ``auto`` resolved; e.g. ``"cuda:0"``."""
    import re

    if not re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", device or ""):
        raise ParameterError(f"{option} {device!r} is not a device; use cpu, cuda, cuda:N (N = GPU index) or auto")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParameterError(f"{option} {device}: CUDA is not available on this machine; use {option} cpu (or auto)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ParameterError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA "
                                 f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParameterError(f"{option} mps: Apple's MPS is not available on this machine; use {option} cpu")
    return device


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.exists():
        raise RunDirError(f"run directory {run_dir} does not exist; create one with "
                          f"`seradv prepare CORPUS -o {run_dir}`")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory")


def _check_parents(path: Path, option: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ParameterError(f"{option} {path}: {parent} is a file, not a folder")
            return


def _check_config_file(config: Optional[Path]) -> None:
    if config is not None and not config.is_file():
        from seradv.errors import ConfigError

        what = "is a folder, not a file" if config.is_dir() else "does not exist"
        raise ConfigError(f"config file {config} {what}; pass a YAML file with --config (every key optional)")


# ------------------------------------------------------------------------------ commands


@app.command()
def manifest(
    corpus: str = typer.Argument(..., help="Corpus name: emodb, emovo, ravdess, synthetic or a registered one."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder holding the corpus audio (searched recursively)."),
    output: Path = typer.Option(..., "--output", "-o", help="CSV file to write the corpus table to."),
) -> None:
    """Write the corpus table (one row per utterance); skipped files go to OUTPUT with .skipped.csv as suffix (m.csv -> m.skipped.csv)."""
    from seradv.corpora import load_corpus
    from seradv.progress import track

    if output.is_dir():
        raise ParameterError(f"--output {output} is a folder; give a CSV file name, e.g. {output / (corpus + '.csv')}")
    _check_parents(output, "--output")
    m = load_corpus(corpus, data_dir, progress=lambda files: track(files, "reading"))
    output.parent.mkdir(parents=True, exist_ok=True)
    m.table.to_csv(output, index=False)
    skipped_path = output.with_suffix(".skipped.csv")
    m.skipped.to_csv(skipped_path, index=False)
    for r in m.skipped.itertuples():
        err_console.print(f"[yellow]skipped[/] {escape(str(r.path))}: {escape(str(r.reason))}", soft_wrap=True)
    console.print(f"{corpus}: {escape(str(m.summary()))}")
    console.print(f"wrote {output} ({len(m.table)} rows) and {skipped_path} ({len(m.skipped)} rows)")


def _build_config(config: Optional[Path], **overrides):
    from seradv.config import RunConfig, load_config

    cfg = load_config(config) if config else RunConfig()
    changes = {k: v for k, v in overrides.items() if v is not None}
    return cfg.replace(**changes) if changes else cfg


@app.command()
def prepare(
    corpus: str = typer.Argument(..., help="Corpus name."),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory to create."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Corpus folder."),
    split: Optional[str] = typer.Option(None, "--split", help="speaker (default: one speaker per gender held out), speaker_cv (speaker-fold cross-validation: every speaker tested once) or paper (the study's leaky split)."),
    folds: Optional[int] = typer.Option(None, "--folds", help="Folds of --split speaker_cv (default: the corpus's, e.g. EmoDB 5, EMOVO 3, RAVDESS 4)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (every key optional)."),
    max_per_class: Optional[int] = typer.Option(None, "--max-per-class", help="At most N utterances per speaker and emotion (quick runs)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature cache folder (default $SERADV_CACHE_DIR or ~/.cache/seradv)."),
) -> None:
    """Corpus -> split -> segments -> log-Mel features -> standardizer, into a run directory."""
    from seradv.pipeline import prepare_run

    _check_config_file(config)
    if output.exists() and not output.is_dir():
        raise RunDirError(f"--output {output} is a file; give a folder for the run directory")
    _check_parents(output, "--output")
    cfg = _build_config(
        config, name=output.name or "run", **{"data.corpus": corpus,
        "data.data_dir": str(data_dir) if data_dir else None, "split.kind": split, "split.folds": folds,
        "data.max_per_class": max_per_class, "cache_dir": str(cache_dir) if cache_dir else None},
    )
    info = prepare_run(cfg, output)
    import pandas as pd

    console.print(_table(pd.DataFrame(info.counts), f"{corpus}: split '{info.split}'"))
    if info.leaky:
        err_console.print(f"[bold red]{escape(info.leak_note)}[/]", soft_wrap=True)
    console.print(f"clip values {info.clip_values}; {info.n_skipped} files skipped; prepared {output}")


@app.command()
def train(
    run_dir: Path = typer.Argument(..., help="A prepared run directory."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the maximum number of epochs (saved in config.yaml)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (saved in config.yaml)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads (saved in config.yaml)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP + " (saved in config.yaml)."),
) -> None:
    """Train the run's model (resumes an interrupted training). Options are checked before anything is written."""
    from seradv.pipeline import train_run
    from seradv.rundir import load_run_config

    _check_run_dir(run_dir)
    _at_least("--epochs", epochs, 1, "a positive integer")
    _at_least("--threads", threads, 1, "a positive integer (or leave it out: torch's default)")
    if device is not None:
        _resolve_device(device)
    overrides = {k: v for k, v in {"epochs": epochs, "device": device, "threads": threads,
                                   "precision": precision}.items() if v is not None}
    if overrides:  # the changed config must be valid before train_run saves it
        load_run_config(run_dir).replace(**{f"train.{k}": v for k, v in overrides.items()})
    else:
        saved = load_run_config(run_dir).train.device
        try:
            _resolve_device(saved)
        except ParameterError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise ParameterError(f"{run_dir / 'config.yaml'}: train.device={saved!r} cannot be used ({reason}); "
                                 "pass another with --device, e.g. --device cpu") from None
    meta = train_run(run_dir, train_overrides=overrides or None)
    for k, m in enumerate(meta.get("folds", []), start=1):
        console.print(f"fold {k}: {m['epochs_run']} epochs, best epoch {m['best_epoch']}, {m['train_seconds']:.0f} s")
    if "folds" in meta:
        console.print(f"model {meta['model']} ({meta['parameters']:,} parameters): trained {len(meta['folds'])} "
                      f"folds; saved {run_dir / 'folds'}/fold-*/model.safetensors")
        return
    console.print(
        f"model {meta['model']} ({meta['parameters']:,} parameters): {meta['epochs_run']} epochs, "
        f"best epoch {meta['best_epoch']}, {meta['train_seconds']:.0f} s; saved {run_dir / 'model.safetensors'}"
    )


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory with a trained model."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP + "; default: the run's train.precision."),
) -> None:
    """Clean test metrics (accuracy, UAR, macro-F1, confusion) per corpus/language and gender."""
    from seradv.pipeline import evaluate_run
    from seradv.rundir import METRICS_CSV, METRICS_JSON, is_cv_run, read_preprocessing

    _check_run_dir(run_dir)
    dev = _resolve_device(device)
    table = evaluate_run(run_dir, device=dev, precision=precision)
    if is_cv_run(run_dir):
        shown = table.drop(columns=["leaky", "ci_method"], errors="ignore")
        console.print(_table(shown, "clean test metrics (speaker_cv: folds pooled, CIs over speakers; one row per fold)"))
        console.print(f"wrote {run_dir / METRICS_CSV} and {run_dir / METRICS_JSON} (and each fold's)")
        return
    info = read_preprocessing(run_dir)
    console.print(_table(table.drop(columns=["leaky"]), f"clean test metrics ({info.split} split)"))
    if info.leaky:
        err_console.print(f"[bold red]{escape(info.leak_note)}[/]", soft_wrap=True)
    console.print(f"wrote {run_dir / METRICS_CSV} and {run_dir / METRICS_JSON}")


def _format_params(params: dict) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items()) or "(the defaults)"


def describe_attacks(names: Optional[list[str]] = None) -> str:
    """Every registered attack (or ``names``): paper, kind, norm, parameters with defaults and
    ranges, backends (and the default one), and its grids (``paper`` and ``quick`` for the
    feature-space attacks, ``quick`` and ``standard`` for the waveform attacks)."""
    from seradv.attacks import ATTACKS, STUDY_ATTACKS, get_attack

    specs = [get_attack(n) for n in names] if names else list(ATTACKS.values())
    blocks = []
    for spec in specs:
        lines = spec.describe().splitlines()
        lines[0] += "  (in the study)" if spec.name in STUDY_ATTACKS else "  (not in the study)"
        lines = [ln if not ln.startswith("  backends:") else f"{ln} (default {spec.default_backend})" for ln in lines]
        for which in spec.grid_names:
            grid = spec.grid(which)
            lines.append(f"  {which} grid ({len(grid)} parameter set{'s' if len(grid) != 1 else ''}):")
            lines += [f"    {_format_params(ps)}" for ps in grid]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _run_grid_takes(name: str) -> bool:
    import inspect

    from seradv.grid.run import run_grid

    return name in inspect.signature(run_grid).parameters


@app.command()
def attack(
    run_dir: Optional[Path] = typer.Argument(None, help="A run directory with a trained model (not needed with --list)."),
    grid: str = typer.Option("paper", "--grid", help="paper (the study's parameters), quick (a small grid) or standard (the waveform attacks' budgets); attacks without that grid are skipped."),
    attacks: Optional[str] = typer.Option(None, "--attacks", help="Comma-separated attack names (default: the study's eight); see --list."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Attack a seeded, stratified subset of N test segments."),
    per_speaker: Optional[int] = typer.Option(None, "--per-speaker", help="Instead of --limit: N seeded segments of every test speaker (all of a speaker's where fewer; every fold of a speaker_cv run)."),
    seed: int = typer.Option(0, "--seed", help="Seed (>= 0) of the subset and of every random choice of the attacks."),
    backend: Optional[str] = typer.Option(None, "--backend", help="art (the study's toolbox) or torch (seradv's fast batched code); default: each attack's fastest backend that matches ART."),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per forward/backward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    no_examples: bool = typer.Option(False, "--no-examples", help="Do not save the perturbations (npy)."),
    early_stop: bool = typer.Option(False, "--early-stop", help="Stop iterating on samples already misclassified (faster; smaller perturbations; recorded as its own setting)."),
    where: Optional[str] = typer.Option(None, "--where", help="Only the grid's parameter sets with these values, e.g. 'theta=1' or 'th=1,max_iter=20'."),
    params: Optional[str] = typer.Option(None, "--params", help="Instead of a grid: one parameter set for each chosen attack, e.g. 'eps=0.3,max_iter=50' (other parameters at their defaults)."),
    list_only: bool = typer.Option(False, "--list", help="List the registered attacks (parameters, defaults, backends, paper and quick grids), then exit; needs no run directory."),
    executor: str = typer.Option("local", "--executor", help="local (cells one after another here) or ray (each cell a Ray task; needs the ray package, the extra seradv\\[ray])."),
    address: Optional[str] = typer.Option(None, "--address", help="With --executor ray: the cluster to join ('auto' or ray://host:port); default: a local Ray instance."),
    task_cpus: int = typer.Option(1, "--task-cpus", help="With --executor ray: CPUs (and torch threads) per cell."),
    precision: str = typer.Option("fp32", "--precision", help=PRECISION_HELP + " (torch backends only; a non-fp32 cell is its own cell)."),
) -> None:
    """Run an attack grid on the test set; resumable (finished cells are reused)."""
    names = [a.strip() for a in attacks.split(",") if a.strip()] if attacks else None
    if attacks is not None and not names:
        raise ParameterError(f"--attacks {attacks!r} names no attack; see `seradv attack --list`")
    if list_only:
        console.print(escape(describe_attacks(names)), highlight=False)
        return
    if run_dir is None:
        raise RunDirError("seradv attack needs RUN_DIR, a run directory with a trained model "
                          "(or --list to see the attacks)")
    from seradv.grid.plan import check_grid_name

    check_grid_name(grid, "--grid ")
    _at_least("--seed", seed, 0, "an integer >= 0")
    _at_least("--limit", limit, 1, "a positive number of test segments (or leave it out: all of them)")
    _at_least("--per-speaker", per_speaker, 1, "a positive number of segments per test speaker")
    if limit is not None and per_speaker is not None:
        raise ParameterError("give --limit (segments in all) or --per-speaker (segments per speaker), not both")
    _at_least("--batch-size", batch_size, 1, "a positive integer")
    _check_run_dir(run_dir)
    dev = _resolve_device(device)
    extra: dict[str, Any] = {}
    if params is not None:
        if not _run_grid_takes("params"):
            raise ParameterError("--params is not supported by this version of seradv.grid.run.run_grid")
        extra["params"] = params
    _at_least("--task-cpus", task_cpus, 1, "a positive integer")
    from seradv.grid.executors import get_executor
    from seradv.grid.run import run_grid
    from seradv.rundir import RESULTS_CSV, TRUST_CSV, attacks_dir

    runner = get_executor(executor, address=address, num_cpus=task_cpus)
    if per_speaker is not None:
        extra["per_speaker"] = per_speaker
    results = run_grid(run_dir, attacks=names, grid=grid, limit=limit, seed=seed, backend=backend,
                       batch_size=batch_size, device=dev, save_examples=not no_examples,
                       early_stop=early_stop, where=where, executor=runner, precision=precision, **extra)
    _print_results(results)
    console.print(f"wrote {attacks_dir(run_dir) / RESULTS_CSV} (and .parquet), trust checks in "
                  f"{attacks_dir(run_dir) / TRUST_CSV}")


def _print_results(results) -> None:
    if results.empty:
        console.print("no results")
        return
    cols = ["attack", "params", "language", "group", "n", "clean_accuracy", "adv_accuracy", "mean_abs_delta", "seconds"]
    pivot = results[results["group"] == "All"][[c for c in cols if c in results.columns]]
    console.print(_table(pivot.drop(columns=["group"]), "accuracy under attack (All)"))


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory with a trained model (one fold's folder for a speaker_cv run)."),
    files: list[Path] = typer.Argument(..., help="Audio files (any format libsndfile reads, mono or stereo, any sample rate)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the predictions: FILE.csv (per file; per segment in FILE.segments.csv) or FILE.json."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    batch_size: int = typer.Option(64, "--batch-size", help="Segments per forward pass."),
) -> None:
    """The emotion the run's model assigns to each file: its 3 s segments cut as in training, per segment and per file (highest mean probability)."""
    from seradv.predict import check_output, predict_files, write_prediction

    _check_run_dir(run_dir)
    _at_least("--batch-size", batch_size, 1, "a positive number of segments")
    if output is not None:
        check_output(output)
        _check_parents(output, "--output")
    pred = predict_files(run_dir, files, device=_resolve_device(device), batch_size=batch_size)
    for _, message in pred.errors:
        _error(message)
    if len(pred.files):
        console.print(_table(pred.segments, "per segment"))
        console.print(_table(pred.files, "per file (class of the highest mean probability over its segments)"))
    if output is not None:
        written = write_prediction(pred, output, run_dir=run_dir)
        console.print("wrote " + " and ".join(str(p) for p in written))
    if pred.errors:
        err_console.print(f"{len(pred.errors)} of {len(pred.errors) + len(pred.files)} files could not be used")
        raise typer.Exit(1)


@app.command()
def realize(
    run_dir: Path = typer.Argument(..., help="A run directory with finished feature-space attack cells (saved perturbations)."),
    method: str = typer.Option("griffinlim", "--method", help="griffinlim (the report's rendering) or phase (the clean segment's phase kept)."),
    attacks: Optional[str] = typer.Option(None, "--attacks", help="Comma-separated attack names (default: every attacked one)."),
    limit: int = typer.Option(64, "--limit", help="At most N attacked, clean-correct segments per cell (seeded)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the segments and of Griffin-Lim's start."),
    n_iter: int = typer.Option(32, "--n-iter", help="Griffin-Lim iterations."),
) -> None:
    """Realized fooling rates: each cell's adversarial log-Mel matrices rendered as audio, written as 16-bit WAVs, read back and classified again."""
    from seradv.attacks.waveform.render import RENDER_METHODS
    from seradv.grid.realized import REALIZED_CSV, realize_run
    from seradv.rundir import attacks_dir

    _check_run_dir(run_dir)
    if method not in RENDER_METHODS:
        raise ParameterError(f"--method {method!r} must be one of {', '.join(RENDER_METHODS)}")
    _at_least("--limit", limit, 1, "a positive number of segments per cell")
    _at_least("--seed", seed, 0, "an integer >= 0")
    _at_least("--n-iter", n_iter, 1, "a positive integer")
    names = [a.strip() for a in attacks.split(",") if a.strip()] if attacks else None
    table = realize_run(run_dir, attacks=names, method=method, limit=limit, seed=seed, n_iter=n_iter)
    if table.empty:
        console.print("no cell with saved perturbations to realize")
        return
    console.print(_table(table, "feature-space vs realized fooling rates (on the written 16-bit files)"))
    console.print(f"wrote {attacks_dir(run_dir) / REALIZED_CSV}")


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run directories; several make one cross-language report."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default RUN_DIR/report; for several runs <parent>/report-<a>+<b>)."),
    examples: int = typer.Option(3, "--examples", help="Attacks shown as spectrograms and audio per run (0: none)."),
    no_audio: bool = typer.Option(False, "--no-audio", help="Skip the Griffin-Lim audio renderings."),
    boot: int = typer.Option(2000, "--boot", help="Bootstrap resamples of every confidence interval."),
    seed: int = typer.Option(0, "--seed", help="Seed (>= 0) of the bootstrap, the permutation tests and the audio phase."),
    link_images: bool = typer.Option(False, "--link-images", help="Link figures/ from report.html instead of embedding them."),
) -> None:
    """Write report.html (self-contained) and report.md: tables, plots, audio, statistics."""
    from seradv.report import build_report

    _at_least("--examples", examples, 0, ">= 0 (0: no examples)")
    _at_least("--boot", boot, 1, "a positive number of resamples")
    _at_least("--seed", seed, 0, "an integer >= 0")
    for d in run_dirs:
        _check_run_dir(d)
    path = build_report(run_dirs, out, n_examples=examples, audio=not no_audio, n_boot=boot, seed=seed,
                        embed_images=not link_images)
    console.print(f"report: {path.resolve()}")
    console.print(f"        {path.with_suffix('.md').resolve()}")


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; default: the small synthetic demo."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default ./runs/<name>)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP + " of training, evaluation and attacks (sets train.precision and attack.precision)."),
) -> None:
    """Every stage end to end. With no arguments: the demo on the built-in synthetic corpus.

    Each stage prints a start and an end line to stderr; progress shows as bars on a terminal, as plain lines in a pipe or log (SERADV_PROGRESS=0: no bars).
    """
    from seradv.config import load_config
    from seradv.pipeline import demo_config, run as run_all
    from seradv.rundir import METRICS_CSV, RESULTS_CSV, attacks_dir

    _check_config_file(config)
    if out is not None and out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file; give a folder for the run directory")
    if out is not None:
        _check_parents(out, "--out")
    cfg = load_config(config) if config else demo_config()
    if precision is not None:
        cfg = cfg.replace(**{"train.precision": precision, "attack.precision": precision})
    run_dir = run_all(cfg, out=out)
    import pandas as pd

    metrics = pd.read_csv(run_dir / METRICS_CSV)
    console.print(_table(metrics.drop(columns=["leaky"]), "clean test metrics"))
    results_path = attacks_dir(run_dir) / RESULTS_CSV
    if results_path.exists():
        _print_results(pd.read_csv(results_path))
    console.print(f"[bold green]done[/]: outputs in {escape(str(run_dir.resolve()))}")


def main() -> None:
    """Console-script entry point (errors are one line: see the command group)."""
    app()


if __name__ == "__main__":
    main()
