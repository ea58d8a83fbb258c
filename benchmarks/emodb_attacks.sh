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
  # FGSM and BIM with ART, as in the study (these cells were run before their default became
  # torch; benchmarks/attacks.py shows both backends give the same accuracy and mean |delta|)
  $BIN/seradv -v attack $run --grid paper --attacks fgsm,bim --backend art --limit "$LIMIT" --seed 0
  $BIN/seradv -v attack $run --grid paper --attacks deepfool,cw_linf,cw_l2,boundary --limit "$LIMIT" --seed 0
  # JSMA theta=1 first (the study's reported row; theta < 0 costs 300+ gradient steps per sample)
  for theta in 1 0.5 -1 -0.5; do
    $BIN/seradv -v attack $run --grid paper --attacks jsma --where theta=$theta --limit "$LIMIT" --seed 0
  done
  $BIN/seradv -v attack $run --grid paper --attacks pixel --limit "$PIXEL_LIMIT" --seed 0
done
$BIN/python benchmarks/study_table.py runs/emodb-paper runs/emodb-speaker
$BIN/seradv report runs/emodb-paper runs/emodb-speaker -o docs/examples/emodb --examples 1
