#!/usr/bin/env bash
# Benchmark: full training of the study's CNN-LSTM on the real EmoDB, both splits.
# Results (time, clean accuracy per gender, held-out speakers) go to docs/benchmarks.md.
# Usage: bash benchmarks/emodb_training.sh [EMODB_DIR]   (tens of minutes per split on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/datasets/emodb}
BIN=.venv/bin
for split in paper speaker; do
  run=runs/emodb-$split
  time $BIN/seradv -v prepare emodb --data-dir "$DATA" --split $split -o $run
  time $BIN/seradv -v train $run --threads 2
  $BIN/seradv evaluate $run
done
