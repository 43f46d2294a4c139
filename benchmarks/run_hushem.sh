#!/usr/bin/env bash
# Reproduce benchmarks/results/hushem: train CBAM-EfficientNet-Lite0 on HuSHeM, export it with INT8, benchmark
# every backend and precision this machine can run. Steps whose output exists are skipped, so a second run
# re-measures the same bundle. Extra arguments go to `sperm-edge bench` (e.g. --iters 20 --no-stream).
#
#   benchmarks/run_hushem.sh                       # from the repository root
#   WORK=/data/bench OUT=benchmarks/results/orin benchmarks/run_hushem.sh --backends all
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/hushem}
WORK=${WORK:-/tmp/bench}
OUT=${OUT:-benchmarks/results/hushem}
BATCH=${BATCH:-1,8}
EXPORT_ARGS=${EXPORT_ARGS:---int8}   # on a GPU machine: EXPORT_ARGS="--int8 --trt --fp16"

if [[ ! -f "$WORK/run/best.safetensors" ]]; then
  sperm-edge train --data "$DATA" --arch cbam_efficientnet_lite0 --out "$WORK/run" --phase1-epochs 2 --phase2-epochs 6
fi
if [[ ! -f "$WORK/bundle/manifest.json" ]]; then
  # shellcheck disable=SC2086  # EXPORT_ARGS is a list of flags
  sperm-edge export "$WORK/run" --out "$WORK/bundle" $EXPORT_ARGS || {
    code=$?  # 3: the bundle was written but INT8 was refused by the accuracy gate; its rows will say so
    [[ $code -eq 3 ]] || exit "$code"
  }
fi
sperm-edge bench "$WORK/bundle" --data "$DATA" --batch "$BATCH" --out "$OUT" "$@"
