#!/usr/bin/env bash
# Benchmark (issue 15): the cells of the study's defence table (SPEC.md "Defence in the study's
# code") plus PGD / APGD-CE / APGD-DLR at eps 0.25 and 1.25, on 64 seeded test segments of a
# trained run (the same segments for a defended and an undefended run of one split); every cell
# resumable. About 12 min per EmoDB model on one core. Results: RUN/attacks/, docs/benchmarks.md.
# Usage: bash benchmarks/defence_grid.sh RUN_DIR [LIMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: defence_grid.sh RUN_DIR [LIMIT]}
LIMIT=${2:-64}
atk() { echo "== $(date -u +%H:%M:%S) $*"; .venv/bin/seradv -v attack "$RUN" --grid paper --seed 0 --limit "$LIMIT" "$@"; }
atk --attacks fgsm
atk --attacks deepfool --where max_iter=5
atk --attacks cw_linf
for e in 0.25 1.25; do atk --attacks bim,pgd,apgd_ce --where eps=$e; done
atk --attacks apgd_dlr --where eps=0.25
atk --attacks boundary
atk --attacks jsma --where theta=1
echo "== $(date -u +%H:%M:%S) done"
