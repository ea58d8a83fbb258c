#!/usr/bin/env bash
# Benchmark: the study's paper attack grid on the real EmoDB models of both splits, then the
# report. Needs the trained runs of benchmarks/emodb_training.sh. Results: docs/benchmarks.md
# (table from benchmarks/study_table.py), report under docs/examples/emodb/.
# Usage: bash benchmarks/emodb_attacks.sh [LIMIT] [PIXEL_LIMIT]   (hours on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-64}
PIXEL_LIMIT=${2:-64}
BIN=.venv/bin
for split in paper speaker; do
  run=runs/emodb-$split
  # the reported settings first (cheap to dear); every cell is resumable and reused on rerun
  $BIN/seradv -v attack $run --grid paper --attacks fgsm --backend art --limit "$LIMIT" --seed 0
  $BIN/seradv -v attack $run --grid paper --attacks deepfool,cw_linf,boundary --limit "$LIMIT" --seed 0
  $BIN/seradv -v attack $run --grid paper --attacks jsma --where theta=1 --limit "$LIMIT" --seed 0
  $BIN/seradv -v attack $run --grid paper --attacks pixel --where th=1 --limit "$PIXEL_LIMIT" --seed 0
  $BIN/seradv -v attack $run --grid paper --attacks cw_l2 --limit "$LIMIT" --seed 0
  $BIN/seradv -v attack $run --grid paper --attacks bim --backend art --limit "$LIMIT" --seed 0
  for th in 10 5; do
    $BIN/seradv -v attack $run --grid paper --attacks pixel --where th=$th --limit "$PIXEL_LIMIT" --seed 0
  done
  # theta < 0 costs 300+ gradient steps per sample
  for theta in 0.5 -1 -0.5; do
    $BIN/seradv -v attack $run --grid paper --attacks jsma --where theta=$theta --limit "$LIMIT" --seed 0
  done
done
$BIN/python benchmarks/study_table.py runs/emodb-paper runs/emodb-speaker
$BIN/seradv report runs/emodb-paper runs/emodb-speaker -o docs/examples/emodb --examples 1
