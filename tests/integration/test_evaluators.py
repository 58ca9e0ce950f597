"""Evaluators as plug-ins: configured by config.evals, checked before anything trains, and one file to add.

The half that trains, builds or starts commands of its own; the in-process checks are tests/unit/test_evaluators.py.
"""

import os
import subprocess
import sys

import ml_collections
import pytest

from harjax.evaluators import common as evaluators
from tests.conftest import REPO, small_config


def test_a_config_of_the_old_shape_names_the_new_keys(tmp_path):
    config = small_config()
    config.unlock()
    config.eval = ml_collections.ConfigDict({"robustness": True})
    with pytest.raises(ValueError, match=r"config\.eval\.robustness -> config\.evals\.robustness\.at_end"):
        evaluators.schedules(config)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "harjax.main",
            "--config=configs/full.py:synthetic",
            f"--workdir={tmp_path}",
            "--config.eval.attention_examples=3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert completed.returncode != 0
    assert "--config.eval.attention_examples: this key moved to config.evals.attention.at_end" in completed.stderr
