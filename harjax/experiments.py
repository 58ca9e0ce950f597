"""A whole study in one command: every (run, seed) of a suite trained by harjax.main, then one report.

    python -m harjax.experiments --suite=configs/suites/paper.py[:VARIANT] --workdir=DIR [--seeds=3]
        [--only=GROUP,...] [--list] [--run_index=N] [--report] [--parallel=N] [--config.KEY=VALUE ...]

Each (run, seed) is the harjax.main command --list prints, run as a subprocess in DIR/runs/<group>/<run>/seed<k>,
so a crash of one run cannot take the others down, and a cluster can run one per job (--run_index, or
SLURM_ARRAY_TASK_ID). Rerunning the command skips finished runs and resumes interrupted ones from their
checkpoints; --report (and the end of a full run) writes DIR/report/ from whatever has finished.
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
from typing import Any, Sequence

from absl import app, flags
from ml_collections import config_flags

from harjax import report, suites, train
from harjax.suites import CONFIG_OVERRIDE_PREFIX, LOG_FILE, STATUS_FILE, Suite, Trial

_SUITE = config_flags.DEFINE_config_file("suite", None, "A suite file, e.g. configs/suites/paper.py:synthetic.",
                                         lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The suite's directory: runs/, report/ and shared data.")
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds per run (0..N-1); default: the suite's own.")
_ONLY = flags.DEFINE_list("only", None, "Run (and list) only these groups.")
_LIST = flags.DEFINE_bool("list", False, "Print each (run, seed) with its index and harjax.main command; run nothing.")
_RUN_INDEX = flags.DEFINE_integer("run_index", None, "Run only the (run, seed) with this index of --list "
                                  "(default: SLURM_ARRAY_TASK_ID when set).")
_REPORT = flags.DEFINE_bool("report", False, "Only gather finished runs into DIR/report/.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs trained at the same time on this machine.")
flags.mark_flags_as_required(["suite", "workdir"])


def _write_status(workdir: str, status: dict[str, Any]) -> None:
    temporary = os.path.join(workdir, "." + STATUS_FILE)
    with open(temporary, "w") as f:
        json.dump(status, f, indent=1)
    os.replace(temporary, os.path.join(workdir, STATUS_FILE))


def _exit_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when the suite process dies (even by kill -9), so the run saves a
    preemption checkpoint and a rerun resumes it exactly."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Runner:
    """Starts trials as subprocesses (up to `parallel` at once) and records each one's outcome."""

    def __init__(self, suite: Suite, root: str, parallel: int):
        self.suite, self.root, self.parallel = suite, root, parallel
        self.running: dict[subprocess.Popen, tuple[Trial, float, Any]] = {}
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

    def check_commands(self, todo: Sequence[Trial]) -> None:
        """Before anything starts: a run recorded with another command (other settings) is neither skipped as
        finished nor resumed under the new one, which would mix settings in one table."""
        for trial in todo:
            workdir = trial.workdir(self.root)
            status = suites.read_status(workdir)
            if "command" in status and status["command"] != trial.command(self.suite, self.root):
                raise suites.SuiteError(f"{trial.run.key} seed {trial.seed} ran in {workdir} ({status['status']}) "
                                        f"with another command ({shlex.join(status['command'])}); use a new "
                                        "--workdir for other settings, or delete that run's workdir")

    def run(self, todo: Sequence[Trial]) -> None:
        queue = list(todo)
        while (queue and not self.stopping) or self.running:
            while queue and not self.stopping and len(self.running) < self.parallel:
                self._start(queue.pop(0))
            self._reap()

    def _start(self, trial: Trial) -> None:
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
            logging.warning("[%d] %s seed %d: an earlier process still runs in %s; waiting for it", trial.index,
                            trial.run.key, trial.seed, workdir)
            fcntl.flock(lock, fcntl.LOCK_EX)
        log = open(os.path.join(workdir, LOG_FILE), "a")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        log.flush()
        logging.info("[%d] %s seed %d: %s", trial.index, trial.run.key, trial.seed,
                     "resuming" if os.path.isdir(os.path.join(workdir, "checkpoints")) else "starting")
        process = subprocess.Popen([sys.executable, *command[1:]], stdout=log, stderr=subprocess.STDOUT,
                                   env=self.environment, pass_fds=(lock.fileno(),),
                                   preexec_fn=_exit_with_parent if sys.platform.startswith("linux") else None)
        self.running[process] = (trial, time.time(), (log, lock))

    def _reap(self) -> None:
        for process in list(self.running):
            if process.poll() is None:
                continue
            trial, started, files = self.running.pop(process)
            for file in files:
                file.close()
            workdir = trial.workdir(self.root)
            complete = process.returncode == 0 and train.training_complete(self.suite.configs[trial.run.key], workdir)
            if complete:
                outcome = "finished"
            elif process.returncode in (0, -signal.SIGTERM):  # stopped for preemption: a rerun resumes it
                outcome = "interrupted"
            else:
                outcome = "failed"
            _write_status(workdir, {"status": outcome, "returncode": process.returncode,
                                    "command": trial.command(self.suite, self.root),
                                    "log": os.path.join(workdir, LOG_FILE)})
            logging.log(logging.INFO if complete else logging.WARNING, "[%d] %s seed %d: %s after %.0f s%s",
                        trial.index, trial.run.key, trial.seed, outcome, time.time() - started,
                        "" if complete else f" (log: {os.path.join(workdir, LOG_FILE)})")
        if self.running:
            time.sleep(0.2)


