#!/usr/bin/env bash
# Create a TPU VM / pod slice and install zett on every worker.
#
#   tpu/create_tpu.sh NAME ZONE ACCELERATOR [REPO_URL] [REF]
#   e.g. tpu/create_tpu.sh zett-v4-32 us-central2-b v4-32 https://github.com/ORG/zett.git main
#
# Needs: gcloud (authenticated, project set) and TPU quota in ZONE. Spot/preemptible: export TPU_SPOT=1 (training
# saves on SIGTERM and resumes with --resume, see tpu/README.md).
set -euo pipefail
NAME=${1:?TPU name}; ZONE=${2:?zone}; ACCEL=${3:?accelerator type, e.g. v4-32 or v5p-64}
REPO_URL=${4:-https://github.com/ORG/zett.git}; REF=${5:-main}
case "$ACCEL" in
  v5p-*) VERSION=${TPU_VERSION:-v2-alpha-tpuv5} ;;
  v5litepod-*|v5e-*) VERSION=${TPU_VERSION:-v2-alpha-tpuv5-lite} ;;
  *) VERSION=${TPU_VERSION:-tpu-ubuntu2204-base} ;;
esac
EXTRA=()
if [[ "${TPU_SPOT:-0}" == 1 ]]; then EXTRA+=(--spot); fi

gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$ACCEL" --version "$VERSION" "${EXTRA[@]}"

# The same commands on every worker (host) of the slice: a venv with jax[tpu] and zett (editable).
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "
  set -e
  sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv git >/dev/null
  [ -d zett ] || git clone --quiet '$REPO_URL' zett
  cd zett && git fetch --quiet origin && git checkout --quiet '$REF'
  python3 -m venv .venv && . .venv/bin/activate
  pip install --quiet --upgrade pip
  pip install --quiet -e . 'jax[tpu]'
  python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.devices()[0].device_kind)'
"
echo "created $NAME ($ACCEL) in $ZONE; launch with: tpu/launch_tpu.sh $NAME $ZONE configs/llama-7b.yaml ..."
