"""A run's workdir: made sure of before anything runs, locked by one writer, and what it records of each run.

config.json holds the resolved config, code and data versions of the latest start, runs.jsonl every start. A run
(training or --mode=eval) holds the workdir's lock, .run.lock, for its lifetime: a second run in the same workdir
stops at once, naming the holder. The lock is the kernel's (flock), so it never outlives a killed process; a
filesystem that cannot lock (a gs:// workdir, some network mounts) is said so in the log, and the run goes on.
Reading a workdir (export, the report) takes no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections

import harjax
from harjax import errors
from harjax.data import batch as batch_lib
from harjax.training import parallel

CONFIG_FILE = "config.json"
RUNS_FILE = "runs.jsonl"
LOCK_FILE = ".run.lock"
TEACHER_CACHE = "teacher_logits.npz"  # a student's cache of its teacher's logits (harjax/serving/teacher.py)
# What a run and the suite runner write in a workdir (an export may add a new subfolder beside them, not replace one).
RUN_OUTPUTS = (
    CONFIG_FILE,
    TEACHER_CACHE,
    RUNS_FILE,
    LOCK_FILE,
    "metrics.jsonl",
    "perf.jsonl",
    "tensorboard",
    "checkpoints",
    "eval",
    "analysis",
    "profile",
    "demo_data",
    "suite.log",
    "suite_status.json",
    ".suite.lock",
)
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirError(errors.UserError):
    """A workdir that cannot hold a run: a file, not writable, or in use by another run."""


def prepare(workdir: str) -> None:
    """Makes the workdir (and its parents) or fails naming the cause: a file in the way, no permission."""
    if "://" in workdir:
        return  # object storage: Orbax and the writers make what they need
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir}: exists and is a file; a workdir is a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise WorkdirError(f"--workdir={workdir}: cannot be made ({error.strerror or error})") from error
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise WorkdirError(f"--workdir={workdir}: not writable by this user")


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds the workdir's lock while the block runs (process 0 takes it; every process stops if it cannot)."""
    held, problem = None, ""
    if jax.process_index() == 0:
        try:
            held = _take_lock(workdir)
        except WorkdirError as error:
            problem = str(error)
    if not parallel.agree(not problem):
        raise WorkdirError(problem or f"--workdir={workdir}: in use by another run (process 0 found it locked)")
    try:
        yield
    finally:
        if held is not None:
            held.close()  # releases the lock; the file stays, with the last holder's description


def _take_lock(workdir: str):
    """The open, locked lock file, or None where the filesystem cannot lock (said in the log)."""
    if "://" in workdir:
        logging.warning("%s: object storage cannot be locked; make sure no other run writes this workdir", workdir)
        return None
    path = os.path.join(workdir, LOCK_FILE)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process (no description)"
        handle.close()
        raise WorkdirError(
            f"--workdir={workdir}: in use by {holder}; wait for it to finish or stop it, or choose another --workdir"
        ) from None
    except OSError as error:
        if error.errno not in _NO_LOCKS:
            raise
        logging.warning(
            "%s: this filesystem cannot lock (%s); make sure no other run writes this workdir", workdir, error.strerror
        )
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(
        f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S %Z')} "
        f"({' '.join(sys.argv)})\n"
    )
    handle.flush()
    return handle


def recorded_data(workdir: str) -> dict[str, Any]:
    """The 'data' section of the workdir's config.json ({} before the first start)."""
    try:
        with open(os.path.join(workdir, CONFIG_FILE)) as f:
            return json.load(f).get("data", {})
    except (FileNotFoundError, ValueError):
        return {}


def data_changes(workdir: str, splits: Mapping[str, batch_lib.Split]) -> dict[str, dict[str, str]]:
    """Each split whose data differs from what the workdir's run was trained on: {split: {'before', 'now'}}."""
    before = recorded_data(workdir)
    changes = {}
    for name in sorted(before.keys() | splits.keys()):
        old = before.get(name, {})
        new = splits.get(name)
        if old.get("fingerprint") != (new.fingerprint if new is not None else None):
            changes[name] = {
                "before": f"{old.get('origin', 'absent')} (fingerprint {old.get('fingerprint', '-')})",
                "now": f"{new.origin} (fingerprint {new.fingerprint})" if new is not None else "absent",
            }
    return changes


def code_version() -> str:
    """The git commit of the harjax checkout (with '+dirty' for uncommitted changes), or 'unknown'."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def write_run_config(
    workdir: str,
    config: ml_collections.ConfigDict,
    splits: dict[str, batch_lib.Split],
    start_step: int,
    data_cache: str,
    selection_metric: str,
    events: Mapping[str, Any] | None = None,
    short_recordings: Mapping[str, int] | None = None,
) -> None:
    """config.json: what reproduces the run; every start (first or resumed) is also appended to runs.jsonl.

    `splits` maps 'train', 'eval' and, when held out, 'validation' to their data; `events`, what this start did
    that a later reader must know (data allowed to change, damaged checkpoints moved aside); `short_recordings`,
    per split, the recordings with fewer encoder steps than segments (scored, their steps shared).
    """
    train = splits["train"]
    record = {
        "config": config.to_dict(),
        "seed": config.seed,
        "data_cache": data_cache,
        "selection_metric": selection_metric,  # what the best checkpoint is ranked by
        "harjax_version": harjax.__version__,
        "git_commit": code_version(),
        "jax_version": jax.__version__,
        "start_step": start_step,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "data": {
            split: {
                "origin": data.origin,
                "fingerprint": data.fingerprint,
                "examples": len(data),
                "num_classes": data.num_classes,
                "shapes": {name: shape for name, (shape, _) in data.example_spec.items()},
                "report": dict(data.report),
                "short_recordings": (short_recordings or {}).get(split, 0),
            }
            for split, data in splits.items()
        },
        # What using the trained model on new data needs (harjax.export puts it in the bundle):
        "inputs": {
            "class_names": list(train.class_names),
            "channel_names": list(train.channel_names),
            "sampling_rate_hz": train.sampling_rate_hz,
            "normalization": dict(train.normalization),
            "video_source": dict(train.video_source),
            "preparation": dict(train.preparation),
        },
    } | ({"events": dict(events)} if events else {})
    text = json.dumps(record, default=str)
    temporary = os.path.join(workdir, f".{CONFIG_FILE}.partial")
    with open(temporary, "w") as f:
        json.dump(json.loads(text), f, indent=2)
    os.replace(temporary, os.path.join(workdir, CONFIG_FILE))  # whole or not at all
    with open(os.path.join(workdir, RUNS_FILE), "a") as f:
        f.write(text + "\n")
