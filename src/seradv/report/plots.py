"""Matplotlib figures of the report, drawn without pyplot (no global state, no display).

Every function writes one PNG and returns its path. The accuracy plotted is the **robust
accuracy** (correct before the attack and never fooled), with its 95 % interval (over speakers
or utterances, :mod:`seradv.stats`) as error bars; every figure states its n.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["accuracy_vs_strength", "strongest_bars", "confidence_histograms", "confusion_pairs",
           "clean_confusions", "spectrograms", "summary_heatmap", "perturbation_profiles", "COLOURS"]

COLOURS = {"All": "#333333", "Male": "#1f77b4", "Female": "#d62728"}
DPI = 100


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def _err(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.vstack([np.clip(values - lo, 0, None), np.clip(hi - values, 0, None)])


def accuracy_vs_strength(rows: pd.DataFrame, key: str, path: Path, *, title: str) -> Path:
    """Robust accuracy versus the strength parameter ``key``: one panel per source (its title
    gives n), one line per group (All / Male / Female) with 95 % CIs; dotted: clean accuracy.
    Settings without a robust accuracy (old results without per-sample files) are left out."""
    sources = list(dict.fromkeys(rows["source"]))
    fig = Figure(layout="constrained", figsize=(min(max(6.0, 4.2 * len(sources)), 13), 3.6))
    axes = fig.subplots(1, len(sources), squeeze=False)[0]
    for ax, source in zip(axes, sources):
        part = rows[rows["source"] == source]
        for group, colour in COLOURS.items():
            g = part[part["group"] == group].copy()
            if g.empty:
                continue
            g["x"] = g["params_json"].map(lambda s: json.loads(s)[key])
            g = g[np.isfinite(g["robust_accuracy"].to_numpy(float))].sort_values("x")
            if g.empty:
                continue
            y = g["robust_accuracy"].to_numpy(float)
            ax.errorbar(g["x"], y, yerr=_err(y, g["robust_lo"].to_numpy(float), g["robust_hi"].to_numpy(float)),
                        color=colour, marker="o", ms=4, capsize=3, lw=1.6 if group != "All" else 2.2,
                        ls="-" if group != "All" else "--", label=group)
            ax.axhline(float(g["clean_accuracy"].iloc[0]), color=colour, ls=":", lw=1)
        ns = {grp: int(part.loc[part["group"] == grp, "n"].max()) for grp in COLOURS if (part["group"] == grp).any()}
        ax.set_title(f"{source}\nn = " + " / ".join(f"{ns[k]} {k.lower()}" for k in ns), fontsize=9)
        ax.set_xlabel(key)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("robust accuracy")
    axes[-1].legend(fontsize=8, loc="best", title="dotted: clean", title_fontsize=7)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def strongest_bars(items: pd.DataFrame, path: Path, *, title: str) -> Path:
    """Grouped bars: every attack (x) at its strongest setting, one bar per source, robust
    accuracy with 95 % CIs; a black tick marks the clean accuracy of the same samples.

    ``items`` columns: ``label`` (which should give n), ``source``, ``robust_accuracy``,
    ``robust_lo``, ``robust_hi``, ``clean_accuracy``.
    """
    labels = list(dict.fromkeys(items["label"]))
    sources = list(dict.fromkeys(items["source"]))
    width = 0.8 / max(1, len(sources))
    # at most 12 in (1200 px, the page's width); the labels wrap to their slot
    fig = Figure(layout="constrained", figsize=(min(12.0, max(6.0, 1.0 + 1.1 * len(labels) * max(1, len(sources)) ** 0.5)),
                                                4.6))
    ax = fig.subplots()
    cmap = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
    for j, source in enumerate(sources):
        part = items[items["source"] == source].set_index("label")
        xs, ys, lo, hi, clean = [], [], [], [], []
        for i, lab in enumerate(labels):
            if lab in part.index:
                r = part.loc[lab]
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(r["robust_accuracy"])
                lo.append(r["robust_lo"])
                hi.append(r["robust_hi"])
                clean.append(r["clean_accuracy"])
        ys_a = np.array(ys, float)
        ax.bar(xs, ys_a, width=width * 0.95, color=cmap[j % len(cmap)], label=source,
               yerr=_err(ys_a, np.array(lo, float), np.array(hi, float)), capsize=2, ecolor="#222222")
        ax.scatter(xs, clean, marker="_", s=180, color="black", zorder=3,
                   label="clean (same samples)" if j == 0 else None)
    ax.set_xticks(range(len(labels)))
    # long parameter lists (C&W Linf) wrapped so that the axes keep their height
    chars = max(12, int(11.0 * 100 / max(1, len(labels)) / 6))  # about 6 px per character at 7 pt
    ax.set_xticklabels(["\n".join(textwrap.fill(line, chars) for line in str(lab).split("\n")) for lab in labels],
                       fontsize=7, rotation=0, ha="center")
    ax.set_ylabel("robust accuracy (All)")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, len(sources) + 1), loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def confidence_histograms(panels: list[tuple[str, np.ndarray, np.ndarray]], path: Path, *,
                          title: str) -> Path:
    """Top-class confidence before (clean) and after the attack, one panel per attack."""
    n = len(panels)
    cols = min(4, n)
    nrows = int(np.ceil(n / cols))
    fig = Figure(layout="constrained", figsize=(3.2 * cols, 2.6 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    bins = np.linspace(0, 1, 21)
    for ax, (name, before, after) in zip(axes, panels):
        ax.hist(before, bins=bins, alpha=0.55, color="#4c72b0", label="clean")
        ax.hist(after, bins=bins, alpha=0.55, color="#c44e52", label="attacked")
        # long parameter lists wrapped so that neighbouring titles never run into each other
        ax.set_title("\n".join(textwrap.fill(line, 36) for line in str(name).split("\n")), fontsize=8)
        ax.set_xlabel("top-class confidence", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].set_ylabel("samples", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _heatmap(ax, cm: np.ndarray, classes: list[str], title: str) -> None:
    cm = np.asarray(cm, float)
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)))
    ax.set_yticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticklabels(classes, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_title(title, fontsize=9)


def confusion_pairs(pairs: list[tuple[str, np.ndarray, np.ndarray]], classes: list[str], path: Path, *,
                    title: str) -> Path:
    """Per-class confusion on the same samples, clean (left) versus attacked (right), one row
    per ``(name, cm_clean, cm_adv)``. Colour: share of the true class's samples; numbers: counts."""
    fig = Figure(layout="constrained", figsize=(7.0, 3.2 * len(pairs)))
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    for (name, cm_clean, cm_adv), (a, b) in zip(pairs, axes):
        _heatmap(a, cm_clean, classes, f"{name}: clean")
        _heatmap(b, cm_adv, classes, f"{name}: attacked")
        a.set_ylabel("true", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def clean_confusions(cms: dict[str, np.ndarray], classes: list[str], path: Path, *, title: str) -> Path:
    """Clean confusion matrices, one panel per group (All / Male / Female)."""
    fig = Figure(layout="constrained", figsize=(3.6 * len(cms), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(cms), squeeze=False)).ravel()
    for ax, (group, cm) in zip(axes, cms.items()):
        _heatmap(ax, cm, classes, group)
    axes[0].set_ylabel("true", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def spectrograms(x: np.ndarray, x_adv: np.ndarray, path: Path, *, title: str,
                 seconds_per_frame: float) -> Path:
    """Original, adversarial and their difference (standardized log-Mel, ``[shape=(T, F)]``).

    Original and adversarial share one colour scale; the difference uses a diverging scale
    of the *same width* (so a change looks as large as it is relative to the features),
    and a fourth panel magnifies it to its own range.
    """
    x = np.asarray(x, np.float32)
    x_adv = np.asarray(x_adv, np.float32)
    d = x_adv - x
    vmin = float(min(x.min(), x_adv.min()))
    vmax = float(max(x.max(), x_adv.max()))
    half = (vmax - vmin) / 2
    dmax = float(np.abs(d).max()) or 1.0
    extent = (0, x.shape[0] * seconds_per_frame, 0, x.shape[1])
    fig = Figure(layout="constrained", figsize=(13, 3.0))
    axes = fig.subplots(1, 4)
    panels = [
        (x, "original", "magma", vmin, vmax),
        (x_adv, "adversarial", "magma", vmin, vmax),
        (d, "difference (same scale)", "coolwarm", -half, half),
        (d, f"difference (magnified, ±{dmax:.3g})", "coolwarm", -dmax, dmax),
    ]
    for ax, (arr, name, cmap, lo, hi) in zip(axes, panels):
        im = ax.imshow(arr.T, origin="lower", aspect="auto", cmap=cmap, vmin=lo, vmax=hi, extent=extent,
                       interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("time (s)", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    axes[0].set_ylabel("Mel band", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def summary_heatmap(grid: pd.DataFrame, path: Path, *, title: str, group_every: int | None = 2) -> Path:
    """Robust accuracy, one row per attack (``row`` labels), one column per (source, gender)
    (``column`` labels); each cell shows its value and n. ``grid`` columns: ``row``, ``column``,
    ``value``, ``n``; rows and columns keep their first-seen order. A white line separates every
    ``group_every`` columns (the sources' two genders; ``None``: no lines)."""
    rows = list(dict.fromkeys(grid["row"]))
    cols = list(dict.fromkeys(grid["column"]))
    val = np.full((len(rows), len(cols)), np.nan)
    ns = np.zeros((len(rows), len(cols)), int)
    for r in grid.itertuples():
        i, j = rows.index(r.row), cols.index(r.column)
        val[i, j] = r.value
        ns[i, j] = int(r.n)
    width = min(12.0, 2.6 + 1.05 * len(cols))
    fig = Figure(layout="constrained", figsize=(width, 1.2 + 0.5 * len(rows)))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(val), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    size = 8 if len(cols) <= 8 else 6.5
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(val[i, j]):
                ax.text(j, i, f"{val[i, j]:.2f}\nn={ns[i, j]}", ha="center", va="center", fontsize=size,
                        color="black")
            else:
                ax.text(j, i, "–", ha="center", va="center", fontsize=size, color="#777777")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([textwrap.fill(str(c), 14) for c in cols], fontsize=size)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([textwrap.fill(str(r), 34) for r in rows], fontsize=size)
    ax.tick_params(length=0)
    for j in range(1, len(cols)):
        if group_every and j % group_every == 0:  # a line between the sources (two genders each)
            ax.axvline(j - 0.5, color="white", lw=3)
    cb = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.015)
    cb.ax.tick_params(labelsize=7)
    cb.set_label("robust accuracy", fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def perturbation_profiles(profiles: pd.DataFrame, path: Path, *, title: str) -> Path:
    """Mean ``|delta|`` per Mel band (left) and over time (right), one line per source (colour)
    and gender (solid: male, dashed: female); the legend (with n) below the panels.
    ``profiles``: rows of :func:`seradv.report.analysis.perturbation_profiles` of one attack."""
    fig = Figure(layout="constrained", figsize=(11.0, 4.4))
    band_ax, time_ax = fig.subplots(1, 2)
    cmap = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
    sources = list(dict.fromkeys(profiles["source"]))
    for (source, gender), part in profiles.groupby(["source", "gender"], sort=False):
        colour = cmap[sources.index(source) % len(cmap)]
        ls = "-" if gender == "m" else "--"
        b = part[part["axis"] == "band"].sort_values("index")
        t = part[part["axis"] == "time"].sort_values("index")
        label = f"{source} {'male' if gender == 'm' else 'female'} (n={int(part['n'].iloc[0])})"
        band_ax.plot(b["index"], b["mean_abs_delta"], color=colour, ls=ls, lw=1.3, label=label)
        x = t["seconds"] if t["seconds"].notna().all() else t["index"]
        time_ax.plot(x, t["mean_abs_delta"], color=colour, ls=ls, lw=1.1)
    band_ax.set_xlabel("Mel band (low → high frequency)", fontsize=8)
    band_ax.set_ylabel("mean |δ| (standardized log-Mel)", fontsize=8)
    band_ax.set_title("per Mel band (mean over time)", fontsize=9)
    t_all = profiles[profiles["axis"] == "time"]
    time_ax.set_xlabel("time (s)" if len(t_all) and t_all["seconds"].notna().all() else "frame", fontsize=8)
    time_ax.set_title("over the segment (mean over bands)", fontsize=9)
    for ax in (band_ax, time_ax):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.legend(*band_ax.get_legend_handles_labels(), loc="outside lower center", fontsize=7,
               ncol=min(3, max(1, len(sources))), frameon=False)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
