#!/usr/bin/env bash
# Benchmark for a machine with one CUDA GPU: the whole paper grid of the study on the FULL test
# set of a trained run (no training here), batch 256 as the study, every cell timed. The run
# directory comes with the working tree (e.g. a device machine's `carry`), or is made by
# benchmarks/emodb_training.sh.
# Usage: bash benchmarks/gpu.sh RUN_DIR [OUT_DIR]
# Writes OUT_DIR/gpu-timings.txt (environment, per-cell lines) and the run's attacks/ cells
# (copied to OUT_DIR/attacks). Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: gpu.sh RUN_DIR [OUT_DIR]}
OUT_DIR=${2:-${OUT:-benchmarks/results/gpu}}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu-timings.txt"
export SERADV_PROGRESS=0
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $BIN/python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} | tee "$LOG"
$BIN/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script needs one')"
atk() {  # one command of the grid, timed
  local t0=$SECONDS
  $BIN/seradv -v attack "$RUN" --grid paper --seed 0 --device cuda --batch-size 256 "$@" 2>&1 \
    | grep -E "seradv.grid.run: " | tee -a "$LOG"
  echo "command: $* : $((SECONDS - t0)) s wall" | tee -a "$LOG"
}
# cheap to dear; every cell is resumable, so a rerun after a timeout continues
atk --attacks fgsm,deepfool,cw_linf
atk --attacks bim
atk --attacks jsma --where theta=1
atk --attacks cw_l2
atk --attacks boundary
atk --attacks pixel --where th=1
atk --attacks pixel,jsma
atk --attacks apgd_ce,apgd_dlr,pgd
cp -r "$RUN/attacks" "$OUT_DIR/" 2>/dev/null || true
echo "done $(date -u)" | tee -a "$LOG"