_config_overrides: list[str] = []


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parses the suite's own flags; --config.KEY=VALUE are kept aside for every run's config."""
    _config_overrides[:] = [arg[len(CONFIG_OVERRIDE_PREFIX):] for arg in argv[1:]
                            if arg.startswith(CONFIG_OVERRIDE_PREFIX)]
    return flags.FLAGS([argv[0], *(arg for arg in argv[1:] if not arg.startswith(CONFIG_OVERRIDE_PREFIX))])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    root = os.path.abspath(_WORKDIR.value)
    try:
        suite = suites.load_suite(_SUITE.value, config_flags.get_config_filename(flags.FLAGS["suite"]), root,
                                  _config_overrides)
        seeds = suite.seeds if _SEEDS.value is None else _SEEDS.value
        selected = suites.trials(suite, seeds, _ONLY.value)
    except suites.SuiteError as error:
        raise app.UsageError(str(error)) from error
    for group in suite.groups:
        if group.skipped:
            logging.warning("group %s is skipped: %s", group.name, group.skipped)
        for name, reason in group.excluded.items():
            logging.info("group %s leaves out %s: %s", group.name, name, reason)
    if _LIST.value:
        for trial in selected:
            print(f"{trial.index}\t{trial.run.key}\tseed{trial.seed}\t{shlex.join(trial.command(suite, root))}")
        return
    if _REPORT.value:
        report.write_report(suite, seeds, root)
        return
    index = _RUN_INDEX.value
    if index is None and "SLURM_ARRAY_TASK_ID" in os.environ:
        index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    if index is not None and not 0 <= index < len(selected):
        raise app.UsageError(f"--run_index={index} is out of range: this suite has {len(selected)} (run, seed) "
                             f"pairs (0..{len(selected) - 1}; see --list)")
    os.makedirs(root, exist_ok=True)
    runner = _Runner(suite, root, max(1, _PARALLEL.value))
    signal.signal(signal.SIGTERM, runner.stop)
    todo = selected if index is None else [selected[index]]
    try:
        runner.check_commands(todo)
    except suites.SuiteError as error:
        raise app.UsageError(str(error)) from error
    runner.run(todo)
    if runner.stopping:
        sys.exit(143)
    if index is None:
        report.write_report(suite, seeds, root)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
