#!/usr/bin/env bash
# Several harjax processes on one machine, as a multi-host job would run (what tests/integration/test_multihost.py does).
# On CPU each process gets DEVICES_PER_PROCESS fake devices and collectives go through gloo.
#
#   launch/local.sh WORKDIR [--config=configs/full.py:synthetic] [--config.key=value ...]
#
# Variables: NUM_PROCESSES (2), DEVICES_PER_PROCESS (4, CPU only), PORT (12355), PYTHON (python).
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 WORKDIR [harjax.main flags ...]" >&2
  exit 2
fi
workdir=$1
shift
num_processes=${NUM_PROCESSES:-2}
port=${PORT:-12355}
python=${PYTHON:-python}
if [[ $# -eq 0 ]]; then
  set -- --config=configs/full.py:synthetic
fi

export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
export JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}"

pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null' INT TERM  # forward preemption to every process
for ((index = 0; index < num_processes; index++)); do
  "$python" -m harjax.main --workdir="$workdir" --coordinator_address="localhost:$port" \
    --num_processes="$num_processes" --process_id="$index" "$@" &
  pids+=("$!")
done
# A trapped signal interrupts `wait` with a status above 128 while the process still runs (saving its
# checkpoint): wait again until it has really exited, and report its own status (143 after the forwarded SIGTERM:
# stopped after its checkpoint, unfinished; the same command resumes).
status=0
for pid in "${pids[@]}"; do
  while true; do
    code=0
    wait "$pid" || code=$?
    if ((code <= 128)) || ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
  done
  ((code == 0)) || status=$code
done
exit "$status"
