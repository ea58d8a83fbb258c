"""Section "Realized as audio": do the feature-space attacks survive as sound?

Reads each run's ``attacks/realized.csv`` (written by ``seradv realize``,
:mod:`seradv.grid.realized`): per attack cell and rendering, the fooling rate in the feature
space beside the fooling rate of the rendered, written and re-read audio."""

from __future__ import annotations

import pandas as pd

from seradv.report.data import RunData
from seradv.report.format import DASH, fmt_acc
from seradv.report.render import Heading, Para, Table
from seradv.report.sections import Section
from seradv.rundir import attacks_dir

__all__ = ["realized_frame", "realized_section"]

_INTRO = ("A log-Mel matrix is not audio. `seradv realize` renders each attacked segment's clean and "
          "adversarial matrix as audio (Griffin-Lim as in the examples, or the clean segment's phase kept), "
          "writes both as 16-bit WAVs, reads them back through the normal feature pipeline and classifies "
          "them. Only segments correct before the attack are rendered; the realized rate counts those whose "
          "clean rendering is still classified correctly (\"faithful\"), so that the rendering itself is not "
          "mistaken for the attack.")


def realized_frame(runs: list[RunData]) -> pd.DataFrame:
    """Every run's ``attacks/realized.csv`` rows with a ``run`` column (empty when none exists)."""
    frames = []
    for r in runs:
        path = attacks_dir(r.run_dir) / "realized.csv"
        if path.is_file():
            f = pd.read_csv(path)
            if not f.empty:
                frames.append(f.assign(run=r.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _rate(v) -> str:
    return fmt_acc(float(v)) if v is not None and pd.notna(v) else DASH


def realized_section(frame: pd.DataFrame) -> Section:
    """The table of feature-space vs realized fooling rates, one row per run, cell and rendering."""
    blocks: list = [Heading(2, "Realized as audio: feature-space attacks played back")]
    if frame.empty:
        blocks.append(Para("Not measured: run `seradv realize RUN` after `seradv attack RUN` (the cells must "
                           "keep their perturbations, i.e. no --no-examples)."))
        return Section(blocks)
    blocks.append(Para(_INTRO))
    rows = []
    for r in frame.sort_values(["run", "attack", "params", "method"]).to_dict("records"):
        rows.append([str(r["run"]), f"{r['attack']} {r['params']}", str(r["method"]), str(int(r["n"])),
                     str(int(r["n_render_faithful"])), _rate(r["feature_fooling_rate"]),
                     _rate(r["realized_fooling_rate"]), _rate(r["feature_fooled_realized"]),
                     f"{float(r['mean_render_snr_db']):.1f}" if pd.notna(r["mean_render_snr_db"]) else DASH])
    blocks.append(Table(["run", "attack", "rendering", "n", "faithful", "fooling (features)", "fooling (audio)",
                         "fooled in features, still fooled as audio", "SNR of the rendering (dB)"], rows,
                        caption="Fooling rate among the rendered segments in the feature space and on the written "
                                "files (among the faithful ones); SNR: adversarial rendering against the clean one",
                        meta={"kind": "realized"}))
    return Section(blocks)
