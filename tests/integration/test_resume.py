"""A run killed at any step and restarted with the same command continues exactly as if never stopped.

These tests drive the real CLI in subprocesses (4 fake CPU devices each) and compare metrics.jsonl bit for bit:
the training losses averaged over windows of 7 steps (not aligned with the checkpoints every 25, so a resumed
window must carry on from the checkpoint) and every evaluation.
"""

import signal

import pytest

from tests import cli_runs

NUM_STEPS = 150
OVERRIDES = {"train.num_steps": NUM_STEPS, "train.log_every": 7, "train.eval_every": 50, "train.checkpoint_every": 25}


def _interrupt(workdir, sig, after_step, overrides=OVERRIDES):
    """Starts the CLI and sends `sig` once it has logged `after_step` and committed a checkpoint."""
    process = cli_runs.start(workdir, overrides, 4)
    cli_runs.wait_until(workdir, [process], after_step)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    cli_runs.run(workdir, OVERRIDES)
    return cli_runs.metrics_lines(workdir)


def test_sigkill_then_restart_continues_bit_for_bit(tmp_path, uninterrupted):
    workdir = str(tmp_path)
    returncode, stderr = _interrupt(workdir, signal.SIGKILL, after_step=60)
    assert returncode == -signal.SIGKILL, f"the run ended before it could be killed: {stderr[-2000:]}"
    killed_at = max(cli_runs.logged_steps(workdir))
    assert killed_at < NUM_STEPS
    cli_runs.run(workdir, OVERRIDES)
    resumed = cli_runs.metrics_lines(workdir)
    assert len(resumed) == len(uninterrupted)
    assert resumed == uninterrupted  # every train loss and eval metric identical, as serialised floats


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_or_ctrl_c_saves_before_exiting_and_resumes_exactly(tmp_path, uninterrupted, sig):
    workdir = str(tmp_path)
    returncode, stderr = _interrupt(workdir, sig, after_step=60)
    assert returncode == (130 if sig == signal.SIGINT else 143), stderr[-3000:]  # not finished: `train && export` stops
    said = "Ctrl-C received" if sig == signal.SIGINT else "SIGTERM received"
    assert f"{said}: saving a checkpoint at the end of this step, then stopping" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    stopped_at = cli_runs.preemption_step(stderr)
    assert stopped_at < NUM_STEPS
    assert f"stopped at step {stopped_at} of {NUM_STEPS} after saving a checkpoint" in stderr
    assert cli_runs.checkpoint_steps(workdir)[-1] == stopped_at  # saved at the very step it stopped, not an older one
    cli_runs.run(workdir, OVERRIDES)
    assert cli_runs.metrics_lines(workdir) == uninterrupted


def test_an_ensemble_killed_and_restarted_continues_bit_for_bit(tmp_path):
    """Every member's parameters, optimizer state and keys are in the checkpoint: the same run, whatever the kill."""
    overrides = OVERRIDES | {"model.ensemble_size": 2, "train.num_steps": 100}
    reference = str(tmp_path / "uninterrupted")
    cli_runs.run(reference, overrides)
    workdir = str(tmp_path / "killed")
    returncode, stderr = _interrupt(workdir, signal.SIGKILL, 30, overrides)
    assert returncode == -signal.SIGKILL, f"the run ended before it could be killed: {stderr[-2000:]}"
    assert max(cli_runs.logged_steps(workdir)) < 100
    cli_runs.run(workdir, overrides)
    expected = cli_runs.metrics_lines(reference)
    assert any("eval/member_1/macro_f1" in line for line in expected)
    assert cli_runs.metrics_lines(workdir) == expected
