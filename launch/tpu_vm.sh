#!/usr/bin/env bash
# Creates a Cloud TPU VM, installs seqjax on every worker and runs a config or a sweep there.
#
#   REPO=https://github.com/<owner>/seqjax.git ZONE=us-central2-b TYPE=v4-8 NAME=seqjax-tpu \
#     bash launch/tpu_vm.sh create      # safe to rerun: an existing VM is reused, the code updated
#   bash launch/tpu_vm.sh run python3 -m seqjax.main --config=configs/mean.py:length=2000 \
#     --workdir=gs://<bucket>/mean2000
#   bash launch/tpu_vm.sh run python3 -m seqjax.sweep --config=configs/mean.py:seed --sweep=gain \
#     --workdir=gs://<bucket>/mean-gain
#   bash launch/tpu_vm.sh doctor        # python3 -m seqjax.doctor on every worker
#   bash launch/tpu_vm.sh fetch runs ./tpu_runs     # copy a local workdir back from worker 0
#   bash launch/tpu_vm.sh delete
#
# `create` picks the TPU software version that matches TYPE (v4 and older, v5e, v5p and v6e
# each need their own; VERSION overrides it), installs JAX for TPUs and seqjax (with gcsfs
# for gs:// workdirs) in a Python 3.12 virtualenv on every worker, then runs
# `python3 -m seqjax.doctor` on each: a worker that is not ready says so in one line.
#
# `run` executes the same command on all workers (--worker=all), the standard way to start
# a JAX program on a TPU VM. Any slice works, single-host (v4-8) or a multi-host pod (v4-32,
# v5litepod-64): with SEQJAX_DISTRIBUTED=1 every worker calls jax.distributed.initialize()
# (JAX finds the pod from the TPU metadata), the mesh spans all hosts' chips, worker 0
# writes logs, metrics and plots, and orbax writes checkpoints from every host. Give a pod
# a --workdir on Cloud Storage (gs://bucket/run): every worker reaches it, no shared NFS.
set -euo pipefail
: "${NAME:=seqjax-tpu}" "${ZONE:=us-central2-b}" "${TYPE:=v4-8}"
: "${REPO:=}"
cmd=${1:?usage: tpu_vm.sh create|run CMD...|doctor|fetch SRC DST|delete}; shift || true

# The TPU software version for an accelerator type (Cloud TPU's "TPU software versions").
runtime_version() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    *) echo "error: TYPE=$1 is not a known accelerator type (v2-8, v3-8, v4-8, v5litepod-8," \
         "v5p-8, v6e-8, ...); set VERSION to its TPU software version" >&2; return 2 ;;
  esac
}

ssh_all() { gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"; }

# seqjax needs Python >= 3.11; the TPU images ship 3.10, so each worker gets a Python 3.12
# virtualenv (uv fetches the interpreter), and every command runs inside it.
VENV='~/seqjax-venv'
in_venv="source $VENV/bin/activate && cd seqjax"

doctor_all() {
  ssh_all "$in_venv && SEQJAX_DISTRIBUTED=1 python3 -m seqjax.doctor"
}

case "$cmd" in
  create)
    [[ -n "$REPO" ]] || { echo "error: set REPO to the seqjax git URL" >&2; exit 2; }
    version=${VERSION:-$(runtime_version "$TYPE")}
    if gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" >/dev/null 2>&1; then
      echo "TPU VM $NAME exists in $ZONE: reusing it"
    else
      gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$TYPE" \
        --version="$version"
    fi
    # The virtualenv and the clone are made once; a rerun updates the clone and reinstalls.
    ssh_all "([ -x $VENV/bin/python3 ] || (python3 -m pip install -q --user uv && \
python3 -m uv venv -q --seed -p 3.12 $VENV)) && \
(if [ -d seqjax/.git ]; then git -C seqjax pull -q --ff-only; else git clone -q $REPO seqjax; fi) \
&& $in_venv && python3 -m pip install -q 'jax[tpu]' gcsfs -e ."
    doctor_all
    ;;
  run)
    ssh_all "$in_venv && SEQJAX_DISTRIBUTED=1 $*"
    ;;
  doctor)
    doctor_all
    ;;
  fetch)
    gcloud compute tpus tpu-vm scp --zone="$ZONE" --worker=0 --recurse "$NAME:seqjax/$1" "$2"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet
    ;;
  *) echo "error: unknown command '$cmd'; allowed: create, run, doctor, fetch, delete" >&2
     exit 2 ;;
esac
