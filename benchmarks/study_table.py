"""Print the attack results of one or more run directories as a Markdown table laid out like
SPEC.md's published table (accuracy All / Male / Female per attack and parameter), with
mean |delta|, the seconds per cell and the study's EmoDB figures beside them.

Usage: .venv/bin/python benchmarks/study_table.py runs/emodb-paper runs/emodb-speaker
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from seradv.fileio import read_json


def load_cells(run_dir: Path) -> pd.DataFrame:
    """Rows of every finished cell (read-only: works while a grid is still running)."""
    rows = []
    for f in sorted((run_dir / "attacks" / "cells").glob("*.json")):
        rows += read_json(f)["rows"]
    return pd.DataFrame(rows)

#: SPEC.md, "Published results", EmoDB column (All / Male / Female).
STUDY_EMODB = {
    ("fgsm", "eps=0.25"): ".171 / .114 / .205",
    ("fgsm", "eps=1.25"): ".109 / .089 / .121",
    ("bim", "*"): ".067 / .070 / .065 (every eps)",
    ("deepfool", "max_iter=1"): ".118 / .098 / .130",
    ("deepfool", "max_iter=5"): ".061 / .070 / .056",
    ("jsma", "theta=1, gamma=1"): ".013 / .019 / .010",
    ("cw_l2", "*"): ".188 / .127 / .224",
    ("cw_linf", "*"): ".069 / .076 / .065",
    ("pixel", "th=1, max_iter=20"): ".669 / .597 / .713",
    ("pixel", "th=10, max_iter=20"): ".547 / .454 / .603",
    ("boundary", "*"): ".045 / .057 / .038",
}
ORDER = ["fgsm", "bim", "deepfool", "jsma", "cw_l2", "cw_linf", "pixel", "boundary"]


def _study(attack: str, params: str) -> str:
    return STUDY_EMODB.get((attack, params)) or STUDY_EMODB.get((attack, "*"), "")


def table(run_dirs: list[Path]) -> str:
    frames = []
    for rd in run_dirs:
        res = load_cells(rd)
        res = res[~res["early_stop"].astype(bool)] if "early_stop" in res else res
        # a setting run on several subsets (e.g. Pixel on 16, then on 64 segments): the largest
        n_all = res[res["group"] == "All"].sort_values("n", ascending=False, kind="stable")
        keep = n_all.drop_duplicates(["attack", "params"])["cell_id"]
        res = res[res["cell_id"].isin(keep)].assign(run=rd.name)
        frames.append(res)
    res = pd.concat(frames)
    res = res[res["attack"].isin(ORDER)]
    runs = [rd.name for rd in run_dirs]
    head = ["attack", "params"]
    for r in runs:
        head += [f"{r}: acc All / M / F", f"{r}: mean abs delta", f"{r}: s (n)"]
    head.append("study EmoDB (All / M / F)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = res[["attack", "params"]].drop_duplicates()
    nums = keys["params"].map(lambda t: tuple(float(v) for v in re.findall(r"=(-?[0-9.eE+-]+)", t)))
    keys = keys.assign(o=keys["attack"].map(ORDER.index), n=nums).sort_values(["o", "n"], kind="stable")
    for _, k in keys.iterrows():
        cells = [k["attack"], k["params"]]
        for r in runs:
            sub = res[(res["run"] == r) & (res["attack"] == k["attack"]) & (res["params"] == k["params"])]
            if sub.empty:
                cells += ["not run", "", ""]
                continue
            g = sub.set_index("group")
            acc = " / ".join(f"{g.loc[x, 'adv_accuracy']:.3f}" if x in g.index else "-" for x in ("All", "Male", "Female"))
            cells += [acc, f"{g.loc['All', 'mean_abs_delta']:.4g}", f"{g.loc['All', 'seconds']:.0f} ({int(g.loc['All', 'n'])})"]
        cells.append(_study(k["attack"], k["params"]))
        lines.append("| " + " | ".join(cells) + " |")
    clean = []
    for r, f in zip(runs, frames):
        g = f[f["group"].isin(["All", "Male", "Female"])].drop_duplicates("group").set_index("group")
        clean.append(f"{r}: " + " / ".join(f"{g.loc[x, 'clean_accuracy']:.3f}" for x in ("All", "Male", "Female")))
    totals = []
    for rd, f in zip(run_dirs, frames):
        n_test = int(pd.read_csv(rd / "metrics.csv").query("group == 'All'")["n"].iloc[0])
        cells = f[f["group"] == "All"]
        full = float((cells["seconds"] * n_test / cells["n"]).sum())
        totals.append(f"{rd.name}: {cells['seconds'].sum():,.0f} s for {len(cells)} cells; the same cells on all "
                      f"{n_test} test segments, extrapolated linearly: {full:,.0f} s ({full / 3600:.1f} h)")
    return ("\n".join(lines) + "\n\nClean accuracy of the attacked samples (All / M / F): " + "; ".join(clean)
            + "\n\nTime: " + "; ".join(totals) + "\n")


if __name__ == "__main__":
    print(table([Path(a) for a in sys.argv[1:]]))
