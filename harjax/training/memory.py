"""Whether a run's training fits the memory it may use, decided before anything is allocated or trained.

An ensemble multiplies parameters, optimizer state and activations by its size, and an out-of-memory error in the
middle of XLA's allocation names neither the setting nor the sizes. Two checks name both: the training state (its
exact size, from the abstract state) before it is created, and the compiled train step's own buffers (XLA's
memory analysis of the program that will run: outputs and temporaries, the activations of every member at the
batch size) before the first step. The memory a run may use is the least free memory of any device of any
process on accelerators (bytes_limit - bytes_in_use, so XLA_PYTHON_CLIENT_MEM_FRACTION applies), and on CPU the
host's available memory, which every local CPU device's copy shares. Every process takes the same decision.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from harjax import errors
from harjax.data import pipeline
from harjax.models import ensemble
from harjax.training import parallel


def available() -> tuple[int, str]:
    """(free bytes per replica, where): the least any device has, or the host's share where devices do not report.

    The least over every process, so that all of them refuse together rather than some waiting in a collective.
    """
    device = parallel.free_device_bytes()
    if device is not None:
        free, where = device, f"free on the fullest {jax.local_devices()[0].device_kind}"
    else:  # CPU devices: every local replica of the state and its step lives in the host's memory
        free, where = pipeline.free_host_bytes() // jax.local_device_count(), "available on the host per CPU device"
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        mebibytes = np.asarray(free // 2**20, np.int32)  # int32: JAX gathers without 64-bit types by default
        free = int(np.min(multihost_utils.process_allgather(mebibytes))) * 2**20
    return free, where


def state_bytes(abstract_state: Any) -> int:
    """Bytes of one replica of the training state: parameters, optimizer state, statistics, keys."""
    leaves = jax.tree.leaves(abstract_state)
    return sum(leaf.size * leaf.dtype.itemsize for leaf in leaves if hasattr(leaf, "dtype"))


def _settings(config: ml_collections.ConfigDict) -> str:
    return (
        f"config.model.ensemble_size={ensemble.ensemble_size(config.model)} at "
        f"config.train.batch_size={config.train.batch_size}"
    )


def check_state(abstract_state: Any, config: ml_collections.ConfigDict) -> None:
    """Refuses a training state (every member's parameters and optimizer state) larger than the free memory."""
    needed = state_bytes(abstract_state)
    free, where = available()
    if needed > free:
        raise errors.ConfigError(
            f"{_settings(config)} does not fit: the parameters and optimizer state take {pipeline.gigabytes(needed)}, "
            f"{pipeline.gigabytes(free)} is {where}; lower config.model.ensemble_size or the model's size"
        )


def check_step(compiled: jax.stages.Compiled, abstract_state: Any, config: ml_collections.ConfigDict) -> None:
    """Refuses a compiled train step whose new buffers (activations, temporaries, outputs) exceed the free memory.

    Called once the state exists, so the free memory no longer holds it; donated buffers are reused, not new.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:  # a backend without memory analysis: nothing to check against
        return
    needed = analysis.temp_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
    free, where = available()
    if needed > free:
        raise errors.ConfigError(
            f"{_settings(config)} does not fit: the train step needs {pipeline.gigabytes(needed)} beyond the training "
            f"state ({pipeline.gigabytes(state_bytes(abstract_state))}; activations and temporaries "
            f"{pipeline.gigabytes(analysis.temp_size_in_bytes)}), {pipeline.gigabytes(free)} is {where}; lower "
            "config.train.batch_size or config.model.ensemble_size"
        )
