"""What the demos' generated datasets share: the lock, the built test, the generated release and the tiny model.

The demos (data_builders/mmact/demo.py, data_builders/utd_mhad/demo.py) generate a release, extract it with the
tiny model and build it the first time a run asks; a suite's runs share one data_dir and take turns here.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from data_builders.mmact import synthetic_tree
from harjax import errors
from harjax.video import tiny_models


@contextlib.contextmanager
def exclusive(data_dir: str) -> Iterator[None]:
    """Holds data_dir's preparation lock: one process prepares while the others wait."""
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, ".prepare.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        yield


def is_built(data_dir: str, name: str, tfds_config: str) -> bool:
    """Whether data_dir holds a finished version of the TFDS dataset name/tfds_config."""
    dataset = os.path.join(data_dir, name, tfds_config)
    return os.path.isdir(dataset) and any(entry[:1].isdigit() for entry in os.listdir(dataset))


def generated_release(manual_dir: str, write: Callable[[str], Any]) -> str:
    """manual_dir holding a generated release, written by write(manual_dir) unless it is there whole; returns it.

    Both generators mark their trees (synthetic_tree.STARTED first, MANIFEST last), so only a tree of theirs,
    unfinished, is written over; a folder of anything else is refused.
    """
    if os.path.exists(os.path.join(manual_dir, synthetic_tree.MANIFEST)):
        return manual_dir
    if os.path.isdir(manual_dir) and os.listdir(manual_dir) and not synthetic_tree.is_ours(manual_dir):
        raise errors.UserError(
            f"{manual_dir} holds files the demo did not write; point config.data.data_dir at a folder of the demo's own"
        )
    logging.info("demo: writing a generated release to %s", manual_dir)
    shutil.rmtree(manual_dir, ignore_errors=True)  # an unfinished tree of an earlier demo
    write(manual_dir)
    return manual_dir


def tiny_model_dir(data_dir: str, extra_words: Sequence[str] = ()) -> str:
    """data_dir/tiny_video_llava, saved whole (through a .tmp folder) unless it is there; returns it."""
    model_dir = os.path.join(data_dir, "tiny_video_llava")
    if not os.path.isdir(model_dir):
        shutil.rmtree(model_dir + ".tmp", ignore_errors=True)
        os.replace(tiny_models.save_tiny_model(model_dir + ".tmp", extra_words=extra_words), model_dir)
    return model_dir
