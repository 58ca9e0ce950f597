"""What the benchmarks share: timing the jitted train step of a config on one batch."""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from harjax import parallel, step as step_lib
from harjax.models.har_model import build_model


def train_step_ms(config: ml_collections.ConfigDict, local_batch: dict[str, np.ndarray], num_classes: int,
                  steps: int) -> float:
    """Milliseconds per train step on `local_batch` (one process: the global batch), after compile and warm-up."""
    mesh = parallel.make_mesh()
    model = build_model(config, num_classes)
    optimizer = step_lib.make_optimizer(config, step_lib.learning_rate_schedule(config.train))
    state = jax.jit(lambda: step_lib.create_train_state(model, optimizer, local_batch, 0),
                    out_shardings=parallel.replicated(mesh))()
    train_step = step_lib.jit_train_step(mesh, config.loss.contrastive_weight)
    batch = parallel.global_batch(local_batch, mesh)
    for _ in range(3):
        state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps * 1e3
