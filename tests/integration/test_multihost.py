"""Several processes train like one: 2 processes x 4 CPU devices (gloo collectives) against 1 x 8 devices.

Both see the same global batches (one global data order, whatever the data cache), so every logged loss and
evaluation must agree; they agree to float32 rounding (reductions cross processes in another order), not bit for
bit. Checkpoints written
on one device count restore onto another.
"""

import json
import os
import signal

import numpy as np
import pytest

from tests import cli_runs

OVERRIDES = {"train.num_steps": 20, "train.log_every": 1, "train.eval_every": 10, "train.checkpoint_every": 5}


def _metrics(workdir):
    return [json.loads(line) for line in cli_runs.metrics_lines(workdir)]


def _assert_same_training(actual, expected):
    assert [line["step"] for line in actual] == [line["step"] for line in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=1e-6, err_msg=f"step {want['step']} {key}")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("one_process"))
    cli_runs.run(workdir, OVERRIDES, 8)
    return _metrics(workdir)


def _two_processes(workdir, overrides=OVERRIDES):
    port = cli_runs.free_port()
    return [
        cli_runs.start(
            workdir,
            overrides,
            4,
            f"--coordinator_address=localhost:{port}",
            "--num_processes=2",
            f"--process_id={index}",
        )
        for index in range(2)
    ]


def _interrupt_two_processes(workdir, sig, overrides=OVERRIDES):
    """Starts both processes, signals both after step 8 and a checkpoint: (returncode, stderr) each.

    `sig` goes to both process groups, input workers included.
    """
    processes = _two_processes(workdir, overrides)
    cli_runs.wait_until(workdir, processes, 8)
    for process in processes:
        cli_runs.signal_group(process, sig)
    results = []
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        results.append((process.returncode, stderr))
    return results


def _resume_two_processes(workdir, overrides=OVERRIDES):
    for process in _two_processes(workdir, overrides):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]


def test_an_ensemble_on_two_processes_killed_and_resumed_matches_one_process(tmp_path):
    """Two processes, killed and resumed, train every member of an ensemble on the batches one process trains on.

    One process reads its batches from the 'auto' cache (device-resident on CPU); two processes from the host cache:
    the same global batches reach the same steps. The members encode with MiniRocket's features, whose state every
    process fits before step 0 from the same examples and a resume restores. (The SIGTERM test below runs the
    CNN's single model on two processes on the streaming path, then resumes them on the device cache.)
    """
    overrides = OVERRIDES | {
        "model.ensemble_size": 2,
        "model.encoder": "minirocket",
        "model.minirocket.num_features": 168,
        "model.minirocket.stride": 2,
        "model.minirocket.dim": 16,
    }
    cli_runs.run(str(tmp_path / "one"), overrides, 8)
    expected = _metrics(str(tmp_path / "one"))
    assert any("eval/member_1/accuracy" in line for line in expected)
    workdir = str(tmp_path / "two")
    cache = "host"
    overrides |= {"data.cache": cache}
    for returncode, stderr in _interrupt_two_processes(workdir, signal.SIGKILL, overrides):
        assert returncode == -signal.SIGKILL, f"ended before it could be killed: {stderr[-2000:]}"
    assert max(cli_runs.logged_steps(workdir)) < OVERRIDES["train.num_steps"]
    _resume_two_processes(workdir, overrides)
    _assert_same_training(_metrics(workdir), expected)
    record = json.load(open(os.path.join(workdir, "config.json")))
    assert record["processes"] == 2 and record["devices"] == 8 and record["data_cache"] == cache


@pytest.mark.parametrize("first, then", [(8, 4), (4, 8)])
def test_checkpoints_restore_onto_another_device_count(tmp_path, one_process, first, then):
    workdir = str(tmp_path)
    process = cli_runs.start(workdir, OVERRIDES, first)
    cli_runs.wait_until(workdir, [process], 6)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-3000:]  # 128 + SIGTERM: stopped after its checkpoint, unfinished
    assert cli_runs.preemption_step(stderr) < OVERRIDES["train.num_steps"]
    cli_runs.run(workdir, OVERRIDES, then)
    record = json.load(open(os.path.join(workdir, "config.json")))
    assert record["devices"] == then and 0 < record["start_step"] < OVERRIDES["train.num_steps"]
    _assert_same_training(_metrics(workdir), one_process)


def test_sigterm_stops_every_process_at_the_same_step(tmp_path, one_process):
    """As a cluster preempts: SIGTERM to each process group stops every process at the same step.

    Input worker processes are included (cache 'none', where workers read records). The resume runs without workers
    and from the device cache: the batches are a function of the step, not of the iterator's workers or the cache.
    """
    workdir = str(tmp_path)
    stopped = []
    streamed = OVERRIDES | {"data.num_workers": 2, "data.cache": "none"}
    for returncode, stderr in _interrupt_two_processes(workdir, signal.SIGTERM, streamed):
        assert returncode == 143, stderr[-3000:]  # every process: stopped after the synced checkpoint, unfinished
        stopped.append(cli_runs.preemption_step(stderr))
    assert stopped[0] == stopped[1] == cli_runs.checkpoint_steps(workdir)[-1] < OVERRIDES["train.num_steps"]
    _resume_two_processes(workdir)
    _assert_same_training(_metrics(workdir), one_process)
