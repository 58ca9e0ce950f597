"""Input pipeline examples/s next to the train step's consumption, on the same machine and batch.

    python benchmarks/input_pipeline.py [--data_dir=D --tfds_config=NAME] [--batch_size=64 --steps=50]

Without --data_dir it builds the demo's MMAct dataset (480 synthetic trials, about 90 s) in a temporary folder. The
pipeline is timed alone (grain over the array_record files: read, pick a camera, standardise, pad, batch), then
the jitted train step of configs/full.py:demo alone, fed one device-resident batch. Prints a table and, last,
one JSON line. Target (issue 4): the pipeline delivers at least 3x what the step consumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from benchmarks import common  # noqa: E402
from configs import full  # noqa: E402
from harjax.data import pipeline  # noqa: E402


def pipeline_rate(split, batch_size: int, steps: int) -> float:
    iterator = pipeline.train_iterator(split, batch_size, seed=0, process_index=0, process_count=1)
    next(iterator)  # threads started, first reads done
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--tfds_config", default="tiny-context-video_mean_last")
    parser.add_argument("--protocol", default="cross_subject")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    config = full.get_config("demo")
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir
        if data_dir is None:
            from data_builders.mmact import demo

            data_dir = demo.prepare(scratch)
        config.data.update(data_dir=data_dir, tfds_config=args.tfds_config, protocol=args.protocol)
        config.train.batch_size = args.batch_size
        train_split, _ = pipeline.load_splits(config)
        produced = pipeline_rate(train_split, args.batch_size, args.steps)
        local_batch = next(pipeline.train_iterator(train_split, args.batch_size, 0, 0, 1))
        consumed = args.batch_size / common.train_step_ms(config, local_batch, train_split.num_classes,
                                                          args.steps) * 1e3
    print(f"{'input pipeline':<22} {produced:>10.1f} examples/s")
    device = f"{jax.device_count()} x {jax.devices()[0].platform}"
    print(f"{'train step consumes':<22} {consumed:>10.1f} examples/s  ({device})")
    print(f"{'ratio':<22} {produced / consumed:>10.2f}x")
    print(json.dumps({"benchmark": "input_pipeline", "batch_size": args.batch_size,
                      "max_length": config.data.max_length,
                      "pipeline_examples_per_s": round(produced, 1), "step_examples_per_s": round(consumed, 1),
                      "ratio": round(produced / consumed, 2), "device": jax.devices()[0].device_kind,
                      "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
