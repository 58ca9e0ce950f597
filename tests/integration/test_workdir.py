"""Nothing lost, nothing mixed up in a workdir: one writer, the data a run was trained on, damaged checkpoints.

The half that trains, builds or starts commands of its own; the in-process checks are tests/unit/test_workdir.py.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from harjax import errors
from harjax.training import loop, workdir as workdir_lib
from tests.conftest import REPO, read_metrics


def test_the_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from harjax.training import workdir\n"
            "with workdir.locked(sys.argv[1]):\n    print('locked', flush=True); time.sleep(120)",
            str(tmp_path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(workdir_lib.WorkdirError, match=rf"in use by pid {holder.pid} "):
            with workdir_lib.locked(str(tmp_path)):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdir_lib.locked(str(tmp_path)):  # the kernel released it with the process
        assert f"pid {os.getpid()} " in open(tmp_path / workdir_lib.LOCK_FILE).read()


def test_resuming_on_other_data_is_refused_unless_allowed(trained_full, tmp_path):
    workdir = trained_full.copy(tmp_path / "workdir")
    config = trained_full.fresh_config()
    config.data.synthetic.noise = 0.7  # other recordings of the same shapes
    config.train.num_steps = 7
    with pytest.raises(
        errors.UserError, match=r"trained on other data: split 'eval' was synthetic .*--allow_data_change"
    ):
        loop.train_and_evaluate(config, workdir)
    assert max(line["step"] for line in read_metrics(workdir)) == 6  # nothing trained
    loop.train_and_evaluate(config, workdir, allow_data_change=True)
    last_start = [json.loads(line) for line in open(os.path.join(workdir, "runs.jsonl"))][-1]
    assert set(last_start["events"]["allow_data_change"]) == {"eval", "train"}
    assert max(line["step"] for line in read_metrics(workdir)) == 7
