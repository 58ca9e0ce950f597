"""Tests run on 8 fake CPU devices so every sharded path is exercised on one machine (even where a GPU exists).

Two tiers, by folder:
- tests/unit: in-process and quick (a tiny model trained a few steps at most, shared through fixtures here): the
  fast tier, `python -m pytest -n 2 -m "not slow"`.
- tests/integration: what runs the commands in subprocesses, trains or builds whole fixtures of its own, or runs a
  suite. Every test there is marked `slow` by its folder; a `slow` mark in tests/unit is refused, so the fast tier
  is what tests/unit holds.
A test marked `gpu` needs a CUDA GPU; elsewhere it is skipped, saying so in the summary (-ra).
"""

import atexit
import collections
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import jax
import ml_collections

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 8)
# The cheapest XLA codegen (read when the CPU backend starts, below): tests run a few steps of small programs, so
# compiling dominates, and the CLI runs they start are compiled alike (tests/cli_runs.py).
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()
# Many tests compile the same small programs, in this process and in the CLI subprocesses they start: one XLA
# compilation cache for the whole session (removed at its end) compiles each once.
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="harjax-test-xla-cache-")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _COMPILATION_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

import pytest

from configs import (
    concat_fusion,
    full,
    late_fusion,
    no_attention,
    no_contrastive,
    no_transformer,
    sensor_minirocket,
    sensor_only,
    sensor_small,
    video_only,
)

REPO = str(pathlib.Path(__file__).resolve().parent.parent)
NUM_DEVICES = 8
ALL_CONFIGS = [
    full,
    video_only,
    sensor_only,
    sensor_small,
    sensor_minirocket,
    concat_fusion,
    late_fusion,
    no_attention,
    no_transformer,
    no_contrastive,
]


# config.data.augment with every augmentation on (harjax/training/augment.py)
EVERY_AUGMENTATION = {
    "jitter": 0.1,
    "scale": 0.2,
    "magnitude_warp": 0.2,
    "time_warp": 0.2,
    "crop": 0.7,
    "shift": True,
    "stream_drop": 0.3,
    "video_noise": 0.1,
    "video_drop": 0.5,
}


def config_id(module) -> str:
    return module.__name__.split(".")[-1]


def pytest_configure(config):
    assert jax.device_count() == NUM_DEVICES, "jax was initialised before conftest could ask for 8 CPU devices"


def pytest_collection_modifyitems(items):
    """Marks the tiers by folder, then orders the modules with the most slow tests first.

    xdist hands out whole modules in this order (pyproject's --no-loadscope-reorder): the two workers take the
    minutes-long modules early and end together on the many short ones, instead of one worker finishing a
    3-minute module while the other idles (its default order, by test count, put the one-test GPU-script module
    last).
    """
    for item in items:
        folder = pathlib.Path(str(item.path)).parent.name
        if folder == "integration":
            item.add_marker(pytest.mark.slow)
        elif item.get_closest_marker("slow"):
            raise pytest.UsageError(f"{item.nodeid} is marked slow: a slow test belongs in tests/integration")
        if item.get_closest_marker("gpu") and not _has_gpu():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (nvidia-smi finds none)"))
    slow_tests = collections.Counter(_module(item) for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow_tests[_module(item)])  # a stable sort: modules stay contiguous


def _has_gpu() -> bool:
    """Whether this machine has a CUDA GPU (asked of nvidia-smi: this process's JAX is held to the CPU)."""
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _module(item) -> str:
    return item.nodeid.split("::")[0]


def compiled(model):
    """(init, apply) of a Flax model, each compiled once; op by op, a small model's first call takes seconds on CPU.

    `train` and `mutable` are static: pass mutable as a string ("batch_stats").
    """
    return (jax.jit(model.init, static_argnames=("train",)), jax.jit(model.apply, static_argnames=("train", "mutable")))


