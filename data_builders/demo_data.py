"""What the demos' generated datasets share: one preparation at a time per data_dir, and a built dataset's test.

The demos (data_builders/mmact/demo.py, data_builders/utd_mhad/demo.py) generate a release, extract it with the
tiny model and build it the first time a run asks; a suite's runs share one data_dir and take turns here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


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
