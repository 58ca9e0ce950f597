"""On a CUDA GPU: the main command trains there in bfloat16 and ends with finite losses and an evaluation.

The rest of the suite holds JAX to 8 fake CPU devices (tests/conftest.py); this runs the command in a subprocess
with JAX_PLATFORMS=cuda, so it fails rather than falling back to the CPU. Skipped, saying so, without a GPU.
"""

import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, read_metrics


@pytest.mark.gpu
def test_the_command_trains_on_the_gpu_in_bfloat16(tmp_path):
    environment = {name: value for name, value in os.environ.items() if name not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "harjax.main",
            "--config=configs/full.py:synthetic,size=tiny",
            f"--workdir={tmp_path}",
            "--config.model.dtype=bfloat16",
        ],
        cwd=REPO,
        env=environment | {"JAX_PLATFORMS": "cuda"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(tmp_path)
    losses = [row["train/loss"] for row in metrics if "train/loss" in row]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert any("eval/accuracy" in row for row in metrics)
