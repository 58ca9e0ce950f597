"""Trains a suite's (run, seed) pairs as harjax.main subprocesses, up to N at once, and records each outcome.

Each trial runs in DIR/runs/<group>/<run>/seed<k> with its log there, so a crash of one run cannot take the others
down. A run holds its workdir's lock for as long as it lives, and dies with the runner (SIGTERM: it checkpoints),
so a rerun resumes it exactly. Only what the runner recorded as finished is skipped.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from harjax import cli
from harjax.study import suites
from harjax.training import loop

# harjax.main's statuses after a signal: checkpointed and stopped (130 Ctrl-C, 143 SIGTERM), or killed by it before
# training started. A status of 0 means the run is complete.
STOPPED_STATUSES = (cli.INTERRUPTED_STATUS, cli.TERMINATED_STATUS, -signal.SIGINT, -signal.SIGTERM)


def _write_status(workdir: str, status: dict[str, Any]) -> None:
    temporary = os.path.join(workdir, "." + suites.STATUS_FILE)
    with open(temporary, "w") as f:
        json.dump(status, f, indent=1)
    os.replace(temporary, os.path.join(workdir, suites.STATUS_FILE))


def _exit_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when the suite process dies (even by kill -9).

    The run then saves a preemption checkpoint and a rerun resumes it exactly.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Runner:
    """Starts trials as subprocesses (up to `parallel` at once) and records each one's outcome."""

    def __init__(self, suite: suites.Suite, root: str, parallel: int):
        self.suite, self.root, self.parallel = suite, root, parallel
        self.running: dict[subprocess.Popen, tuple[suites.Trial, float, Any]] = {}
        self.stopping = False
        self.environment = dict(os.environ)
        # Runs of one suite compile the same programs over and over: share XLA's compilation cache.
        self.environment.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, "jax_cache"))
        if parallel > 1:  # runs sharing an accelerator must not each take 75% of its memory
            self.environment.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    def stop(self, signum, frame) -> None:
        logging.warning("signal %d: asking the running runs to checkpoint and stop; no new run starts", signum)
        self.stopping = True
        for process in self.running:
            process.send_signal(signal.SIGTERM)

    def check_commands(self, todo: Sequence[suites.Trial]) -> None:
        """Refuses, before anything starts, a run recorded with another command (other settings).

        Such a run is neither skipped as finished nor resumed under the new command, which would mix settings in one
        table.
        """
        for trial in todo:
            workdir = trial.workdir(self.root)
            status = suites.read_status(workdir)
            # A record from before overrides were merged holds repeated keys: compared merged, it is the same run.
            if "command" in status and suites.merged_command(status["command"]) != trial.command(self.suite, self.root):
                raise suites.SuiteError(
                    f"{trial.run.key} seed {trial.seed} ran in {workdir} ({status['status']}) "
                    f"with another command ({shlex.join(status['command'])}); use a new "
                    "--workdir for other settings, or delete that run's workdir"
                )

    def run(self, todo: Sequence[suites.Trial]) -> None:
        """Runs the trials in order, a student once its teacher's trial has finished."""
        queue = list(todo)
        while (queue and not self.stopping) or self.running:
            while queue and not self.stopping and len(self.running) < self.parallel:
                ready = next((trial for trial in queue if self._teacher_finished(trial)), None)
                if ready is None:
                    break
                queue.remove(ready)
                self._start(ready)
            waiting = {trial.workdir(self.root) for trial, _, _ in self.running.values()} | {
                trial.workdir(self.root) for trial in queue
            }
            for trial in list(queue):  # a teacher that neither finished nor will: its students cannot run
                if not self._teacher_finished(trial) and trial.teacher_workdir(self.root) not in waiting:
                    queue.remove(trial)
                    self._teacher_missing(trial)
            self._reap()

    def _teacher_finished(self, trial: suites.Trial) -> bool:
        teacher = trial.teacher_workdir(self.root)
        return teacher is None or suites.read_status(teacher)["status"] == "finished"

    def _teacher_missing(self, trial: suites.Trial) -> None:
        workdir, teacher = trial.workdir(self.root), trial.teacher_workdir(self.root)
        os.makedirs(workdir, exist_ok=True)
        why = f"its teacher {trial.run.teacher} seed {trial.seed} has not finished ({teacher}); train it first"
        _write_status(workdir, {"status": "failed", "why": why, "command": trial.command(self.suite, self.root)})
        logging.warning("[%d] %s seed %d: not started: %s", trial.index, trial.run.key, trial.seed, why)

    def _start(self, trial: suites.Trial) -> None:
        workdir = trial.workdir(self.root)
        command = trial.command(self.suite, self.root)
        # Only what this runner recorded is skipped: a run without a record (started by hand, or orphaned by a
        # killed suite) is started again, and harjax.main resumes it or finds it complete.
        if suites.read_status(workdir)["status"] == "finished":
            logging.info("[%d] %s seed %d: finished earlier, skipped", trial.index, trial.run.key, trial.seed)
            return
        os.makedirs(workdir, exist_ok=True)
        # The run holds this lock for as long as it lives (it inherits the descriptor), also when this process is
        # gone: a rerun, or a second array task of the same index, waits instead of training beside it.
        lock = open(os.path.join(workdir, ".suite.lock"), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.warning(
                "[%d] %s seed %d: an earlier process still runs in %s; waiting for it",
                trial.index,
                trial.run.key,
                trial.seed,
                workdir,
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
        log = open(os.path.join(workdir, suites.LOG_FILE), "a")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        log.flush()
        logging.info(
            "[%d] %s seed %d: %s",
            trial.index,
            trial.run.key,
            trial.seed,
            "resuming" if os.path.isdir(os.path.join(workdir, "checkpoints")) else "starting",
        )
        process = subprocess.Popen(
            [sys.executable, *command[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environment,
            pass_fds=(lock.fileno(),),
            preexec_fn=_exit_with_parent if sys.platform.startswith("linux") else None,
        )
        self.running[process] = (trial, time.time(), (log, lock))

    def _reap(self) -> None:
        for process in list(self.running):
            if process.poll() is None:
                continue
            trial, started, files = self.running.pop(process)
            for file in files:
                file.close()
            workdir = trial.workdir(self.root)
            complete = process.returncode == 0 and loop.training_complete(self.suite.configs[trial.run.key], workdir)
            if complete:
                outcome = "finished"
            elif process.returncode in STOPPED_STATUSES:  # stopped by a signal: a rerun resumes it
                outcome = "interrupted"
            else:
                outcome = "failed"
            _write_status(
                workdir,
                {
                    "status": outcome,
                    "returncode": process.returncode,
                    "command": trial.command(self.suite, self.root),
                    "log": os.path.join(workdir, suites.LOG_FILE),
                },
            )
            logging.log(
                logging.INFO if complete else logging.WARNING,
                "[%d] %s seed %d: %s after %.0f s%s",
                trial.index,
                trial.run.key,
                trial.seed,
                outcome,
                time.time() - started,
                "" if complete else f" (log: {os.path.join(workdir, suites.LOG_FILE)})",
            )
        if self.running:
            time.sleep(0.2)
