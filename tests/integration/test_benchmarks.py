"""The benchmark scripts: the GPU measurements' one script runs tiny on the CPU, and the real-data folds.

The GPU script is run so that it works the first time a GPU is there; the folds keep the test split out of a
recipe's choice.
"""

import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO

ITEMS = ["train_throughput", "flops", "input_pipeline", "extraction", "extraction", "prompt_tuning", "encoder_backward"]
ITEMS += ["ensemble_step"]


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


def test_recipes_are_compared_on_folds_of_the_training_split_never_its_test_split():
    """--folds: each training recording is scored once; a subject's recordings stay in one fold; classes stratify."""
    from benchmarks import real_sensor_accuracy

    labels = [label for label in "abcde" for _ in range(5)]
    parts = {"TRAIN": ([np.full((1, 4), i) for i in range(25)], labels, None), "TEST": "never read"}
    splits = real_sensor_accuracy.fold_splits(parts, 5)
    recording = lambda series: [int(item[0, 0]) for item in series]  # noqa: E731
    scored = sorted(index for _, _, (series, _, _) in splits for index in recording(series))
    assert scored == list(range(25))  # each training recording scored exactly once
    for _, (trained, _, _), (held_out, held_out_labels, _) in splits:
        assert sorted(held_out_labels) == list("abcde")  # one of each class per fold
        assert sorted(recording(trained) + recording(held_out)) == list(range(25))  # the rest trains
    subjects = [1, 1, 2, 3, 3, 4, 5, 5]
    fold_of = real_sensor_accuracy.training_folds(["x"] * 8, subjects, 3)
    folds_of_subject = {subject: {fold_of[i] for i, s in enumerate(subjects) if s == subject} for subject in subjects}
    assert all(len(folds) == 1 for folds in folds_of_subject.values())
    assert set(fold_of) == {0, 1, 2}
    assert real_sensor_accuracy.fold_splits(parts, 0) == [("test", parts["TRAIN"], "never read")]
