"""Train-step throughput of harjax against the PyTorch reference (eager and torch.compile), in one process.

    python benchmarks/train_throughput.py [--batch_size=128 --steps=10 --rounds=7 --allocator=retain]
        [--platform=gpu --dtype=bfloat16]

All three train configs/full.py's model with its optimizer on one batch of MMAct's sizes (d_v 4096, T 256,
C 12, 37 classes; benchmarks/torch_reference.py is the same model, tested equal). After compilation and warm-up
they take turns, `--steps` updates each per round, so a slow spell of a shared machine hits all three alike; the
table gives each one's median and best round (shared machines drift by 10-20% within minutes). Runs on CPU
(torch keeps to the CPU, and JAX is asked for it) so the three share one processor; pass --platform=gpu on a GPU
machine to put both frameworks there. Prints a table and, last, one JSON line. Targets (issue 4, 2-core CPU):
harjax >= 1.5x eager and >= 1x torch.compile. --allocator=default leaves glibc's malloc as it is (see
harjax/training/host_memory.py for why harjax.main changes it).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from benchmarks import common  # noqa: E402  (JAX's backend starts only in main(), after the allocator setting)
from harjax import cli  # noqa: E402

# Between turns: idle worker threads of the previous framework (OpenMP spins before it sleeps) would otherwise
# take cores from the next one's first steps.
_PAUSE_S = 0.5

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "examples per step")
_STEPS = flags.DEFINE_integer("steps", 10, "updates per implementation per round")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "rounds in which each implementation takes a turn")
_PLATFORM = flags.DEFINE_enum("platform", "cpu", ["cpu", "gpu"], "where both frameworks run")
_ALLOCATOR = flags.DEFINE_enum(
    "allocator",
    "retain",
    ["retain", "default"],
    "retain: glibc keeps freed memory, as harjax.main sets it (harjax/training/host_memory.py); "
    "the setting is process-wide, so all three run under it",
)
_DTYPE, _SIZES = common.define_model_flags()
flags.adopt_module_key_flags(common)


def main(argv: list[str]) -> None:
    del argv
    batch_size, steps, rounds, dtype = _BATCH_SIZE.value, _STEPS.value, _ROUNDS.value, _DTYPE.value
    import jax

    jax.config.update("jax_platforms", "cuda" if _PLATFORM.value == "gpu" else "cpu")
    if _ALLOCATOR.value == "retain":  # before JAX and torch start their threads
        from harjax.training import host_memory

        host_memory.retain_freed_memory()
    import torch

    from benchmarks import torch_reference
    from harjax.training import step as step_lib

    device = torch.device("cuda" if _PLATFORM.value == "gpu" else "cpu")
    config, batch, num_classes = common.model_and_batch(batch_size, dtype, _SIZES.value)
    schedule = step_lib.learning_rate_schedule(config.train)
    tensors = {name: value.to(device) for name, value in torch_reference.torch_batch(batch).items()}

    def torch_runner(compile_loss: bool):
        torch.manual_seed(config.seed)
        model = (
            torch_reference.HARModel(
                config.model,
                config.loss,
                num_classes,
                video_dim=batch["video"].shape[-1],
                sensor_channels=batch["sensor"].shape[-1],
            )
            .to(device)
            .train()
        )
        train_step = torch_reference.make_train_step(model, config, schedule, compile_loss=compile_loss)

        def run(steps: int) -> float:
            start = time.perf_counter()
            for _ in range(steps):
                loss = train_step(tensors)
            loss.item()  # waits for the device
            return (time.perf_counter() - start) / steps

        run(3)  # torch.compile compiles here
        return run

    runners = {}
    for name, make in (
        ("harjax (jax.jit)", lambda: common.harjax_trainer(config, batch, num_classes)[0]),
        ("pytorch eager", lambda: torch_runner(False)),
        ("pytorch torch.compile", lambda: torch_runner(True)),
    ):
        start = time.perf_counter()
        runners[name] = make()
        print(f"{name}: compiled and warmed up in {time.perf_counter() - start:.1f} s", flush=True)

    seconds = {name: [] for name in runners}
    for round_index in range(rounds):
        for name, run in runners.items():
            time.sleep(_PAUSE_S)
            seconds[name].append(run(steps))
        print(
            f"round {round_index + 1}/{rounds}: "
            + ", ".join(f"{name} {seconds[name][-1] * 1e3:.1f} ms" for name in runners),
            flush=True,
        )

    rate = {name: batch_size / statistics.median(times) for name, times in seconds.items()}
    best_rate = {name: batch_size / min(times) for name, times in seconds.items()}
    harjax_rate, harjax_best = rate["harjax (jax.jit)"], best_rate["harjax (jax.jit)"]
    print(
        f"\n{'implementation':<24} {'median ms/step':>15} {'examples/s':>11} {'harjax speed-up':>16} "
        f"{'best ms/step':>13} {'speed-up, best':>15}"
    )
    for name in runners:
        print(
            f"{name:<24} {batch_size / rate[name] * 1e3:>15.1f} {rate[name]:>11.1f} "
            f"{harjax_rate / rate[name]:>15.2f}x {batch_size / best_rate[name] * 1e3:>13.1f} "
            f"{harjax_best / best_rate[name]:>14.2f}x"
        )
    print(
        json.dumps(
            {
                "benchmark": "train_throughput",
                "global_batch": batch_size,
                "dtype": dtype,
                "sizes": common.SIZES[_SIZES.value],
                "device": jax.devices()[0].device_kind,
                "jax_devices": jax.device_count(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "allocator": _ALLOCATOR.value,
                "jax": jax.__version__,
                "torch": torch.__version__,
                "examples_per_s": {name: round(value, 1) for name, value in rate.items()},
                "best_examples_per_s": {name: round(value, 1) for name, value in best_rate.items()},
                "speedup_vs_eager": round(harjax_rate / rate["pytorch eager"], 3),
                "speedup_vs_compile": round(harjax_rate / rate["pytorch torch.compile"], 3),
            }
        )
    )


if __name__ == "__main__":
    cli.run(main)
