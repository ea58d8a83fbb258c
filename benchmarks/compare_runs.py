"""Compare two seradv run directories file by file, ignoring wall-clock fields.

For a change that must not alter behaviour (a refactor): run the same stages with the old and
the new code into two folders, then::

    python benchmarks/compare_runs.py OLD_RUN NEW_RUN [--alias OLD_NAME NEW_NAME]

Files equal byte for byte count as ``same``; JSON, CSV and Parquet files that differ only in
timing fields (names matching seconds / time / elapsed / made / fingerprint) count as
``same-but-timing``; anything else is ``DIFF``. ``--alias`` replaces a folder name that
appears inside files (paths such as the feature cache) before comparing; fingerprints hash
those paths, so they are compared through the files they hash, not directly. Exit status 1
if any file differs or is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

TIMING = re.compile(r"(second|time|elapsed|made|timestamp|fingerprint|^preprocessing$|samples_per_s)", re.I)


def _strip(obj):
    """``obj`` without the keys :data:`TIMING` matches, recursively."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not TIMING.search(str(k))}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame, alias: tuple[str, str]) -> bool:
    if list(a.columns) != list(b.columns):
        return False
    keep = [c for c in a.columns if not TIMING.search(str(c))]
    return a[keep].astype(str).replace(alias[0], "X", regex=True).equals(
        b[keep].astype(str).replace(alias[1], "X", regex=True))


def compare(old: Path, new: Path, alias: tuple[str, str] = ("\0", "\0")) -> dict[str, str]:
    """``relative path -> "same" | "same-but-timing" | "DIFF" | "missing"`` for every file of ``old``."""
    out: dict[str, str] = {}
    for fa in sorted(p for p in old.rglob("*") if p.is_file()):
        rel = fa.relative_to(old)
        fb = new / rel
        if not fb.is_file():
            out[str(rel)] = "missing"
            continue
        ba, bb = fa.read_bytes(), fb.read_bytes()
        if ba == bb:
            out[str(rel)] = "same"
            continue
        sa, sb = ba.replace(alias[0].encode(), b"X"), bb.replace(alias[1].encode(), b"X")
        ok = sa == sb
        if not ok and rel.suffix == ".json":
            ok = _strip(json.loads(sa)) == _strip(json.loads(sb))
        elif not ok and rel.suffix == ".csv":
            ok = _frames_equal(pd.read_csv(fa), pd.read_csv(fb), alias)
        elif not ok and rel.suffix == ".parquet":
            ok = _frames_equal(pd.read_parquet(fa), pd.read_parquet(fb), alias)
        out[str(rel)] = "same-but-timing" if ok else "DIFF"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--alias", nargs=2, metavar=("OLD_NAME", "NEW_NAME"), default=("\0", "\0"))
    args = ap.parse_args(argv)
    res = compare(args.old, args.new, tuple(args.alias))
    for rel, status in res.items():
        if status != "same":
            print(f"{status:16s} {rel}")
    counts = {s: sum(v == s for v in res.values()) for s in ("same", "same-but-timing", "DIFF", "missing")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return 1 if counts["DIFF"] or counts["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
