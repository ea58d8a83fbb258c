#!/usr/bin/env bash
# Benchmark (issue 5): every attack of the paper grid, seradv's torch backends against ART 1.20.1,
# on the same seeded test segments of the EmoDB paper-split model, plus the torch backends with
# --early-stop. Needs runs/emodb-paper (benchmarks/emodb_training.sh). Finished rows are reused.
# Results: benchmarks/results/emodb-paper/attacks.{csv,md} (copied into docs/benchmarks.md).
# Usage: bash benchmarks/emodb_attack_speed.sh [N] [THREADS]   (about 1-2 h on 1 CPU core)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-16}
THREADS=${2:-1}
# torchattacks (FGSM, BIM, DeepFool rows) without its dependencies: they would pull a CUDA torch
.venv/bin/python -c "import torchattacks" 2>/dev/null || .venv/bin/pip install -q --no-deps torchattacks==3.5.1
OMP_NUM_THREADS=$THREADS .venv/bin/python benchmarks/attacks.py runs/emodb-paper --grid paper \
  --attacks fgsm,bim,deepfool,cw_linf,cw_l2,boundary,jsma,pixel --backends torch,art,torchattacks --early-stop \
  --n "$N" --threads "$THREADS" --out benchmarks/results/emodb-paper
# HopSkipJump (not in the study's grid; its 'paper' settings match Boundary's query budget): torch vs ART
OMP_NUM_THREADS=$THREADS .venv/bin/python benchmarks/attacks.py runs/emodb-paper --grid paper \
  --attacks hopskipjump --backends torch,art --n "$N" --threads "$THREADS" --out benchmarks/results/emodb-paper
# the table of every row (all reused): attacks.{csv,md}
OMP_NUM_THREADS=$THREADS .venv/bin/python benchmarks/attacks.py runs/emodb-paper --grid paper \
  --attacks fgsm,bim,deepfool,cw_linf,cw_l2,boundary,jsma,pixel,hopskipjump --backends torch,art,torchattacks \
  --early-stop --n "$N" --threads "$THREADS" --out benchmarks/results/emodb-paper
