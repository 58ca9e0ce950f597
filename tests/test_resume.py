"""A run killed at any step and restarted with the same command continues exactly as if never stopped.

These tests drive the real CLI in subprocesses (4 fake CPU devices each) and compare metrics.jsonl bit for bit:
the training losses averaged over windows of 7 steps (not aligned with the checkpoints every 25, so a resumed
window must carry on from the checkpoint) and every evaluation.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 300
OVERRIDES = {
    "data.synthetic.num_train": 512, "data.synthetic.num_eval": 100, "data.synthetic.seq_len": 32,
    "data.synthetic.video_dim": 32, "data.synthetic.num_classes": 6,
    "model.encoder_channels": "(16,32)", "model.encoder_strides": "(1,2)", "model.model_dim": 32,
    "model.num_layers": 1, "model.num_heads": 2, "model.mlp_dim": 64, "model.head_dim": 32,
    "model.projection_dim": 16, "train.batch_size": 32, "train.eval_batch_size": 32,
    "train.num_steps": NUM_STEPS, "train.warmup_steps": 10, "train.log_every": 7, "train.eval_every": 50,
    "train.checkpoint_every": 25,
}

pytestmark = pytest.mark.slow


def _command(workdir):
    return [sys.executable, "-m", "harjax.main", "--config=configs/full.py:synthetic", f"--workdir={workdir}",
            *(f"--config.{key}={value}" for key, value in OVERRIDES.items())]


def _environment():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return env | {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}


def _run(workdir):
    completed = subprocess.run(_command(workdir), cwd=REPO, env=_environment(), capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]


def _logged_steps(workdir):
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return [json.loads(line)["step"] for line in f if line.endswith("\n")]
    except json.JSONDecodeError:  # caught mid-write
        return []
    except FileNotFoundError:
        return []


def _interrupt(workdir, sig, after_step):
    """Starts the CLI and sends `sig` once it has logged `after_step` and committed a checkpoint."""
    process = subprocess.Popen(_command(workdir), cwd=REPO, env=_environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        committed = os.path.isdir(os.path.join(workdir, "checkpoints")) and any(
            name.isdigit() for name in os.listdir(os.path.join(workdir, "checkpoints")))
        if committed and max(_logged_steps(workdir), default=0) >= after_step:
            break
        time.sleep(0.02)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return f.read().splitlines()


def _checkpoint_steps(workdir):
    return sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")) if name.isdigit())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    _run(workdir)
    return _metrics(workdir)


def test_sigkill_then_restart_continues_bit_for_bit(tmp_path, uninterrupted):
    workdir = str(tmp_path)
    returncode, stderr = _interrupt(workdir, signal.SIGKILL, after_step=60)
    assert returncode == -signal.SIGKILL, f"the run ended before it could be killed: {stderr[-2000:]}"
    killed_at = max(_logged_steps(workdir))
    assert killed_at < NUM_STEPS
    _run(workdir)
    resumed = _metrics(workdir)
    assert len(resumed) == len(uninterrupted)
    assert resumed == uninterrupted  # every train loss and eval metric identical, as serialised floats


def test_sigterm_saves_before_exiting_and_resumes_exactly(tmp_path, uninterrupted):
    workdir = str(tmp_path)
    returncode, stderr = _interrupt(workdir, signal.SIGTERM, after_step=60)
    assert returncode == 0, stderr[-3000:]
    stopped = re.search(r"stopping at step (\d+) after the preemption checkpoint", stderr)
    assert stopped, f"the run did not stop for SIGTERM: {stderr[-2000:]}"
    stopped_at = int(stopped.group(1))
    assert stopped_at < NUM_STEPS
    assert _checkpoint_steps(workdir)[-1] == stopped_at  # saved at the very step it stopped, not an older one
    _run(workdir)
    assert _metrics(workdir) == uninterrupted
