"""FLOPs per example of harjax's train step and the share of the measured matmul peak it achieves.

Both are measured in one run; the FLOPs are counted by XLA from the compiled step.

    python benchmarks/flops.py [--batch_size=128 --steps=20 --dtype=float32|bfloat16]

The model is configs/full.py's at MMAct's sizes (d_v 4096, T 256, C 12). The FLOP count is the compiled step's
`cost_analysis()` (forward, backward and optimizer, as XLA will execute them), divided by the batch; the forward
alone is counted the same way. The peak is the best matmul rate of this process in the step's compute dtype over a
few square sizes (jnp.dot at JAX's default precision, which is TF32 for float32 on recent NVIDIA GPUs; and
torch.matmul on CPU when torch is installed), so the fraction is against what this machine really does, not a
datasheet. Prints a table and, last, one JSON line. Target (issue 4): at least 45% of the peak.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import common  # noqa: E402
from harjax import cli  # noqa: E402
from harjax.models import har_model  # noqa: E402
from harjax.training import host_memory  # noqa: E402

_MATMUL_SIZES = {
    "cpu": (1024, 2048, 3072),
    "gpu": (4096, 8192, 16384),
    "tpu": (4096, 8192, 16384),
    "tiny": (128, 256),
}  # --sizes=tiny: a check that the script runs, not a peak

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "examples per step")
_STEPS = flags.DEFINE_integer("steps", 20, "steps per timing (the best of 3 is kept)")
_DTYPE, _SIZES = common.define_model_flags()
flags.adopt_module_key_flags(common)


def _best_rate(matmul, size: int, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` calls of matmul() on [size, size] operands (it waits for its result)."""
    matmul()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def matmul_peak(dtype: str, tiny: bool = False) -> dict[str, float]:
    """Best matmul FLOP/s in `dtype` per framework on this process's default device."""
    rates = {}
    platform = jax.devices()[0].platform
    sizes = _MATMUL_SIZES["tiny"] if tiny else _MATMUL_SIZES.get(platform, _MATMUL_SIZES["gpu"])
    for size in sizes:
        a, b = (jax.random.normal(jax.random.key(seed), (size, size), jnp.dtype(dtype)) for seed in (0, 1))
        product = functools.partial(jax.jit(jnp.dot), a, b)
        rates["jax"] = max(
            rates.get("jax", 0.0), _best_rate(lambda product=product: product().block_until_ready(), size)
        )
    try:
        import torch
    except ImportError:
        return rates
    if platform == "cpu":
        for size in sizes:
            a, b = (torch.randn(size, size, dtype=getattr(torch, dtype)) for _ in range(2))
            rates["torch"] = max(rates.get("torch", 0.0), _best_rate(functools.partial(torch.matmul, a, b), size))
    return rates


def main(argv: list[str]) -> None:
    del argv
    host_memory.retain_freed_memory()  # as harjax.main
    batch_size, dtype, sizes = _BATCH_SIZE.value, _DTYPE.value, _SIZES.value

    config, batch, num_classes = common.model_and_batch(batch_size, dtype, sizes)
    run, compiled_step = common.harjax_trainer(config, batch, num_classes)
    step_flops = compiled_step.cost_analysis()["flops"]
    model = har_model.build_model(config, num_classes)
    variables = jax.jit(lambda: model.init(jax.random.key(0), batch, train=False))()
    forward_flops = (
        jax.jit(lambda v, b: model.apply(v, b, train=False)).lower(variables, batch).compile().cost_analysis()["flops"]
    )
    step_seconds = min(run(_STEPS.value) for _ in range(3))
    peaks = matmul_peak(dtype, tiny=sizes == "tiny")
    peak = max(peaks.values())
    achieved = step_flops / step_seconds

    rows = [
        ("forward FLOPs per example", f"{forward_flops / batch_size / 1e6:.1f} M"),
        ("train step FLOPs per example", f"{step_flops / batch_size / 1e6:.1f} M"),
        ("train step time (best of 3 x --steps)", f"{step_seconds * 1e3:.1f} ms"),
        ("achieved", f"{achieved / 1e9:.1f} GFLOP/s"),
        *((f"{dtype} matmul peak ({name})", f"{rate / 1e9:.1f} GFLOP/s") for name, rate in peaks.items()),
        ("fraction of peak", f"{achieved / peak:.1%}"),
    ]
    for name, value in rows:
        print(f"{name:<40} {value:>16}")
    print(
        json.dumps(
            {
                "benchmark": "flops",
                "global_batch": batch_size,
                "dtype": dtype,
                "sizes": common.SIZES[sizes],
                "device": jax.devices()[0].device_kind,
                "jax_devices": jax.device_count(),
                "cpu_count": os.cpu_count(),
                "forward_flops_per_example": forward_flops / batch_size,
                "train_step_flops_per_example": step_flops / batch_size,
                "step_ms": round(step_seconds * 1e3, 2),
                "achieved_gflops": round(achieved / 1e9, 2),
                "matmul_peak_gflops": {k: round(v / 1e9, 2) for k, v in peaks.items()},
                "fraction_of_peak": round(achieved / peak, 4),
            }
        )
    )


if __name__ == "__main__":
    cli.run(main)
