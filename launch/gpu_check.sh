#!/usr/bin/env bash
# Every GPU check in one script, 12.5 minutes at most (each step has a time limit) on one
# H100 or H200. A step cut at its limit has still logged each bench row as a JSON line.
#   1. python -m seqjax.doctor
#   2. the test suite on the GPU (JAX_PLATFORMS=cuda), with its slowest tests
#   3. the bench on the seed and large shapes, torch cuDNN beside, seqjax at "highest"
#      and "default" (TF32) precision
#   4. the scan unroll table (1..128) on the freq and mean shapes, against auto_unroll
#   5. the unroll-8 probe: mean at unroll 8 and 16 with XLA's command buffers (CUDA
#      graphs) off, the suspected cause of unroll 8's 20x slower train step, then with
#      XLA's while-loop unrolling off (step 4 has both with the defaults)
#
#   bash launch/gpu_check.sh [OUT_DIR]      # default: $OUT, else gpu_check/
#
# Everything goes to OUT_DIR: check.log (all output), bench/ and unroll/ (tables, 7 files).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
log="$out/check.log"
: > "$log"
failed=0

step() {  # name, time limit in seconds, command...
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name: $*" | tee -a "$log"
  timeout "$limit" "$@" >> "$log" 2>&1
  rc=$?
  echo "== $name: exit $rc in $(( $(date +%s) - start )) s" | tee -a "$log"
  (( rc == 0 )) || failed=$((failed + 1))
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$log" 2>&1
step doctor 60 python -m seqjax.doctor
step tests 300 python -m pytest -o addopts= -q -p no:cacheprovider --durations=15
step bench 180 python -m seqjax.bench --shapes=seed,large --precision=highest,default \
  --peers="seqjax,seqjax device loop,flax nn.RNN,torch nn.LSTM" --repeats=10 --out="$out/bench"
step unroll 120 python -m seqjax.bench --shapes=freq,mean --unroll=1,4,8,16,32,64,128 \
  --repeats=3 --out="$out/unroll"
for flags in "--xla_gpu_enable_command_buffer=" \
    "--xla_gpu_enable_while_loop_unrolling=WHILE_LOOP_UNROLLING_NO_UNROLL"; do
  XLA_FLAGS=$flags step "probe XLA_FLAGS=$flags" 45 python -m seqjax.bench --shapes=mean \
    --unroll=8,16 --repeats=5 --out="${TMPDIR:-/tmp}/seqjax-probe"  # its table is in the log
done
grep -E '^== |auto .* is |best unroll|\| (echo|sine|freq|mean|wide|batch4096) ' "$log"
echo "$failed step(s) failed"
exit "$failed"
