"""Devices, mesh, shardings and global batches: where the data-parallel layout is decided.

The model never sees the mesh; only this module, losses.py (the cross-device InfoNCE) and the loop's batch-size
checks speak of devices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def _cluster() -> str | None:
    """The multi-process launcher this process runs under, if JAX can bootstrap from its environment."""
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(name in os.environ for name in slurm) and int(os.environ["SLURM_NTASKS"]) > 1:
        return "SLURM"  # one process per task; JAX gives each its SLURM_LOCALID-th GPU
    if len([host for host in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if host]) > 1:
        return "GKE TPU slice"
    return None


def initialize_distributed(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None, join_cluster: bool = False
) -> None:
    """Joins a multi-process job: explicitly from the flags, or from a SLURM or GKE TPU environment.

    A lone process (the default) needs nothing. Kubernetes jobs pass the flags (see launch/gke_jobset.yaml).
    Cloud TPU VM slices are only recognisable through the metadata server, which a lone process should not
    query at every start: launch/tpu_pod.sh passes --join_cluster, which leaves the detection to JAX.
    """
    if coordinator_address or num_processes is not None or process_id is not None:
        jax.distributed.initialize(
            coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
        )
    elif (cluster := "JAX-detected" if join_cluster else _cluster()) is not None:
        logging.info("joining the %s job from its environment", cluster)
        jax.distributed.initialize()
    else:
        return
    logging.info(
        "process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def make_mesh() -> Mesh:
    """A 1D data-parallel mesh over every device of every process.

    Auto axis types let the compiler shard the model's per-example work from the batch's sharding; only the
    contrastive block, which mixes examples across devices, is written per device with shard_map.
    """
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array: parameters, optimizer state, metrics."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Rows split over the data axis: batches and per-example activations."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_abstract(tree: Any, mesh: Mesh) -> Any:
    """Shape/dtype leaves that ask Orbax to restore onto this mesh, whatever topology wrote the checkpoint."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), tree)


def agree(flag: bool) -> bool:
    """Process 0's `flag` on every process.

    For a decision every process must take alike (they run the same collectives), made from what only process 0 can
    see (the files it writes).
    """
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Host arrays copied once onto every device (the device data cache); every process passes the same arrays."""
    return jax.device_put(tree, replicated(mesh))


def free_device_bytes() -> int | None:
    """Free memory of the fullest local device, or None where devices do not report it (CPU: the host's memory)."""
    free = []
    for device in jax.local_devices():
        stats = device.memory_stats()
        if not stats or "bytes_limit" not in stats:
            return None
        free.append(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return min(free)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles this process's rows into global arrays sharded over the data axis ([B_local, ...] -> [B, ...])."""
    sharding = batch_sharded(mesh)
    return {name: jax.make_array_from_process_local_data(sharding, array) for name, array in local_batch.items()}
