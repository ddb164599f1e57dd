#!/usr/bin/env bash
# Training on files on a GPU (each step has a time limit):
#   1. the file-backed tests on the GPU (tests/test_data.py);
#   2. a file larger than the device's memory trains: a 4.0 GB .npz of [400000, 100, 25]
#      float32 sequences with the GPU limited to 2% of its memory (2.8 GB on an H200);
#      putting the file's x on the device fails there, training on it does not;
#   3. with RUNS=1, the three generated files of tests/conftest.py trained, their workdirs
#      kept in OUT_DIR/runs (without checkpoints), so a CPU machine can predict with them.
#   bash launch/gpu_data_check.sh [OUT_DIR]      # default: $OUT, else gpu_data_check/
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_data_check}}
mkdir -p "$out/runs" "$out/files"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
f=$out/files

echo "== tests"
timeout 300 python -m pytest -o addopts= -q -p no:cacheprovider tests/test_data.py 2>&1 | tail -5

echo "== a file larger than device memory"
big=/tmp/seqjax_big.npz
timeout 120 python - "$big" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
x = rng.standard_normal((400_000, 100, 25), dtype=np.float32)
y = x[:, -10:, 0].mean(1, keepdims=True) + 0.1 * x[:, :, 1].mean(1, keepdims=True)
np.savez(sys.argv[1], x=x, y=y)
print(f"{x.nbytes / 1e9:.1f} GB of x")
PY
XLA_PYTHON_CLIENT_MEM_FRACTION=0.02 timeout 60 python -c "
import jax, numpy as np
d = jax.devices()[0]
print('device memory limit', d.memory_stats()['bytes_limit'] / 1e9, 'GB')
try:
  jax.device_put(np.load('$big')['x']).block_until_ready(); print('x fits on the device')
except Exception as e:
  print('x on the device:', type(e).__name__, str(e).splitlines()[0][:120])
"
XLA_PYTHON_CLIENT_MEM_FRACTION=0.02 timeout 300 python -m seqjax.main \
  --config=configs/data.py:regression --config.task.train=$big --config.train.epochs=0 \
  --config.train.steps=300 --config.train.batch_size=256 --config.train.eval_every=300 \
  --config.train.eval_batch_size=4096 --workdir=/tmp/seqjax_big_run 2>&1 | grep -v "^step" | tail -4
rm -f "$big"

if [[ "${RUNS:-0}" == 1 ]]; then
  echo "== runs kept for predicting elsewhere"
  python - "$f" <<'PY'
import pathlib, sys
sys.path.insert(0, "tests")
import conftest
d = pathlib.Path(sys.argv[1])
conftest.write_labelled_csv(d / "labelled.csv")
conftest.write_variable_npz(d / "seqs.npz")
conftest.write_seasonal_csv(d / "series.csv")
PY
  python -m seqjax.main --config=configs/data.py --config.task.train=$f/labelled.csv \
    --workdir=$out/runs/labelled 2>&1 | tail -2
  python -m seqjax.main --config=configs/data.py:regression --config.task.train=$f/seqs.npz \
    --workdir=$out/runs/seqs 2>&1 | tail -2
  python -m seqjax.main --config=configs/data.py:forecast --config.task.train=$f/series.csv \
    --config.task.time_column=hour --config.task.season=24 --workdir=$out/runs/series 2>&1 | tail -2
  rm -rf "$out"/runs/*/checkpoints "$out"/runs/*/tensorboard
fi
