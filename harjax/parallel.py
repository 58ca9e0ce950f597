"""Devices, mesh and global batches: the only module (with losses.py) that knows how many devices there are."""

from __future__ import annotations

import logging
from typing import Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
    """Joins a multi-process job when one is described; a lone process needs nothing."""
    if coordinator_address:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
        logging.info("process %d of %d joined %s", jax.process_index(), jax.process_count(), coordinator_address)


def make_mesh() -> Mesh:
    """A 1D data-parallel mesh over every device of every process.

    Auto axis types let the compiler shard the model's per-example work from the batch's sharding; only the
    contrastive block, which mixes examples across devices, is written per device with shard_map.
    """
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles this process's rows into global arrays sharded over the data axis ([B_local, ...] -> [B, ...])."""
    sharding = batch_sharded(mesh)
    return {name: jax.make_array_from_process_local_data(sharding, array) for name, array in local_batch.items()}
