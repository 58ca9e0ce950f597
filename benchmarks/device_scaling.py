"""Cost of the global-batch InfoNCE and of the whole data-parallel train step as the device count grows.

    python benchmarks/device_scaling.py [--devices=1,2,4,8 --batch_size=128 --steps=20]

Each device count runs in its own process with that many fake CPU devices (XLA_FLAGS), all sharing this
machine's cores: the figures show what sharding and the cross-device gathers cost, not a speed-up. On real
accelerators run it with --devices set to what the machine has. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MEASURE = r'''
import json, sys, time
sys.path.insert(0, {repo!r})
import jax, jax.numpy as jnp, numpy as np
from configs import full
from harjax import losses, parallel, step as step_lib
from harjax.data import synthetic
from harjax.models.har_model import build_model

batch_size, steps = {batch_size}, {steps}
mesh = parallel.make_mesh()
sharded = parallel.batch_sharded(mesh)

def timed(fn, *args):
    out = fn(*args); jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps * 1e3

video = jax.device_put(jax.random.normal(jax.random.key(0), (batch_size, 128)), sharded)
sensor = jax.device_put(jax.random.normal(jax.random.key(1), (batch_size, 128)), sharded)
weights = jax.device_put(jnp.ones(batch_size), sharded)
infonce = jax.jit(jax.value_and_grad(
    lambda v, s: losses.global_info_nce(mesh, parallel.DATA_AXIS, v, s, jnp.float32(14.3), weights), argnums=(0, 1)))
infonce_ms = timed(infonce, video, sensor)

config = full.get_config("synthetic")
config.data.synthetic.update(num_train=batch_size, num_eval=8)
data = synthetic.generate(config.data.synthetic, "train", 0)
model = build_model(config, data.num_classes)
schedule = step_lib.learning_rate_schedule(config.train)
local = {{name: array[:batch_size] for name, array in data.arrays.items()}}
state = jax.jit(lambda: step_lib.create_train_state(model, step_lib.make_optimizer(config, schedule), local, 0),
                out_shardings=parallel.replicated(mesh))()
train_step = step_lib.jit_train_step(mesh, config.loss.contrastive_weight)
batch = parallel.global_batch(local, mesh)
state, metrics = train_step(state, batch); jax.block_until_ready(metrics)
start = time.perf_counter()
for _ in range(steps):
    state, metrics = train_step(state, batch)
jax.block_until_ready(metrics)
step_ms = (time.perf_counter() - start) / steps * 1e3
print(json.dumps({{"devices": jax.device_count(), "infonce_fwd_bwd_ms": round(infonce_ms, 3),
                   "train_step_ms": round(step_ms, 2), "examples_per_s": round(batch_size / step_ms * 1e3, 1)}}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for devices in (int(n) for n in args.devices.split(",")):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
        code = _MEASURE.format(repo=REPO, batch_size=args.batch_size, steps=args.steps)
        output = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, capture_output=True,
                                text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        row = rows[-1]
        print(f"{row['devices']:>3} devices  InfoNCE fwd+bwd {row['infonce_fwd_bwd_ms']:>8.3f} ms  "
              f"train step {row['train_step_ms']:>8.2f} ms  {row['examples_per_s']:>8.1f} examples/s", flush=True)
    print(json.dumps({"benchmark": "device_scaling", "global_batch": args.batch_size, "cpu_count": os.cpu_count(),
                      "config": "configs/full.py:synthetic", "results": rows}))


if __name__ == "__main__":
    main()
