"""Cost of the global-batch InfoNCE and of the whole data-parallel train step as the device count grows.

    python benchmarks/device_scaling.py [--devices=1,2,4,8 --batch_size=128 --steps=20]

Each device count runs in its own process with that many fake CPU devices (XLA_FLAGS), all sharing this
machine's cores: the figures show what sharding and the cross-device gathers cost, not a speed-up. On real
accelerators run it with --devices set to what the machine has. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import flags  # noqa: E402

from harjax import cli  # noqa: E402

_DEVICES = cli.define_positive_integers("devices", "1,2,4,8", "device counts, each measured in its own process")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "the global batch")
_STEPS = flags.DEFINE_integer("steps", 20, "steps per measurement")
_CHILD = flags.DEFINE_bool("child", False, "internal: measure in this process (its device count set by XLA_FLAGS)")


def measure(batch_size: int, steps: int) -> dict[str, float]:
    """Runs in a child process whose device count XLA_FLAGS fixed."""
    from harjax.training import host_memory

    host_memory.retain_freed_memory()  # as harjax.main
    import jax
    import jax.numpy as jnp

    from benchmarks import common
    from harjax.training import losses, parallel

    mesh = parallel.make_mesh()
    sharded = parallel.batch_sharded(mesh)
    video, sensor = (
        jax.device_put(jax.random.normal(jax.random.key(seed), (batch_size, 128)), sharded) for seed in (0, 1)
    )
    weights = jax.device_put(jnp.ones(batch_size), sharded)
    infonce = jax.jit(
        jax.value_and_grad(
            lambda v, s: losses.global_info_nce(mesh, parallel.DATA_AXIS, v, s, jnp.float32(14.3), weights),
            argnums=(0, 1),
        )
    )
    jax.block_until_ready(infonce(video, sensor))
    start = time.perf_counter()
    for _ in range(steps):
        out = infonce(video, sensor)
    jax.block_until_ready(out)
    infonce_ms = (time.perf_counter() - start) / steps * 1e3

    step_ms = common.train_step_ms(*common.synthetic_batch(batch_size), steps)
    return {
        "devices": jax.device_count(),
        "infonce_fwd_bwd_ms": round(infonce_ms, 3),
        "train_step_ms": round(step_ms, 2),
        "examples_per_s": round(batch_size / step_ms * 1e3, 1),
    }


def main(argv: list[str]) -> None:
    del argv
    if _CHILD.value:
        print(json.dumps(measure(_BATCH_SIZE.value, _STEPS.value)))
        return
    rows = []
    for devices in (int(n) for n in _DEVICES.value):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
        output = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                f"--batch_size={_BATCH_SIZE.value}",
                f"--steps={_STEPS.value}",
            ],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        row = rows[-1]
        print(
            f"{row['devices']:>3} devices  InfoNCE fwd+bwd {row['infonce_fwd_bwd_ms']:>8.3f} ms  "
            f"train step {row['train_step_ms']:>8.2f} ms  {row['examples_per_s']:>8.1f} examples/s",
            flush=True,
        )
    print(
        json.dumps(
            {
                "benchmark": "device_scaling",
                "global_batch": _BATCH_SIZE.value,
                "cpu_count": os.cpu_count(),
                "config": "configs/full.py:synthetic",
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    cli.run(main)
