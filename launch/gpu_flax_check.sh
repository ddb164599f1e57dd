#!/usr/bin/env bash
# The LSTM's Flax-facing features on a GPU (each step has a time limit):
#   1. the unidirectional train step on the seed shapes, `python -m seqjax.bench`; with
#      BASELINE set to another seqjax source tree (its parent folder), the same rows from
#      it, in the same call, so the two are timed on one machine;
#   2. the tests of Flax's wrappers, the NNX modules, bidirectional stacks, dropout and
#      forward mode, the torch/Keras parity fixtures and the fused scan, on the GPU.
#   BASELINE=/path/to/old bash launch/gpu_flax_check.sh [OUT_DIR]   # default: $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_flax_check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}

bench() {  # $1: label, $2: PYTHONPATH
  echo "== bench: $1" | tee -a "$out/bench.txt"
  PYTHONPATH=$2:${PYTHONPATH:-} timeout 120 python -m seqjax.bench --shapes=seed --peers=seqjax \
    --repeats=10 --out="$out/bench_$1" 2>&1 | grep "^|" | tee -a "$out/bench.txt"
}
bench new "$PWD"
if [[ -n "${BASELINE:-}" ]]; then
  bench baseline "$BASELINE"
fi

echo "== tests" | tee "$out/tests.txt"
timeout 200 python -m pytest -o addopts= -q -p no:cacheprovider -m "not slow" tests/test_flax.py \
  tests/test_parity.py tests/test_recurrence.py 2>&1 | tail -15 | tee -a "$out/tests.txt"

