#!/usr/bin/env bash
# Runs the four experiments and the gain ablations on this machine, one after another.
#   bash launch/local.sh            # everything (about an hour on a 2-core CPU)
#   bash launch/local.sh quick      # smoke run of each config, seconds each
# Outputs go to runs/local/<name>/ (results.json, plots, metrics); then a table is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/local
quick=${1:-}
run() {  # name, then the arguments of seqjax.main
  local name=$1; shift
  echo "== $name"
  python -m seqjax.main --workdir="$out/$name" "$@"
}
if [[ "$quick" == quick ]]; then
  for task in freq mean sine echo; do run "$task-quick" --config="configs/$task.py:quick"; done
else
  for f in 10 20 30 45; do run "freq$f" --config="configs/freq.py:max_freq=$f"; done
  run mean200 --config=configs/mean.py
  run mean2000 --config=configs/mean.py:length=2000
  run sine --config=configs/sine.py
  run echo5 --config=configs/echo.py
  run echo1 --config=configs/echo.py:window=1,lag=5
  for task in freq mean sine echo; do run "${task}_seed" --config="configs/$task.py:seed"; done
  python -m seqjax.sweep --config=configs/mean.py:seed --sweep=gain --converged=0.05 \
    --workdir=runs/sweep/mean-gain
  python -m seqjax.sweep --config=configs/freq.py:seed --sweep=gain --converged=0.5 \
    --workdir=runs/sweep/freq-gain
fi
python -m seqjax.report "$out"
