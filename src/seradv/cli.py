"""The ``seradv`` command line: a thin layer over :mod:`seradv.pipeline`.

Verbs: ``manifest``, ``prepare``, ``train``, ``evaluate``, ``attack``, ``report``, ``run``. Every error that seradv
raises on purpose is printed as one clear line (exit code 2), never as a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from seradv.errors import SeradvError

app = typer.Typer(
    name="seradv",
    help="Adversarial robustness of speech emotion recognition: corpora -> features -> "
    "CNN-LSTM -> attacks -> per-language and per-gender results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("seradv")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        handler = RichHandler(console=err_console, show_path=False, show_time=False)
        handler.setLevel(logging.INFO if verbose else logging.WARNING)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every step.")) -> None:
    _setup_logging(verbose)


def _table(df, title: str = "") -> Table:
    t = Table(title=title or None)
    for c in df.columns:
        t.add_column(str(c))
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    return t


@app.command()
def manifest(
    corpus: str = typer.Argument(..., help="Corpus name: emodb, emovo, ravdess, synthetic or a registered one."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", "-d", help="Folder holding the corpus audio (searched recursively)."),
    output: Path = typer.Option(..., "--output", "-o", help="CSV file to write the corpus table to."),
) -> None:
    """Write the corpus table (one row per utterance); skipped files go to <output>.skipped.csv."""
    from seradv.corpora import load_corpus
    from seradv.progress import track

    m = load_corpus(corpus, data_dir, progress=lambda files: track(files, "reading"))
    output.parent.mkdir(parents=True, exist_ok=True)
    m.table.to_csv(output, index=False)
    skipped_path = output.with_suffix(".skipped.csv")
    m.skipped.to_csv(skipped_path, index=False)
    for r in m.skipped.itertuples():
        err_console.print(f"[yellow]skipped[/] {r.path}: {r.reason}")
    console.print(f"{corpus}: {m.summary()}")
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
    split: Optional[str] = typer.Option(None, "--split", help="speaker (default, leakage-free) or paper (the study's leaky split)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (every key optional)."),
    max_per_class: Optional[int] = typer.Option(None, "--max-per-class", help="At most N utterances per speaker and emotion (quick runs)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature cache folder (default $SERADV_CACHE_DIR or ~/.cache/seradv)."),
) -> None:
    """Corpus -> split -> segments -> log-Mel features -> standardizer, into a run directory."""
    from seradv.pipeline import prepare_run

    cfg = _build_config(
        config, name=output.name or "run", **{"data.corpus": corpus,
        "data.data_dir": str(data_dir) if data_dir else None, "split.kind": split,
        "data.max_per_class": max_per_class, "cache_dir": str(cache_dir) if cache_dir else None},
    )
    info = prepare_run(cfg, output)
    import pandas as pd

    console.print(_table(pd.DataFrame(info["counts"]), f"{corpus}: split '{info['split']}'"))
    if info["leaky"]:
        err_console.print(f"[bold red]{info['leak_note']}[/]")
    console.print(f"clip values {info['clip_values']}; {info['n_skipped']} files skipped; prepared {output}")


@app.command()
def train(
    run_dir: Path = typer.Argument(..., help="A prepared run directory."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the maximum number of epochs."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads."),
) -> None:
    """Train the run's model (resumes an interrupted training)."""
    from seradv.pipeline import train_run

    overrides = {k: v for k, v in {"epochs": epochs, "device": device, "threads": threads}.items() if v is not None}
    meta = train_run(run_dir, train_overrides=overrides or None)
    console.print(
        f"model {meta['model']} ({meta['parameters']:,} parameters): {meta['epochs_run']} epochs, "
        f"best epoch {meta['best_epoch']}, {meta['train_seconds']:.0f} s; saved {run_dir / 'model.safetensors'}"
    )


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory with a trained model."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
) -> None:
    """Clean test metrics (accuracy, UAR, macro-F1, confusion) per corpus/language and gender."""
    from seradv.dataset import read_preprocessing
    from seradv.pipeline import evaluate_run

    table = evaluate_run(run_dir, device=device)
    info = read_preprocessing(run_dir)
    console.print(_table(table.drop(columns=["leaky"]), f"clean test metrics ({info['split']} split)"))
    if info["leaky"]:
        err_console.print(f"[bold red]{info['leak_note']}[/]")
    console.print(f"wrote {run_dir / 'metrics.csv'} and {run_dir / 'metrics.json'}")


