#!/usr/bin/env bash
# harjax on a Cloud TPU VM pod slice: the same command on every worker. --join_cluster lets JAX find the other
# workers through the TPU VM's metadata server (harjax/training/parallel.py), so no address flags are needed.
#
#   launch/tpu_pod.sh --config=configs/full.py --config.data.data_dir=gs://bucket/tfds
#
# Variables: TPU_NAME, ZONE, PROJECT (gcloud's), REPO_DIR (where harjax is checked out on the workers, with
# jax[tpu] installed), WORKDIR (a gs:// path or shared disk every worker sees).
set -euo pipefail

tpu_name=${TPU_NAME:?set TPU_NAME}
zone=${ZONE:?set ZONE}
project=${PROJECT:-$(gcloud config get-value project)}
repo_dir=${REPO_DIR:-\~/harjax}
workdir=${WORKDIR:?set WORKDIR}

flags=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu_name" --zone="$zone" --project="$project" --worker=all \
  --command="cd $repo_dir && python -m harjax.main --join_cluster --workdir=$workdir$flags"
