"""The GPU measurements' one script runs, tiny and on the CPU, so it works the first time a GPU is there."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ITEMS = ["train_throughput", "flops", "input_pipeline", "extraction", "extraction", "prompt_tuning", "encoder_backward"]
ITEMS += ["ensemble_step"]


@pytest.mark.slow
def test_the_accelerator_script_runs_every_item(tmp_path):
    output = tmp_path / "accelerator.jsonl"
    # The cheapest XLA codegen: the smoke path checks that every item runs, not how fast.
    env = os.environ | {"PYTHON": sys.executable, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    result = subprocess.run(
        ["bash", "benchmarks/accelerator.sh", "--smoke", str(output)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["benchmark"] for line in lines] == ITEMS
    assert not any("error" in line for line in lines)
    by_name = {line["benchmark"]: line for line in lines}
    assert set(by_name["input_pipeline"]["examples_per_s"]) == {"none", "host", "device"}
    assert by_name["encoder_backward"]["faster"] in ("hand_written", "autodiff")
    video_llava, qwen = (line for line in lines if line["benchmark"] == "extraction")
    assert set(video_llava["clips_per_s"]["model"]) == {"2", "4"} and video_llava["family"] == "video_llava"
    assert qwen["family"] == "qwen_vl" and qwen["overlap"]["2"] > 0
    assert by_name["prompt_tuning"]["rows"][0]["batch_size"] == 2
    steps = {(row["members"], row["ensemble_step"]) for row in by_name["ensemble_step"]["results"]}
    assert steps == {(1, "single"), (2, "sequential"), (2, "vmap")}
