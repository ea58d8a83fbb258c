"""Build the robustness report of one or several run directories.

:func:`build_report` writes, into the report folder (``RUN_DIR/report/`` by default)::

    report.html     self-contained page (inline CSS, images embedded, no script, no network)
    report.md       the same tables, figures linked from figures/
    figures/*.png   matplotlib figures
    audio/*.wav     Griffin-Lim renderings of a few original and adversarial examples
    stats/*.csv     every number of the report's tables, unrounded

It loads the runs (:mod:`seradv.report.data`), computes the statistics
(:mod:`seradv.report.analysis`) and the examples (:mod:`seradv.report.examples`), assembles the
sections (:mod:`seradv.report.sections`), draws the figures they show, and renders one document
model to Markdown and HTML (:mod:`seradv.report.render`). Order of the report: a summary first
(one figure of robust accuracy, attack x language x gender, and the sentences that answer the
study's questions), then the data split (leaky or not) and the models with their training
details, clean performance, an overview of all attacks, languages compared within each gender,
where the perturbations concentrate (per Mel band and over time), one
section per attack laid out like the study's tables (SPEC.md) with CIs, gender and corpus gaps
and their tests, examples to look at and listen to, the trust checks, and how the statistics
were made.

The headline everywhere is the **robust accuracy** (:func:`seradv.grid.results.robust_flags`)
with its n and its 95 % interval; the study's "accuracy on adversarial examples" is a
labelled secondary column. Gender and corpus comparisons are comparisons of speakers
(:mod:`seradv.stats`).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from seradv.errors import RunDirError
from seradv import stats
from seradv.report import analysis
from seradv.report.data import load_runs
from seradv.report.examples import compute_examples
from seradv.report.render import Heading, Para, to_html, to_markdown
from seradv.report.sections import Section
from seradv.report.sections.attacks import attack_sections
from seradv.report.sections.clean import clean_section
from seradv.report.sections.examples import examples_section
from seradv.report.sections.methods import methods_section
from seradv.report.sections.overview import overview_section
from seradv.report.sections.defences import defence_section
from seradv.report.sections.realized import realized_frame, realized_section
from seradv.report.sections.runs import runs_section
from seradv.report.sections.summary import (gender_languages_section, perturbation_section, summary_section,
                                            summary_sentences)
from seradv.report.sections.trust import trust_section

log = logging.getLogger(__name__)

__all__ = ["build_report"]


def _default_out(run_dirs: list[Path]) -> Path:
    if len(run_dirs) == 1:
        return run_dirs[0] / "report"
    return run_dirs[0].parent / ("report-" + "+".join(d.name for d in run_dirs))


def _prepare_out(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for sub, pattern in (("figures", "*.png"), ("audio", "*.wav"), ("stats", "*.csv")):
        d = out / sub
        if d.is_dir():
            for f in d.glob(pattern):  # only what an earlier build wrote
                f.unlink()
        d.mkdir(exist_ok=True)


def build_report(
    run_dirs,
    out: str | Path | None = None,
    *,
    n_examples: int = 3,
    audio: bool = True,
    n_boot: int = stats.N_BOOT,
    seed: int = 0,
    embed_images: bool = True,
) -> Path:
    """Write the report of one or several run directories; returns the path of ``report.html``.

    Parameters
    ----------
    run_dirs : path or list of paths
        Run directories (prepared, trained and evaluated; attack results optional). Several
        runs (e.g. EmoDB, EMOVO, RAVDESS) make one cross-language report.
    out : path, optional
        Report folder; default ``RUN_DIR/report`` for one run, ``<parent>/report-<a>+<b>`` for several.
    n_examples : int
        Attacks shown as spectrograms and audio per run (0: none).
    audio : bool
        Render the examples as wav files (Griffin-Lim; about a second each).
    n_boot : int
        Bootstrap resamples for every CI.
    seed : int
        Seed of the bootstrap, the permutation tests and the Griffin-Lim phase.
    embed_images : bool
        Embed the figures in report.html (base64) rather than linking figures/.
    """
    t0 = time.perf_counter()
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise RunDirError("no run directory given")
    runs = load_runs(run_dirs)
    out = Path(out) if out is not None else _default_out(run_dirs)
    _prepare_out(out)

    table = analysis.attack_stats(runs, n_boot=n_boot, seed=seed)
    gaps_g = analysis.gender_gaps(runs, table, n_boot=n_boot, seed=seed) if not table.empty else pd.DataFrame()
    gaps_c = analysis.corpus_gaps(runs, table, n_boot=n_boot, seed=seed) if not table.empty else pd.DataFrame()

    names = ", ".join(r.name for r in runs)
    try:
        ver = version("seradv")
    except PackageNotFoundError:
        ver = "?"
    title_block = Section([Heading(1, f"Robustness report: {names}", anchor="top")])
    intro = Section([Para(f"Made by seradv {ver} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from "
                          f"{', '.join(str(d) for d in run_dirs)}. The headline is the robust accuracy (correct "
                          f"before the attack and never fooled by it), given with its n and its 95 % confidence "
                          f"interval in brackets (over speakers or utterances, see the last section); the study's "
                          f"accuracy on adversarial examples is a labelled secondary column. Every table is also "
                          f"in stats/*.csv unrounded.")])
    clean, clean_frames = clean_section(runs, n_boot, seed)
    if table.empty:
        attacks, strongest = Section([]), pd.DataFrame()
    else:
        attacks, strongest = attack_sections(runs, table, gaps_g, gaps_c)
    chosen = analysis.summary_series(strongest)
    grid = analysis.summary_grid(table, chosen)
    gaps_cg = analysis.gender_corpus_gaps(runs, table, chosen, n_boot=n_boot, seed=seed)
    profiles = analysis.perturbation_profiles(runs, chosen)
    details = analysis.training_details(runs)
    summary = summary_section(runs, grid, summary_sentences(runs, chosen, gaps_g, gaps_c, gaps_cg))
    examples = compute_examples(runs, table, out, n_examples=n_examples, audio=audio, seed=seed)
    realized = realized_frame(runs)
    sections = [title_block, summary, intro, runs_section(runs, details, {r.name: analysis.fold_details(r) for r in runs}), clean, overview_section(runs, strongest),
                gender_languages_section(gaps_cg), perturbation_section(profiles), defence_section(runs, table), attacks,
                examples_section(examples), realized_section(realized), trust_section(runs), methods_section(n_boot, seed)]
    for section in sections:
        for figure in section.figures:
            figure.draw(out)
    blocks = [b for section in sections for b in section.blocks]

    pd.concat(clean_frames, ignore_index=True).to_csv(out / "stats" / "clean.csv", index=False)
    for name, frame in (("attacks", table), ("gender_gaps", gaps_g), ("corpus_gaps", gaps_c),
                        ("strongest", strongest), ("summary", grid), ("gender_corpus_gaps", gaps_cg),
                        ("perturbation_profiles", profiles), ("training", details), ("realized", realized)):
        if not frame.empty:
            frame.drop(columns=[c for c in ("members",) if c in frame]).to_csv(out / "stats" / f"{name}.csv",
                                                                                index=False)
    title = f"seradv robustness report: {names}"
    (out / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(to_html(blocks, title=title, root=out, embed_images=embed_images),
                                     encoding="utf-8")
    log.info("report of %s written to %s in %.1f s", names, out, time.perf_counter() - t0)
    return out / "report.html"

