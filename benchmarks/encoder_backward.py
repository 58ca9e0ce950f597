"""The sensor encoder's hand-written backward against plain autodiff of the same blocks, on this machine.

    python benchmarks/encoder_backward.py [--batch_size=128 --dtype=float32 --steps=20]

config.model.encoder_backward='auto' takes the hand-written backward on CPU (measured faster there,
benchmarks/RESULTS.md) and autodiff elsewhere; this measures both on whatever device JAX picks, alternating
rounds in one process: forward + backward of the SensorEncoder alone (MMAct sizes: T 256, C 12, configs/full.py's
channels), and the whole train step of configs/full.py's model. Prints a table and, last, one JSON line whose
`faster` says which implementation 'auto' should take here.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import common  # noqa: E402
from harjax import cli  # noqa: E402
from harjax.models import sensor_encoder  # noqa: E402
from harjax.training import host_memory  # noqa: E402

IMPLEMENTATIONS = ("hand_written", "autodiff")

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "examples per step")
_STEPS = flags.DEFINE_integer("steps", 20, "per implementation per round")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "rounds in which each implementation takes a turn")
_DTYPE, _SIZES = common.define_model_flags()
flags.adopt_module_key_flags(common)


def encoder_runner(config, batch, hand_written: bool):
    """run(steps) -> seconds per forward + backward of the encoder alone."""
    model = config.model
    encoder = sensor_encoder.SensorEncoder(
        tuple(model.encoder_channels),
        tuple(model.encoder_strides),
        model.encoder_kernel_size,
        jnp.dtype(model.dtype),
        hand_written,
    )
    sensor, mask = jnp.asarray(batch["sensor"]), jnp.asarray(batch["sensor_mask"])
    params = encoder.init(jax.random.key(0), sensor, mask)

    def loss(params, sensor):
        output, _ = encoder.apply(params, sensor, mask)
        return jnp.sum(output.astype(jnp.float32) ** 2)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            grads = step(params, sensor)
        jax.block_until_ready(grads)
        return (time.perf_counter() - start) / steps

    run(2)
    return run


def main(argv: list[str]) -> None:
    del argv
    host_memory.retain_freed_memory()  # as harjax.main
    batch_size, dtype = _BATCH_SIZE.value, _DTYPE.value
    config, batch, num_classes = common.model_and_batch(batch_size, dtype, _SIZES.value)
    runners = {}
    for name in IMPLEMENTATIONS:
        config.model.encoder_backward = name
        runners[f"encoder {name}"] = encoder_runner(config, batch, name == "hand_written")
        runners[f"step {name}"] = common.harjax_trainer(config, batch, num_classes)[0]
    seconds = {name: [] for name in runners}
    for _ in range(_ROUNDS.value):
        for name, run in runners.items():
            seconds[name].append(run(_STEPS.value))
    ms = {name: statistics.median(values) * 1e3 for name, values in seconds.items()}
    device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    print(f"{'median ms':<28} {'hand_written':>13} {'autodiff':>10}   ({device}, batch {batch_size}, {dtype})")
    for part in ("encoder", "step"):
        print(
            f"{part + (' fwd+bwd' if part == 'encoder' else ''):<28} {ms[f'{part} hand_written']:>13.2f} "
            f"{ms[f'{part} autodiff']:>10.2f}"
        )
    faster = min(IMPLEMENTATIONS, key=lambda name: ms[f"step {name}"])
    print(
        json.dumps(
            {
                "benchmark": "encoder_backward",
                "device": device,
                "platform": jax.devices()[0].platform,
                "batch_size": batch_size,
                "dtype": dtype,
                "encoder_ms": {name: round(ms[f"encoder {name}"], 3) for name in IMPLEMENTATIONS},
                "step_ms": {name: round(ms[f"step {name}"], 3) for name in IMPLEMENTATIONS},
                "faster": faster,
                "cpu_count": os.cpu_count(),
                "jax": jax.__version__,
                "hand_written_over_autodiff": round(ms["step hand_written"] / ms["step autodiff"], 3),
            }
        )
    )


if __name__ == "__main__":
    cli.run(main)
