#!/usr/bin/env bash
# Every measurement that needs an accelerator, in one go: each item has a time cap, the caps add to 7.9 minutes,
# each item appending one JSON line to one file. GPU time is scarce: run it once, then copy the lines into
# benchmarks/RESULTS.md with the GPU's name.
#
#   bash benchmarks/accelerator.sh [OUTPUT]           # on a GPU machine (default OUTPUT: accelerator.jsonl)
#   bash benchmarks/accelerator.sh --smoke [OUTPUT]   # every item tiny, on the CPU, two at once: what the tests run
#
# Items: (1) train step against the PyTorch reference, eager and torch.compile, float32 and bfloat16, batch 128
# and 1024; (2) the step's FLOP/s as a share of the measured matmul peak in its dtype, batch 1024; (3) the input
# pipeline per data cache against the GPU step; (4) Video-LLaVA-7B and Qwen2-VL-7B extraction (their published
# architectures with random weights, bfloat16, 8 frames per clip, batch 8 and 16): decoding in 14 worker processes,
# the forward alone and end to end from 1920x1080 clips (target: end to end >= 0.9x the forward); (5) prompt tuning
# on Video-LLaVA-7B, batch 8 and 16: s/step and peak GPU memory; (6) the sensor encoder's hand-written backward
# against autodiff; (7) an ensemble's step, vmapped and sequential, against N single steps. Needs the training install and the extract extra
# (torch, transformers, av) on the machine; PYTHON picks the interpreter. An item that fails or runs out of time
# writes an error line and the rest go on; the exit status is the number of failed items.
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=false
if [ "${1:-}" = "--smoke" ]; then
  smoke=true
  shift
fi
output=${1:-accelerator.jsonl}
python=${PYTHON:-python}
: > "$output"

# item NAME SECONDS COMMAND...: runs COMMAND for at most SECONDS and keeps its last line (its JSON) for $output, or
# an error line. On a GPU the items run one at a time (they measure); the smoke path runs two at once (2 CPU cores,
# each item mostly compiling on one).
count=0
parts=$(mktemp -d)
item() {
  count=$((count + 1))
  if $smoke; then
    while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n; done
    run_item "$(printf '%s/%02d' "$parts" "$count")" "$@" &
  else
    run_item "$(printf '%s/%02d' "$parts" "$count")" "$@"
  fi
}
run_item() {
  local part=$1 name=$2 limit=$3 log status start=$SECONDS
  shift 3
  log=$(mktemp)
  echo "== $name (at most ${limit} s): $*" >&2
  timeout "$limit" "$@" > "$log" 2>&1
  status=$?
  echo "== $name: exit status $status after $((SECONDS - start)) s" >&2
  if [ "$status" -eq 0 ] && tail -n 1 "$log" | "$python" -c "import json, sys; json.loads(sys.stdin.read())" 2>/dev/null; then
    tail -n 1 "$log" > "$part"
  else
    tail -n 15 "$log" >&2
    printf '{"benchmark": "%s", "error": "exit status %s%s", "command": "%s"}\n' "$name" "$status" \
      "$([ "$status" -eq 124 ] && echo ', out of time')" "$*" > "$part"
  fi
  rm -f "$log"
}

if $smoke; then
  export JAX_PLATFORMS=cpu
  item train_throughput 300 "$python" benchmarks/train_throughput.py --sizes=tiny --batch_size=8 --steps=1 --rounds=1
  item flops 180 "$python" benchmarks/flops.py --sizes=tiny --batch_size=8 --steps=1 --dtype=bfloat16
  item input_pipeline 300 "$python" benchmarks/input_pipeline.py --smoke
  item extraction 300 "$python" benchmarks/extraction.py --model=random-tiny --batch_size=2,4 --clip_frames=8 \
    --frame_width=96 --frame_height=64
  item "extraction qwen2_vl" 300 "$python" benchmarks/extraction.py --model=random-tiny-qwen2-vl --batch_size=2 \
    --clip_frames=8 --frame_width=96 --frame_height=64
  item prompt_tuning 180 "$python" benchmarks/prompt_tuning.py --batch_size=2 --steps=1 --clip_frames=8 \
    --frame_width=96 --frame_height=64
  item encoder_backward 180 "$python" benchmarks/encoder_backward.py --sizes=tiny --batch_size=8 --steps=1 --rounds=1
  # The small-data recipe's ensemble only: the full model's ensemble step compiles in tests/integration/test_ensemble.py.
  item ensemble_step 180 "$python" benchmarks/ensemble_step.py --sizes=tiny --members=1,2 --steps=1 --rounds=1 \
    --models=sensor_small
else
  for dtype in float32 bfloat16; do
    for batch in 128 1024; do
      item "train_throughput $dtype $batch" 30 "$python" benchmarks/train_throughput.py --platform=gpu \
        --dtype="$dtype" --batch_size="$batch" --steps=10 --rounds=3
    done
  done
  for dtype in bfloat16 float32; do
    item "flops $dtype" 20 "$python" benchmarks/flops.py --dtype="$dtype" --batch_size=1024 --steps=20
  done
  item input_pipeline 70 "$python" benchmarks/input_pipeline.py --num_workers=8
  item extraction 75 "$python" benchmarks/extraction.py --model=random-7b --device=cuda --batch_size=8,16 \
    --frame_width=1920 --frame_height=1080 --clip_frames=60 --decode_workers=14
  item "extraction qwen2_vl" 55 "$python" benchmarks/extraction.py --model=random-qwen2-vl-7b --device=cuda \
    --batch_size=8,16 --frame_width=1920 --frame_height=1080 --clip_frames=60 --decode_workers=14
  item prompt_tuning 45 "$python" benchmarks/prompt_tuning.py --model=random-7b --device=cuda --batch_size=8,16 \
    --steps=3 --decode_workers=14
  for dtype in float32 bfloat16; do
    item "encoder_backward $dtype" 20 "$python" benchmarks/encoder_backward.py --dtype="$dtype" --batch_size=1024
  done
  # Whether vmapped members beat sequential ones here (config.model.ensemble_step='auto' assumes so off the CPU).
  item ensemble_step 30 "$python" benchmarks/ensemble_step.py --members=1,5 --steps=10 --rounds=3
fi
wait
cat "$parts"/* > "$output"
rm -r "$parts"
failed=$(grep -c '"error"' "$output")
echo "$failed item(s) failed; results in $output" >&2
exit "$failed"
