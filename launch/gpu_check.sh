#!/usr/bin/env bash
# Every GPU check, in two parts of about 8 minutes each on one H100 or H200 (each step has
# a time limit; a bench cut at its limit has still logged each row it timed as a JSON
# line). Compiling is slow on a GPU (3-16 s a program), so one part fits a session:
#   PARTS=tests  the Pallas kernels' tests (Triton-compiled), python -m seqjax.doctor,
#                whether the kernels lower with Mosaic GPU, and the whole suite on the GPU
#                (one worker a core, each test's result in the log)
#   PARTS=bench  the train step and forward pass of the seed and large shapes (mean and
#                freq first): the XLA scan and the Pallas kernel, each per call and in the
#                device loop, beside Flax nn.RNN and torch cuDNN, at "highest" precision,
#                the device loops at "default" (TF32) too; sine's 200-step rollout with
#                each kernel; the kernel tuning sweep; the scan unroll sweep
#
#   PARTS=bench bash launch/gpu_check.sh [OUT_DIR]   # default: $OUT, else gpu_check/
#
# OUT_DIR gets check.log (all output) and tables.tgz (each bench's csv/json/md tables).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check}}
parts=",${PARTS:-tests,bench},"
tables=$(mktemp -d)
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

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import sys, jax, flax; print(sys.version, jax.__version__, flax.__version__)"
} >> "$log" 2>&1

if [[ $parts == *,tests,* ]]; then
  step kernels 150 python -m pytest -o addopts= -q -p no:cacheprovider -rfE \
    tests/test_pallas.py tests/test_pallas_free_run.py
  step doctor 90 python -m seqjax.doctor
  step mosaic 30 python launch/mosaic_gpu_probe.py
  XLA_PYTHON_CLIENT_PREALLOCATE=false step suite "${SUITE_LIMIT:-240}" python -m pytest \
    -o addopts= -n "$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))" -m "slow or not slow" \
    -p no:cacheprovider -v -rfE --durations=15
fi

if [[ $parts == *,bench,* ]]; then
  shapes=mean,freq,sine,echo,wide,batch4096
  step bench 240 python -m seqjax.bench --shapes=$shapes --repeats=5 --out="$tables/bench" \
    --peers="seqjax,seqjax device loop,seqjax pallas,seqjax pallas device loop,flax nn.RNN,torch nn.LSTM"
  step "bench tf32" 60 python -m seqjax.bench --shapes=$shapes --precision=default --repeats=5 \
    --peers="seqjax device loop,seqjax pallas device loop" --out="$tables/bench_tf32"
  step rollout 30 python -m seqjax.bench --rollout --repeats=10 --out="$tables/rollout"
  step tuning 90 python -m seqjax.bench --kernel_tuning --shapes=freq,wide,mean --repeats=5 \
    --out="$tables/tuning"
  step unroll 60 python -m seqjax.bench --shapes=mean,freq --unroll=1,4,16,32,64,128 \
    --repeats=3 --out="$tables/unroll"
fi
tar -czf "$out/tables.tgz" -C "$tables" . && rm -rf "$tables"
grep -E '^== |^\| |mosaic_gpu|FAILED|ERROR|passed|failed' "$log" | grep -v PASSED | tail -150
echo "$failed step(s) failed"
exit "$failed"
