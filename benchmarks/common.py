"""What the benchmarks share: MMAct-sized inputs and timing the jitted train step of a config."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import flags

from configs import common as config_sizes, full
from harjax.data import synthetic
from harjax.models import ensemble, har_model
from harjax.training import parallel, step as step_lib

# Issue 4's reference sizes: Video-LLaVA's hidden size, 256 sensor steps (5 s at 50 Hz), 4 devices x 3 axes.
MMACT_SIZES = dict(video_dim=4096, seq_len=256, channels=12, num_classes=37)
# --sizes=tiny: a batch that compiles and steps in moments, for the --smoke runs of benchmarks/accelerator.sh.
TINY_SIZES = {  # the synthetic data of the tiny size (configs/common.py), at MMAct's 12 channels
    key.rsplit(".", 1)[1]: value
    for key, value in config_sizes.SIZES["tiny"].items()
    if key.startswith("data.synthetic.") and key.rsplit(".", 1)[1] in MMACT_SIZES
} | {"channels": MMACT_SIZES["channels"]}
SIZES = {"mmact": MMACT_SIZES, "tiny": TINY_SIZES}


def synthetic_batch(batch_size: int, **sizes: int) -> tuple[ml_collections.ConfigDict, dict[str, np.ndarray], int]:
    """configs/full.py:synthetic on one batch of its data: (config, batch, num_classes).

    `sizes` overrides config.data.synthetic.
    """
    config = full.get_config("synthetic")
    config.data.synthetic.update(num_train=batch_size, num_eval=8, **sizes)
    config.train.batch_size = batch_size
    data = synthetic.generate(config.data.synthetic, "train", config.seed)
    return config, dict(data.arrays), data.num_classes


def mmact_sized(batch_size: int, sizes: str = "mmact") -> tuple[ml_collections.ConfigDict, dict[str, np.ndarray], int]:
    """configs/full.py's model on one synthetic batch: (config, batch, num_classes).

    The batch has MMAct's sizes, or those of SIZES[sizes].
    """
    return synthetic_batch(batch_size, **SIZES[sizes])


def define_model_flags() -> tuple[flags.FlagHolder[str], flags.FlagHolder[str]]:
    """--dtype and --sizes, which every train-step benchmark takes: (dtype, sizes), for `model_and_batch`.

    A script calls it once, at its top level, and adopts them (flags.adopt_module_key_flags(common)) for its --help;
    importing this module defines no flag.
    """
    dtype = flags.DEFINE_enum(
        "dtype",
        "float32",
        ["float32", "bfloat16"],
        "compute dtype, parameters stay float32 (config.model.dtype; torch.autocast for torch)",
    )
    sizes = flags.DEFINE_enum(
        "sizes",
        "mmact",
        list(SIZES),
        "tiny: a toy batch, to check the script runs (benchmarks/accelerator.sh --smoke)",
    )
    return dtype, sizes


def model_and_batch(
    batch_size: int, dtype: str, sizes: str
) -> tuple[ml_collections.ConfigDict, dict[str, np.ndarray], int]:
    """configs/full.py's config and one batch, as the command line asks: (config, batch, num_classes).

    The dtype is --dtype, the batch `batch_size` rows at --sizes (define_model_flags).
    """
    config, batch, num_classes = mmact_sized(batch_size, sizes)
    config.model.dtype = dtype
    return config, batch, num_classes


def harjax_trainer(
    config: ml_collections.ConfigDict, local_batch: dict[str, np.ndarray], num_classes: int
) -> tuple[Callable[[int], float], jax.stages.Compiled]:
    """(run, compiled step): run(steps) trains `steps` updates on the batch and returns seconds per step.

    An ensemble (config.model.ensemble_size) steps all its members.

    The step is compiled and run three times before run() is handed out, so run() times the steady state.
    """
    mesh = parallel.make_mesh()
    model = har_model.build_model(config, num_classes)
    optimizer = step_lib.make_optimizer(config, step_lib.learning_rate_schedule(config.train))
    members = ensemble.ensemble_size(config.model)
    state = jax.jit(
        lambda: step_lib.create_train_state(model, optimizer, local_batch, config.seed, members),
        out_shardings=parallel.replicated(mesh),
    )()
    train_step = step_lib.jit_train_step(
        mesh, config.loss.contrastive_weight, ensemble_size=members, ensemble_step=config.model.ensemble_step
    )
    batch = parallel.global_batch(local_batch, mesh)
    compiled = train_step.lower(state, batch).compile()

    def run(steps: int) -> float:
        nonlocal state
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        return (time.perf_counter() - start) / steps

    run(3)
    return run, compiled


def train_step_ms(
    config: ml_collections.ConfigDict, local_batch: dict[str, np.ndarray], num_classes: int, steps: int
) -> float:
    """Milliseconds per train step on `local_batch` (one process: the global batch), after compile and warm-up."""
    run, _ = harjax_trainer(config, local_batch, num_classes)
    return run(steps) * 1e3