@app.command()
def attack(
    run_dir: Path = typer.Argument(..., help="A run directory with a trained model."),
    grid: str = typer.Option("paper", "--grid", help="paper (the study's parameters) or quick (a small grid)."),
    attacks: Optional[str] = typer.Option(None, "--attacks", help="Comma-separated attack names (default: the study's eight)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Attack a seeded, stratified subset of N test segments."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subset and of every random choice of the attacks."),
    backend: Optional[str] = typer.Option(None, "--backend", help="art (the study's toolbox) or torch (seradv's fast batched code); default: each attack's fastest backend that matches ART."),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per forward/backward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
    no_examples: bool = typer.Option(False, "--no-examples", help="Do not save the perturbations (npy)."),
    early_stop: bool = typer.Option(False, "--early-stop", help="Stop iterating on samples already misclassified (faster; smaller perturbations; recorded as its own setting)."),
    where: Optional[str] = typer.Option(None, "--where", help="Only the grid's parameter sets with these values, e.g. 'theta=1' or 'th=1,max_iter=20'."),
    list_only: bool = typer.Option(False, "--list", help="List the registered attacks and their grids, then exit."),
) -> None:
    """Run an attack grid on the test set; resumable (finished cells are reused)."""
    from seradv.robustness import run_grid

    if list_only:
        from seradv.attacks import ATTACKS

        for spec in ATTACKS.values():
            console.print(spec.describe())
        return
    names = [a.strip() for a in attacks.split(",") if a.strip()] if attacks else None
    results = run_grid(run_dir, attacks=names, grid=grid, limit=limit, seed=seed, backend=backend,
                       batch_size=batch_size, device=device, save_examples=not no_examples,
                       early_stop=early_stop, where=where)
    _print_results(results)
    console.print(f"wrote {run_dir / 'attacks' / 'results.csv'} (and .parquet), trust checks in "
                  f"{run_dir / 'attacks' / 'trust.csv'}")


def _print_results(results) -> None:
    if results.empty:
        console.print("no results")
        return
    cols = ["attack", "params", "language", "group", "n", "clean_accuracy", "adv_accuracy", "mean_abs_delta", "seconds"]
    pivot = results[results["group"] == "All"][[c for c in cols if c in results.columns]]
    console.print(_table(pivot.drop(columns=["group"]), "accuracy under attack (All)"))


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run directories; several make one cross-language report."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default RUN_DIR/report; for several runs <parent>/report-<a>+<b>)."),
    examples: int = typer.Option(3, "--examples", help="Attacks shown as spectrograms and audio per run (0: none)."),
    no_audio: bool = typer.Option(False, "--no-audio", help="Skip the Griffin-Lim audio renderings."),
    boot: int = typer.Option(2000, "--boot", help="Bootstrap resamples of every confidence interval."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap, the permutation tests and the audio phase."),
    link_images: bool = typer.Option(False, "--link-images", help="Link figures/ from report.html instead of embedding them."),
) -> None:
    """Write report.html (self-contained) and report.md: tables, plots, audio, statistics."""
    from seradv.errors import ParameterError
    from seradv.report import build_report

    if examples < 0 or boot < 1:
        raise ParameterError(f"--examples={examples} must be >= 0 and --boot={boot} >= 1")
    path = build_report(run_dirs, out, n_examples=examples, audio=not no_audio, n_boot=boot, seed=seed,
                        embed_images=not link_images)
    console.print(f"report: {path.resolve()}")
    console.print(f"        {path.with_suffix('.md').resolve()}")


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; default: the small synthetic demo."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default ./runs/<name>)."),
) -> None:
    """Every stage end to end. With no arguments: the demo on the built-in synthetic corpus."""
    from seradv.config import load_config
    from seradv.pipeline import demo_config, run as run_all

    cfg = load_config(config) if config else demo_config()
    run_dir = run_all(cfg, out=out)
    import pandas as pd

    metrics = pd.read_csv(run_dir / "metrics.csv")
    console.print(_table(metrics.drop(columns=["leaky"]), "clean test metrics"))
    results_path = run_dir / "attacks" / "results.csv"
    if results_path.exists():
        _print_results(pd.read_csv(results_path))
    console.print(f"[bold green]done[/]: outputs in {run_dir.resolve()}")


def main() -> None:
    """Console-script entry point: clear one-line errors instead of tracebacks."""
    try:
        app()
    except SeradvError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished work is saved; run the same command again to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
