#!/usr/bin/env bash
# Launch `zett train` on every worker of a TPU slice (one process per host; jax finds the coordinator itself).
#
#   tpu/launch_tpu.sh NAME ZONE CONFIG [dotted.overrides ...] [--resume]
#   e.g. tpu/launch_tpu.sh zett-v4-32 us-central2-b configs/llama-7b.yaml run_dir=/mnt/runs/llama-7b
#
# run_dir must be the same shared directory on every worker (checkpoints are written collectively by orbax):
# mount a GCS bucket with gcsfuse (RUN_BUCKET=my-bucket mounts it at /mnt/runs first) or use Filestore/NFS.
# Logs: only process 0 prints; every worker's output goes to ~/zett-train.log on that worker.
set -euo pipefail
NAME=${1:?TPU name}; ZONE=${2:?zone}; CONFIG=${3:?config yaml}; shift 3
ARGS=$(printf ' %q' "$@")
MOUNT=""
if [[ -n "${RUN_BUCKET:-}" ]]; then
  MOUNT="sudo mkdir -p /mnt/runs && sudo chown \$USER /mnt/runs && (mountpoint -q /mnt/runs || gcsfuse --implicit-dirs ${RUN_BUCKET} /mnt/runs);"
fi
# Stop a previous run of ours first (its pid file), never other processes.
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "
  $MOUNT
  cd zett && . .venv/bin/activate
  if [ -f ~/zett-train.pid ] && kill -0 \$(cat ~/zett-train.pid) 2>/dev/null; then kill \$(cat ~/zett-train.pid); sleep 5; fi
  nohup zett train $CONFIG$ARGS --distributed-auto > ~/zett-train.log 2>&1 &
  echo \$! > ~/zett-train.pid
"
echo "launched; follow process 0 with:"
echo "  gcloud compute tpus tpu-vm ssh $NAME --zone $ZONE --worker=0 --command 'tail -f ~/zett-train.log'"
