"""A whole study in one command: every (run, seed) of a suite trained by harjax.main, then one report.

    python -m harjax.experiments --suite=configs/suites/paper.py[:VARIANT] --workdir=DIR [--seeds=3]
        [--only=GROUP,...] [--list] [--run_index=N] [--report] [--parallel=N] [--config.KEY=VALUE ...]

Each (run, seed) is the harjax.main command --list prints, run as a subprocess in DIR/runs/<group>/<run>/seed<k>,
so a crash of one run cannot take the others down, and a cluster can run one per job (--run_index, or
SLURM_ARRAY_TASK_ID). Rerunning the command skips finished runs and resumes interrupted ones from their
checkpoints; --report (and the end of a full run) writes DIR/report/ from whatever has finished.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from harjax import cli
from harjax.study import report, runner as runner_lib, suites

_SUITE = config_flags.DEFINE_config_file(
    "suite", None, "A suite file, e.g. configs/suites/paper.py:synthetic.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The suite's directory: runs/, report/ and shared data.")
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds per run (0..N-1); default: the suite's own.")
_ONLY = flags.DEFINE_list("only", None, "Run (and list) only these groups.")
_LIST = flags.DEFINE_bool("list", False, "Print each (run, seed) with its index and harjax.main command; run nothing.")
_RUN_INDEX = flags.DEFINE_integer(
    "run_index", None, "Run only the (run, seed) with this index of --list (default: SLURM_ARRAY_TASK_ID when set)."
)
_REPORT = flags.DEFINE_bool("report", False, "Only gather finished runs into DIR/report/.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs trained at the same time on this machine.")
flags.mark_flags_as_required(["suite", "workdir"])


_config_overrides: list[str] = []


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parses the suite's own flags; --config.KEY=VALUE are kept aside for every run's config."""
    _config_overrides[:] = [
        arg[len(suites.CONFIG_OVERRIDE_PREFIX) :] for arg in argv[1:] if arg.startswith(suites.CONFIG_OVERRIDE_PREFIX)
    ]
    return flags.FLAGS([argv[0], *(arg for arg in argv[1:] if not arg.startswith(suites.CONFIG_OVERRIDE_PREFIX))])


def main(argv: list[str]) -> None:
    """Lists, runs or reports a suite, as the flags say."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    root = os.path.abspath(_WORKDIR.value)
    try:
        suite = suites.load_suite(
            _SUITE.value, config_flags.get_config_filename(flags.FLAGS["suite"]), root, _config_overrides
        )
        seeds = suite.seeds if _SEEDS.value is None else _SEEDS.value
        selected = suites.trials(suite, seeds, _ONLY.value)
    except suites.SuiteError as error:
        raise app.UsageError(str(error)) from error
    for group in suite.groups:
        if group.skipped:
            logging.warning("group %s is skipped: %s", group.name, group.skipped)
            continue
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
        raise app.UsageError(
            f"--run_index={index} is out of range: this suite has {len(selected)} (run, seed) "
            f"pairs (0..{len(selected) - 1}; see --list)"
        )
    os.makedirs(root, exist_ok=True)
    runner = runner_lib.Runner(suite, root, max(1, _PARALLEL.value))
    signal.signal(signal.SIGTERM, runner.stop)
    todo = selected if index is None else [selected[index]]
    try:
        runner.check_commands(todo)
    except suites.SuiteError as error:
        raise app.UsageError(str(error)) from error
    runner.run(todo)
    if runner.stopping:
        sys.exit(cli.TERMINATED_STATUS)
    if index is None:
        report.write_report(suite, seeds, root)


if __name__ == "__main__":
    cli.run(main, parser=_parse_flags)
