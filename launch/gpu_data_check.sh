#!/usr/bin/env bash
# Training on files on a GPU, in about 3 minutes: the file-backed tests on the GPU, then
# the three generated files of tests/test_data.py trained there, their workdirs kept in
# OUT_DIR/runs so that a CPU machine can load and predict with them.
#   bash launch/gpu_data_check.sh [OUT_DIR]      # default: $OUT, else gpu_data_check/
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_data_check}}
mkdir -p "$out/runs" "$out/files"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
python - "$out/files" <<'PY'
import pathlib, sys
sys.path.insert(0, "tests")
import test_data
d = pathlib.Path(sys.argv[1])
test_data.labelled_csv(d / "labelled.csv")
test_data.variable_npz(d / "seqs.npz")
test_data.seasonal_csv(d / "series.csv")
PY
timeout 240 python -m pytest -q -p no:cacheprovider tests/test_data.py 2>&1 | tail -5
f=$out/files
python -m seqjax.main --config=configs/data.py --config.task.train=$f/labelled.csv \
  --workdir=$out/runs/labelled 2>&1 | tail -2
python -m seqjax.main --config=configs/data.py:regression --config.task.train=$f/seqs.npz \
  --workdir=$out/runs/seqs 2>&1 | tail -2
python -m seqjax.main --config=configs/data.py:forecast --config.task.train=$f/series.csv \
  --config.task.time_column=hour --config.task.season=24 --workdir=$out/runs/series 2>&1 | tail -2
rm -rf "$out"/runs/*/checkpoints "$out"/runs/*/tensorboard
