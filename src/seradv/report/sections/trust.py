"""Section "Trust checks": the checks ``seradv attack`` recorded (``attacks/trust.csv``)."""

from __future__ import annotations

from seradv.report.data import RunData
from seradv.report.render import Heading, Para, Table
from seradv.report.sections import Section

__all__ = ["trust_section"]


def trust_section(runs: list[RunData]) -> Section:
    blocks: list = [Heading(2, "Trust checks")]
    any_ = False
    for r in runs:
        if r.trust is None or r.trust.empty:
            continue
        any_ = True
        rows = [[t.check, t.attack, t.status, t.detail] for t in r.trust.itertuples()]
        blocks.append(Table(["check", "attack", "status", "detail"], rows, caption=f"Trust checks, {r.name}",
                            meta={"kind": "trust", "run": r.name}))
    if not any_:
        blocks.append(Para("No trust checks recorded (attacks/trust.csv is written by `seradv attack`)."))
    return Section(blocks)
