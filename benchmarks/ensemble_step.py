"""What an ensemble's train step costs against its members trained one at a time (config.model.ensemble_size).

    python benchmarks/ensemble_step.py [--members=1,2,5 --steps=10 --rounds=5 --models=sensor_small,full]

Two models (--models picks): configs/sensor_small.py (the small-data recipe: InceptionTime-style encoder) on a
batch shaped like PickupGestureWiimoteZ (16 recordings of 361 steps, 1 channel), and configs/full.py at MMAct's
sizes (d_v 4096, T 256, C 12, 37 classes, batch 32). For each, the train step of N members, vmapped and sequential
(config.model.ensemble_step), against N times the single model's step, median over rounds in which every one
takes a turn (a shared machine's slow spells hit all alike). Target (issue 17, 2-core CPU): an N-member step
costs no more than N single steps (ratio <= 1). Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from benchmarks import common  # noqa: E402  (JAX starts in main(), after the allocator setting)
from harjax import cli  # noqa: E402

MODELS = ("sensor_small", "full")

_MEMBERS = flags.DEFINE_list("members", "1,2,5", "ensemble sizes; 1 must be among them")
_STEPS = flags.DEFINE_integer("steps", 10, "updates per ensemble size per round")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "rounds in which every step takes a turn")
_SIZES = flags.DEFINE_enum("sizes", "mmact", list(common.SIZES), "tiny: to check the script runs")
_MODELS = flags.DEFINE_list("models", ",".join(MODELS), f"which of {MODELS} to measure")
flags.register_validator(
    "members",
    lambda values: all(value.strip().isdigit() for value in values) and 1 in [int(value) for value in values],
    "--members must be comma-separated ensemble sizes including 1: the single model is what the others are "
    "compared with",
)
flags.register_validator(
    "models",
    lambda values: set(values) <= set(MODELS),
    f"--models: expected a comma-separated subset of {MODELS}",
)


def _workload(model: str, sizes: str) -> tuple[str, tuple]:
    """(its name in the table, (config, batch, num_classes)) of one model ('tiny': 32-step recordings, toy sizes)."""
    if model == "full":
        return f"full ({sizes} sizes, batch 32)", common.mmact_sized(32, sizes)
    from configs import sensor_small
    from harjax.data import batch as batch_lib

    steps = 32 if sizes == "tiny" else 361
    _, batch, num_classes = common.synthetic_batch(16, seq_len=steps, channels=1, video_dim=8, num_classes=10)
    sensors = {name: batch[name] for name in (batch_lib.SENSOR, batch_lib.SENSOR_MASK, batch_lib.LABEL)}
    small = sensor_small.get_config()
    small.train.batch_size = 16
    if sizes == "tiny":  # the smoke path: the same program, half the blocks to compile
        small.model.inception.update(depth=3, filters=8, bottleneck=8)
    return "sensor_small (Pickup-shaped, batch 16)", (small, sensors, num_classes)


def main(argv: list[str]) -> None:
    del argv
    sizes = [int(size) for size in _MEMBERS.value]
    models = _MODELS.value

    from harjax.training import host_memory

    host_memory.retain_freed_memory()
    import jax

    results = []
    for model in models:
        name, (config, batch, num_classes) = _workload(model, _SIZES.value)
        runners = {}
        for size in sizes:
            for mode in ("sequential", "vmap") if size > 1 else ("single",):
                sized = config.copy_and_resolve_references()
                sized.model.update(ensemble_size=size, ensemble_step="auto" if size == 1 else mode)
                runners[size, mode], _ = common.harjax_trainer(sized, batch, num_classes)
        seconds = {key: [] for key in runners}
        for _ in range(_ROUNDS.value):
            for key, run in runners.items():
                seconds[key].append(run(_STEPS.value))
        median_ms = {key: statistics.median(times) * 1e3 for key, times in seconds.items()}
        single = median_ms[1, "single"]
        for (size, mode), step_ms in median_ms.items():
            ratio = step_ms / (size * single)
            results.append(
                {"model": name, "members": size, "ensemble_step": mode, "step_ms": step_ms, "ratio_to_n_singles": ratio}
            )
            print(
                f"{name:<40} {size} members ({mode:<10}): {step_ms:8.1f} ms per step, "
                f"{ratio:.2f}x of {size} single steps ({size * single:.1f} ms)",
                flush=True,
            )
    print(
        json.dumps(
            {
                "benchmark": "ensemble_step",
                "results": results,
                "backend": jax.default_backend(),
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    cli.run(main)
