"""Training input per data cache against the train step's consumption, at MMAct's size.

    python benchmarks/input_pipeline.py [--trials=8968 --embedding_dim=4096 --max_length=512 --batch_size=128]
    python benchmarks/input_pipeline.py --data_dir=D --tfds_config=NAME      # an MMAct dataset you built
    python benchmarks/input_pipeline.py --smoke                               # tiny, to check that it runs

Without --data_dir it writes an MMAct-sized dataset of random records in the builder's format
(benchmarks/mmact_sized.py; about a minute and 1.5 GB, kept in --scratch for reruns). Each cache is measured in a
process of its own, so its peak host memory is its own: start-up (loading the splits, which lists the views
without reading records, then filling the cache), training examples/s served (the 'device' cache serves
selections and its gather runs inside the step, so its figure is the jitted gather's), and peak resident memory.
Then, in this process, the train step on a constant batch placed on the device once (the input costs nothing)
against the same step gathering each batch from device-resident columns. Prints a table and, last, one JSON line:
"examples_per_s": {"none": ..., "host": ..., "device": ...}, "step_examples_per_s", "startup_s", "peak_rss_mb".
Targets (issue 9, 2-core CPU, batch 128, T 512, d_v 4096): host >= 50,000 examples/s; the device-cache step within
10% of the constant-batch step.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks import mmact_sized  # noqa: E402
from configs import full  # noqa: E402
from harjax import cli  # noqa: E402
from harjax.data import pipeline  # noqa: E402
from harjax.models import har_model  # noqa: E402
from harjax.training import host_memory, parallel, step as step_lib  # noqa: E402

CACHES = ("none", "host", "device")

flags.DEFINE_string("data_dir", None, "an MMAct TFDS data_dir; default: the MMAct-sized one")
flags.DEFINE_string("tfds_config", mmact_sized.TFDS_CONFIG, "the TFDS config of --data_dir")
flags.DEFINE_string("scratch", "/tmp/harjax_mmact_sized", "where the MMAct-sized data goes")
flags.DEFINE_integer("trials", 8968, "trials of the MMAct-sized data")
flags.DEFINE_integer("embedding_dim", 4096, "video embedding size of the MMAct-sized data")
flags.DEFINE_integer("max_length", 512, "sensor steps per example (config.data.max_length)")
flags.DEFINE_integer("batch_size", 128, "examples per batch")
flags.DEFINE_integer("steps", 40, "batches timed per cache")
flags.DEFINE_integer("rounds", 5, "alternating rounds of the step comparison")
flags.DEFINE_integer("step_repeats", 5, "steps per round of the step comparison")
flags.DEFINE_integer("num_workers", 0, "input worker processes for cache 'none'")
flags.DEFINE_enum("cache", None, CACHES, "(internal) measure one cache and exit")
flags.DEFINE_bool("smoke", False, "a tiny dataset and a few steps: checks it runs")
# What a cache's own process is given, besides --cache and --data_dir (after --smoke has set them).
_SETTINGS = ("tfds_config", "trials", "embedding_dim", "max_length", "batch_size", "steps", "rounds", "step_repeats")
_SETTINGS += ("num_workers",)


def _config(args: types.SimpleNamespace):
    config = full.get_config("mmact")
    config.data.update(
        data_dir=args.data_dir, tfds_config=args.tfds_config, max_length=args.max_length, num_workers=args.num_workers
    )
    config.train.batch_size = args.batch_size
    return config


def measure_cache(args: types.SimpleNamespace) -> dict:
    """In a process of its own: start-up, examples/s and peak memory of one cache."""
    config = _config(args)
    start = time.perf_counter()
    train, _ = pipeline.load_splits(config)
    listed = time.perf_counter() - start
    result = {"cache": args.cache, "listing_s": round(listed, 2)}
    if args.cache == "none":  # what listing cost before the dataset stored its listing: decoding every record
        begin = time.perf_counter()
        for index in range(len(train.source)):
            train.source[index]
        result["listing_by_decoding_s"] = round(time.perf_counter() - begin, 2)
        start += time.perf_counter() - begin
    iterator = pipeline.train_iterator(train, args.batch_size, 0, 0, 1, args.num_workers, cache=args.cache)
    if args.cache == "device":  # what the step does with each selection: the gather, on the device
        resident = jax.device_put(train.columns(), jax.devices()[0])
        gather = jax.jit(lambda columns, selection: train.gather(columns, selection, jnp))
        produce = lambda: gather(resident, next(iterator))  # noqa: E731
    else:
        produce = lambda: next(iterator)  # noqa: E731
    jax.block_until_ready(produce())  # the cache filled, workers started, the gather compiled
    ready = time.perf_counter() - start
    begin = time.perf_counter()
    for _ in range(args.steps):
        out = produce()
    jax.block_until_ready(out)
    rate = args.steps * args.batch_size / (time.perf_counter() - begin)
    iterator.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return result | {"examples_per_s": round(rate, 1), "startup_s": round(ready, 2), "peak_rss_mb": round(peak, 1)}


def step_comparison(args: types.SimpleNamespace) -> dict:
    """Ms per train step fed one constant pre-placed batch, and gathering each batch from device-resident data.

    The two alternate rounds in one process.
    """
    config = _config(args)
    train, _ = pipeline.load_splits(config)
    mesh = parallel.make_mesh()
    iterator = pipeline.train_iterator(train, args.batch_size, 0, 0, 1, cache="device")
    constant = parallel.global_batch(train.gather(train.columns(), next(iterator), np), mesh)
    model = har_model.build_model(config, train.num_classes)
    optimizer = step_lib.make_optimizer(config, step_lib.learning_rate_schedule(config.train))
    state = jax.jit(
        lambda: step_lib.create_train_state(model, optimizer, jax.device_get(constant), config.seed),
        out_shardings=parallel.replicated(mesh),
    )()
    resident = parallel.replicate(train.columns(), mesh)
    steps = {
        "constant": step_lib.jit_train_step(mesh, config.loss.contrastive_weight),
        "device": step_lib.jit_train_step(mesh, config.loss.contrastive_weight, train.gather),
    }
    inputs = {
        "constant": lambda: (constant, None),
        "device": lambda: (parallel.global_batch(next(iterator), mesh), resident),
    }
    timings = {name: [] for name in steps}
    for _ in range(args.rounds + 1):  # the first round compiles and warms up
        for name, step in steps.items():
            begin = time.perf_counter()
            for _ in range(args.step_repeats):
                state, metrics = step(state, *inputs[name]())
            jax.block_until_ready(metrics)
            timings[name].append((time.perf_counter() - begin) / args.step_repeats * 1e3)
    iterator.close()
    medians = {name: float(np.median(values[1:])) for name, values in timings.items()}
    return {
        "step_ms": {name: round(value, 2) for name, value in medians.items()},
        "device_over_constant": round(medians["device"] / medians["constant"], 3),
        "step_examples_per_s": round(args.batch_size / medians["constant"] * 1e3, 1),
    }


def main(argv: list[str]) -> None:
    del argv
    names = (*_SETTINGS, "data_dir", "scratch", "cache", "smoke")
    args = types.SimpleNamespace(**{name: flags.FLAGS[name].value for name in names})
    if args.smoke:
        args.trials, args.embedding_dim, args.max_length, args.batch_size = 64, 32, 64, 8
        args.steps, args.rounds, args.step_repeats = 3, 1, 1
    host_memory.retain_freed_memory()  # as harjax.main
    if args.cache is not None:
        print(json.dumps(measure_cache(args)))
        return
    with tempfile.TemporaryDirectory() as smoke_data:
        if args.data_dir is None:  # kept between runs, in a folder named by what made it (not --smoke's)
            scratch = f"{args.scratch}-{args.trials}x{args.embedding_dim}-builder{mmact_sized.MMActSized.VERSION}"
            args.data_dir = mmact_sized.build(smoke_data if args.smoke else scratch, args.trials, args.embedding_dim)
        report(args)


def report(args: types.SimpleNamespace) -> None:
    """Measures every cache, then the step comparison, on args.data_dir; prints the table and the JSON line."""
    caches = {}
    settings = [f"--{name}={getattr(args, name)}" for name in _SETTINGS]
    for cache in CACHES:  # each in a fresh process: its own start-up and peak memory
        command = [sys.executable, __file__, *settings, f"--cache={cache}", f"--data_dir={args.data_dir}"]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        caches[cache] = json.loads(result.stdout.strip().splitlines()[-1])
    comparison = step_comparison(args)
    device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    print(f"{'cache':<8} {'examples/s':>12} {'listing s':>10} {'start-up s':>11} {'peak RSS MB':>12}")
    for cache, row in caches.items():
        print(
            f"{cache:<8} {row['examples_per_s']:>12.1f} {row['listing_s']:>10.2f} {row['startup_s']:>11.2f} "
            f"{row['peak_rss_mb']:>12.1f}"
        )
    print(f"listing the training views by decoding every record instead: {caches['none']['listing_by_decoding_s']} s")
    print(
        f"train step ({device}): constant pre-placed batch {comparison['step_ms']['constant']:.1f} ms, device "
        f"cache {comparison['step_ms']['device']:.1f} ms ({comparison['device_over_constant']:.3f}x); the step "
        f"consumes {comparison['step_examples_per_s']:.0f} examples/s"
    )
    print(
        json.dumps(
            {
                "benchmark": "input_pipeline",
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "video_dim": args.embedding_dim,
                "trials": args.trials,
                "data_dir": args.data_dir,
                "examples_per_s": {cache: row["examples_per_s"] for cache, row in caches.items()},
                "startup_s": {cache: row["startup_s"] for cache, row in caches.items()},
                "listing_s": {cache: row["listing_s"] for cache, row in caches.items()},
                "listing_by_decoding_s": caches["none"].get("listing_by_decoding_s"),
                "peak_rss_mb": {cache: row["peak_rss_mb"] for cache, row in caches.items()},
                **comparison,
                "device": device,
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    cli.run(main)
