"""Running the real CLI in subprocesses: small configs, fake CPU devices, waiting for steps, reading results."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from tests.conftest import REPO


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` from the repository, on the CPU, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def command(workdir: str, overrides: Mapping[str, Any], *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harjax.main",
        "--config=configs/full.py:synthetic,size=tiny",  # the tests' size (configs/common.py)
        f"--workdir={workdir}",
        *(f"--config.{key}={value}" for key, value in overrides.items()),
        *flags,
    ]


def environment(devices: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # The cheapest XLA codegen: these runs are compared with each other, all compiled alike, and compile dominates.
    return env | {
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0",
        "JAX_PLATFORMS": "cpu",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
    }


def start(workdir: str, overrides: Mapping[str, Any], devices: int, *flags: str) -> subprocess.Popen:
    """The CLI in its own process group (its pid is the group's), as a cluster runs it.

    signal_group then reaches the trainer and its input workers together.
    """
    return subprocess.Popen(
        command(workdir, overrides, *flags),
        cwd=REPO,
        env=environment(devices),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def signal_group(process: subprocess.Popen, sig: int) -> None:
    os.killpg(process.pid, sig)


def run(workdir: str, overrides: Mapping[str, Any], devices: int = 4, *flags: str) -> None:
    completed = subprocess.run(
        command(workdir, overrides, *flags),
        cwd=REPO,
        env=environment(devices),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def logged_steps(workdir: str) -> list[int]:
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return [json.loads(line)["step"] for line in f if line.endswith("\n")]
    except (FileNotFoundError, json.JSONDecodeError):  # not there yet, or caught mid-write
        return []


def checkpoint_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []


def wait_until(workdir: str, processes: list[subprocess.Popen], step: int, timeout: float = 300) -> None:
    """Until a checkpoint is committed and `step` logged (or a process ends)."""
    deadline = time.time() + timeout
    while time.time() < deadline and all(process.poll() is None for process in processes):
        if checkpoint_steps(workdir) and max(logged_steps(workdir), default=0) >= step:
            return
        time.sleep(0.02)


def metrics_lines(workdir: str) -> list[str]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return f.read().splitlines()


def preemption_step(stderr: str) -> int:
    """The step a run reports stopping at after SIGTERM or Ctrl-C; fails when it did not stop for one.

    harjax.main says so in one line once the checkpoint is written, and exits with 130 or 143.
    """
    found = re.search(
        r"harjax\.main: stopped at step (\d+) of \d+ after saving a checkpoint \((?:Ctrl-C|SIGTERM)\); "
        r"rerunning the same command resumes from it",
        stderr,
    )
    assert found, f"the run did not stop for SIGTERM or Ctrl-C: {stderr[-2000:]}"
    return int(found.group(1))
