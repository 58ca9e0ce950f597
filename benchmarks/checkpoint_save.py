"""Seconds per checkpoint save of configs/full.py's train state, arrays written whole or replica-parallel.

    python benchmarks/checkpoint_save.py --arrays=whole              # harjax's Checkpointer
    python benchmarks/checkpoint_save.py --arrays=replica_parallel   # Orbax's default off GPU

Each run is a fresh process (the first save pays for whatever it compiles), on --devices CPU devices holding the
state replicated, as a data-parallel run does. A save is timed until its asynchronous write has finished. Prints a
line per save and, last, one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")

from absl import flags  # noqa: E402

from benchmarks import common  # noqa: E402
from harjax import cli  # noqa: E402
from harjax.models import har_model  # noqa: E402
from harjax.training import checkpointing, parallel, step as step_lib  # noqa: E402

flags.DEFINE_enum("arrays", "whole", ["whole", "replica_parallel"], "how Orbax writes each replicated array")
flags.DEFINE_enum("sizes", "mmact", list(common.SIZES), "the model's input sizes (benchmarks/common.py)")
flags.DEFINE_integer("devices", 8, "CPU devices the state is replicated on", lower_bound=1)
flags.DEFINE_integer("saves", 3, "saves to time", lower_bound=1)


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS  # the flags' values
    jax.config.update("jax_num_cpu_devices", args.devices)
    config, batch, num_classes = common.mmact_sized(args.devices, args.sizes)
    mesh = parallel.make_mesh()
    model = har_model.build_model(config, num_classes)
    optimizer = step_lib.make_optimizer(config, step_lib.learning_rate_schedule(config.train))
    state = jax.jit(
        lambda: step_lib.create_train_state(model, optimizer, batch, config.seed, 1),
        out_shardings=parallel.replicated(mesh),
    )()
    leaves = jax.tree.leaves(state)
    seconds = []
    with tempfile.TemporaryDirectory() as scratch:
        checkpointer = checkpointing.Checkpointer(scratch, keep=1, signature={})
        # Replaces the handler the Checkpointer registered: the one measured.
        checkpointing.register_array_handler(replica_parallel=args.arrays == "replica_parallel")
        for step in range(args.saves):
            started = time.perf_counter()
            checkpointer.save(step, state, {})
            checkpointer.manager.wait_until_finished()
            seconds.append(time.perf_counter() - started)
            print(f"save {step}: {seconds[-1]:.3f} s", flush=True)
        checkpointer.close()
    print(
        json.dumps(
            {
                "benchmark": "checkpoint_save",
                "arrays": args.arrays,
                "devices": jax.device_count(),
                "state_arrays": len(leaves),
                "state_mb": sum(leaf.nbytes for leaf in leaves) / 1e6,
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    cli.run(main)
