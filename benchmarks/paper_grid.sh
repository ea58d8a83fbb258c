#!/usr/bin/env bash
# Benchmark: the study's paper attack grid on one trained run (any corpus), cheap cells first
# (every cell is resumable and reused on rerun, so a stopped run continues where it was).
# Usage: bash benchmarks/paper_grid.sh RUN_DIR [LIMIT] [PIXEL_LIMIT]   (hours on 2 CPU cores)
# Results: docs/benchmarks.md (table from benchmarks/study_table.py).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: paper_grid.sh RUN_DIR [LIMIT] [PIXEL_LIMIT]}
LIMIT=${2:-64}
PIXEL_LIMIT=${3:-$LIMIT}
BIN=.venv/bin
atk() { echo "== $(date -u +%H:%M:%S) $*"; $BIN/seradv -v attack "$RUN" --grid paper --seed 0 "$@"; }
atk --attacks fgsm --backend art --limit "$LIMIT"
atk --attacks deepfool,cw_linf,boundary --limit "$LIMIT"
atk --attacks jsma --where theta=1 --limit "$LIMIT"
atk --attacks cw_l2 --limit "$LIMIT"
atk --attacks bim --backend art --limit "$LIMIT"
atk --attacks pixel --where th=1 --limit "$PIXEL_LIMIT"
for th in 10 5; do atk --attacks pixel --where th=$th --limit "$PIXEL_LIMIT"; done
for theta in 0.5 -1 -0.5; do atk --attacks jsma --where theta=$theta --limit "$LIMIT"; done
echo "== $(date -u +%H:%M:%S) done"
