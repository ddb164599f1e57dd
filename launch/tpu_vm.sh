#!/usr/bin/env bash
# Creates a Cloud TPU VM, installs seqjax on every worker and runs a config or a sweep there.
#
#   REPO=https://github.com/<you>/seqjax.git ZONE=us-central2-b TYPE=v4-8 NAME=seqjax-tpu \
#     bash launch/tpu_vm.sh create
#   bash launch/tpu_vm.sh run python -m seqjax.main --config=configs/mean.py:length=2000
#   bash launch/tpu_vm.sh run python -m seqjax.sweep --config=configs/mean.py:seed --sweep=gain
#   bash launch/tpu_vm.sh fetch runs ./tpu_runs     # copy results back from worker 0
#   bash launch/tpu_vm.sh delete
#
# `run` executes the same command on all workers (--worker=all), the standard
# way to start a JAX program on a TPU VM. Any slice works, single-host (v4-8) or
# a multi-host pod (v4-32, v5litepod-64): with SEQJAX_DISTRIBUTED=1 every worker
# calls jax.distributed.initialize() (JAX finds the pod from the TPU metadata),
# the mesh spans all hosts' chips, worker 0 writes logs, metrics and plots, and
# orbax writes checkpoints from every host. On a pod, give --workdir a directory
# all workers share (a file system mounted on each, e.g. gcsfuse or NFS):
#   bash launch/tpu_vm.sh run python -m seqjax.main --config=configs/freq.py \
#     --workdir=/mnt/shared/freq --config.train.batch_size=1024
set -euo pipefail
: "${NAME:=seqjax-tpu}" "${ZONE:=us-central2-b}" "${TYPE:=v4-8}" "${VERSION:=tpu-ubuntu2204-base}"
: "${REPO:=}"
cmd=${1:?usage: tpu_vm.sh create|run CMD...|fetch SRC DST|delete}; shift || true
ssh_all() { gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"; }
case "$cmd" in
  create)
    [[ -n "$REPO" ]] || { echo "error: set REPO to the seqjax git URL" >&2; exit 2; }
    gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$TYPE" \
      --version="$VERSION"
    ssh_all "git clone $REPO seqjax && cd seqjax && python3 -m pip install -q 'jax[tpu]' -e ."
    ;;
  run)
    ssh_all "cd seqjax && SEQJAX_DISTRIBUTED=1 $*"
    ;;
  fetch)
    gcloud compute tpus tpu-vm scp --zone="$ZONE" --worker=0 --recurse "$NAME:seqjax/$1" "$2"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet
    ;;
  *) echo "error: unknown command '$cmd'; allowed: create, run, fetch, delete" >&2; exit 2 ;;
esac
