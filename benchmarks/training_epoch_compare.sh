#!/usr/bin/env bash
# Benchmark (issue 16): one real training epoch of a prepared run with the code of an older
# commit and with the current code, at the same time (one per core, one thread each), then with
# the cores swapped; prints each epoch's history line (they must be identical) and the seconds.
# Usage: bash benchmarks/training_epoch_compare.sh RUN_DIR [OLD_COMMIT]   (e.g. runs/emodb-paper c01973c)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: training_epoch_compare.sh RUN_DIR [OLD_COMMIT]}
OLD=${2:-c01973c}
BASE=$(mktemp -d)
git worktree add -q "$BASE/tree" "$OLD"
trap 'git worktree remove --force "$BASE/tree"; rm -rf "$BASE"' EXIT
one() {  # CORE SRC TAG
  local d="$BASE/$3"
  cp -r "$RUN" "$d"
  rm -rf "$d"/model.* "$d"/history.csv "$d"/train_state.pt "$d"/metrics.* "$d"/attacks "$d"/report
  PYTHONPATH="$2" OMP_NUM_THREADS=1 taskset -c "$1" .venv/bin/python -c \
    "import sys; from seradv.cli import app; sys.argv=['seradv','train','$d','--epochs','1','--threads','1']; app()" \
    > "$d.log" 2>&1
}
one 0 "$BASE/tree/src" before-core0 & one 1 "$PWD/src" now-core1 & wait
one 1 "$BASE/tree/src" before-core1 & one 0 "$PWD/src" now-core0 & wait
for t in before-core0 now-core1 before-core1 now-core0; do echo "$t $(tail -1 "$BASE/$t/history.csv")"; done
for t in now-core1 before-core1 now-core0; do
  cmp -s "$BASE/before-core0/model.safetensors" "$BASE/$t/model.safetensors" && echo "$t: same weights as before-core0"
done