def small_config(variant_module=full) -> ml_collections.ConfigDict:
    """The file's synthetic variant at size tiny (configs/common.py): a step compiles and runs in well under a second.

    6 steps of 32, evaluated and checkpointed every 3.
    """
    return variant_module.get_config("synthetic,size=tiny")


def write_stream(path, rate_hz, seconds, channels, seed=0):
    """A long recording as a device writes it: 'time,<channel>,...' rows of random values at rate_hz."""
    import numpy as np

    time = np.arange(0, seconds, 1 / rate_hz)
    values = np.random.default_rng(seed).normal(size=(len(time), len(channels)))
    with open(path, "w") as f:
        f.write("time," + ",".join(channels) + "\n")
        for t, row in zip(time, values, strict=True):
            f.write(f"{t:.6f}," + ",".join(f"{v:.6f}" for v in row) + "\n")
    return time, values


def read_metrics(workdir, name: str = "metrics.jsonl") -> list[dict]:
    with open(os.path.join(workdir, name)) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def config():
    return small_config()


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A finished run that tests share instead of training again: read it in place, or copy it to change it."""

    config: ml_collections.ConfigDict
    workdir: str
    final: dict  # what train_and_evaluate returned

    def fresh_config(self) -> ml_collections.ConfigDict:
        return self.config.copy_and_resolve_references()

    def copy(self, destination) -> str:
        shutil.copytree(self.workdir, destination)
        return str(destination)


@pytest.fixture(scope="session")
def trained_full(tmp_path_factory) -> TrainedRun:
    """small_config() of configs/full.py trained 6 steps with every evaluator on.

    The untrained model is evaluated at step 0, then steps 3 and 6; robustness and the attention of 3 examples
    after training; steps 2 and 3 profiled.
    """
    from harjax.training import loop

    config = small_config()
    config.train.eval_at_start = True
    config.train.profile_steps = (2, 4)
    config.evals.robustness.at_end = True
    config.evals.attention.update(at_end=True, examples=3)
    workdir = str(tmp_path_factory.mktemp("trained_full"))
    final = loop.train_and_evaluate(config.copy_and_resolve_references(), workdir)
    return TrainedRun(config, workdir, final)


def assert_caches_serve_the_same_batches(train, evaluation, batch_size: int, steps: int) -> None:
    """Training batches of every data cache are the same, bit for bit, and so are evaluation batches.

    The caches: 'none' (records read per batch), 'host' (vectorised gathers from columns) and 'device' (the jitted
    gather from device-resident columns); evaluation batches read per batch or gathered from columns.
    """
    import contextlib

    import jax.numpy as jnp
    import numpy as np

    from harjax.data import pipeline

    iterators = {
        cache: contextlib.closing(pipeline.train_iterator(train, batch_size, 3, 0, 1, cache=cache))
        for cache in ("none", "host", "device")
    }
    resident = jax.device_put(train.columns(), jax.devices()[0])
    gather = jax.jit(lambda columns, selection: train.gather(columns, selection, jnp))
    with contextlib.ExitStack() as stack:
        opened = {cache: stack.enter_context(iterator) for cache, iterator in iterators.items()}
        for _ in range(steps):
            expected = next(opened["none"])
            host = next(opened["host"])
            device = jax.device_get(gather(resident, next(opened["device"])))
            assert expected.keys() == host.keys() == device.keys()
            for name in expected:
                np.testing.assert_array_equal(host[name], expected[name], err_msg=f"host cache: {name}")
                np.testing.assert_array_equal(device[name], expected[name], err_msg=f"device cache: {name}")
    columns = evaluation.columns()
    for read, gathered in zip(
        pipeline.eval_batches(evaluation, 8, 0, 1), pipeline.eval_batches(evaluation, 8, 0, 1, columns), strict=True
    ):
        for name in read:
            np.testing.assert_array_equal(gathered[name], read[name], err_msg=f"evaluation: {name}")
