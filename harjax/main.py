"""Entry point: python -m harjax.main --config=configs/full.py --workdir=DIR [--config.key=value ...]."""

from __future__ import annotations

import logging as std_logging
import signal
import sys

from absl import flags, logging
from ml_collections import config_flags

from harjax import cli, errors
from harjax.data import demos
from harjax.serving import teacher
from harjax.training import host_memory, loop, parallel, workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, e.g. configs/full.py:synthetic.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval"], "train (resumes automatically) or eval the latest checkpoint."
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 in a multi-process job.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process job.")
_JOIN_CLUSTER = flags.DEFINE_bool(
    "join_cluster",
    False,
    "Join a multi-process job found by JAX's own cluster "
    "detection (needed on Cloud TPU VM slices; launch/tpu_pod.sh sets it). SLURM "
    "and GKE TPU jobs are joined without it.",
)
_ALLOW_DATA_CHANGE = flags.DEFINE_bool(
    "allow_data_change",
    False,
    "Resume although the data differs from what the workdir's run was trained on (recorded in runs.jsonl).",
)
_RESTORE_STEP = flags.DEFINE_integer(
    "restore_step",
    None,
    "Continue from this earlier checkpoint when every later one is damaged (those are moved to checkpoints/damaged/).",
)
_RESTORE_FALLBACK = flags.DEFINE_bool(
    "restore_fallback",
    False,
    "When the latest checkpoint cannot be read, continue from the latest one that can (damaged ones are moved to "
    "checkpoints/damaged/, never deleted).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_orbax(record: std_logging.LogRecord) -> bool:
    """Orbax narrates every save at INFO; keep its warnings and errors only."""
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv: list[str]) -> None:
    """Trains (resuming when the workdir holds a checkpoint) or evaluates, as --mode says."""
    if len(argv) > 1:
        raise errors.ConfigError(f"unexpected arguments: {argv[1:]}")
    host_memory.retain_freed_memory()  # before JAX starts its threads
    logging.get_absl_handler().python_handler.addFilter(_quiet_orbax)
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _JOIN_CLUSTER.value)
    config = _CONFIG.value
    restore = {"restore_step": _RESTORE_STEP.value, "restore_fallback": _RESTORE_FALLBACK.value}
    if _MODE.value == "train":
        workdir_lib.prepare(_WORKDIR.value)  # before the demo builds its data inside it
    if config.data.prepare_demo_data:
        demos.prepare(config, _WORKDIR.value)
    logging.info("config:\n%s", config)
    if _MODE.value == "train":
        distilling = config.get("distill") and config.distill.teacher
        result = loop.train(
            config,
            _WORKDIR.value,
            allow_data_change=_ALLOW_DATA_CHANGE.value,
            teacher=teacher.load(config.distill.teacher) if distilling else None,
            **restore,
        )
        if result.stopped is not None:
            _exit_stopped(result.stopped)
    else:
        loop.evaluate(config, _WORKDIR.value, **restore)


def _exit_stopped(stopped: loop.Stopped) -> None:
    """An interrupted run is not a finished one: one line, and a non-zero status so `train && export` stops.

    130 after Ctrl-C, as every harjax command; 143 after SIGTERM (every process of a multi-process job, each after
    the same synced step).
    """
    interrupted = stopped.signal == signal.SIGINT
    print(
        f"harjax.main: stopped at step {stopped.step} of {stopped.num_steps} after saving a checkpoint "
        f"({'Ctrl-C' if interrupted else 'SIGTERM'}); rerunning the same command resumes from it",
        file=sys.stderr,
    )
    sys.exit(cli.INTERRUPTED_STATUS if interrupted else cli.TERMINATED_STATUS)


if __name__ == "__main__":
    cli.run(main)
