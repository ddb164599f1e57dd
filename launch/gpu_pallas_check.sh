#!/usr/bin/env bash
# The fused Pallas LSTM kernels on an NVIDIA GPU, in 9 minutes at most: the first
# thing to run where one is lent:
#   1. the kernels' tests on the GPU: Triton-compiled, against the XLA path (the layer
#      kernel's values and gradients over masks, lengths, reverse, 2 layers, carry, odd H,
#      bfloat16; the free-running kernel's generation), and the fallbacks to XLA;
#   2. the bench rows side by side: the train step and forward pass of the seed and large
#      shapes with the XLA scan and the Pallas kernel (each per call and in the device
#      loop), Flax nn.RNN and torch cuDNN (when installed), then sine's 200-step rollout
#      with each kernel (the Pallas row: one kernel for the whole free run);
#   3. one layer's recurrence at each kernel tuning (warps, W_h held or loaded) on the
#      shapes where the choice matters (`python -m seqjax.bench --kernel_tuning`).
# What it prints decides `seqjax/model/kernels/selection.py`'s PALLAS_FASTER table ("scan" from
# the train-step rows, "free_run" from the rollout rows) and `pallas_lstm.default_tuning`.
# PARTS=tests,bench,rollout,tuning (the default: all) runs a subset.
#   bash launch/gpu_pallas_check.sh [OUT_DIR]      # default: $OUT, else gpu_pallas_check/
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_pallas_check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}

parts=",${PARTS:-tests,bench,rollout,tuning},"
tests_status=0

if [[ $parts == *,tests,* ]]; then
  echo "== tests" | tee "$out/tests.txt"
  timeout 120 python -m pytest -o addopts= -q -p no:cacheprovider tests/test_pallas.py \
    tests/test_pallas_free_run.py 2>&1 | tail -15 | tee -a "$out/tests.txt"
  tests_status=${PIPESTATUS[0]}
fi

if [[ $parts == *,bench,* ]]; then
  echo "== train step" | tee -a "$out/bench.txt"
  # Rows are printed (JSON) as they are timed: a timeout keeps the ones done.
  peers="seqjax,seqjax device loop,seqjax pallas,seqjax pallas device loop"
  timeout 240 python -m seqjax.bench --shapes=seed,large --repeats=10 --out="$out/bench" \
    --peers="$peers,flax nn.RNN,torch nn.LSTM" 2>&1 \
    | grep -E "^\||^\{|skipping|does not compile" | tee -a "$out/bench.txt"
fi

if [[ $parts == *,rollout,* ]]; then
  echo "== rollout" | tee -a "$out/bench.txt"
  timeout 60 python -m seqjax.bench --rollout --repeats=10 --out="$out/rollout" 2>&1 \
    | grep -E "^\||does not compile" | tee -a "$out/bench.txt"
fi

if [[ $parts == *,tuning,* ]]; then
  echo "== kernel tuning" | tee -a "$out/bench.txt"
  timeout 120 python -m seqjax.bench --kernel_tuning --shapes=mean,freq,wide --repeats=5 \
    --out="$out/tuning" 2>&1 | grep -E "^\||^\{" | tee -a "$out/bench.txt"
fi

echo "== done: the figures are in $out"
if [[ $tests_status != 0 ]]; then
  echo "== the kernels' tests failed (status $tests_status): see $out/tests.txt"
  exit 1
fi
