"""Input pipeline examples/s next to the train step's consumption, on the same machine and batch.

    python benchmarks/input_pipeline.py [--embedding_dim=4096 --batch_size=128 --steps=30]
    python benchmarks/input_pipeline.py --data_dir=D --tfds_config=NAME      # an MMAct dataset you built

Without --data_dir it builds the demo's MMAct dataset (480 synthetic trials, 1920 clips) in a temporary folder;
with --embedding_dim other than the tiny model's 32 it then rebuilds it with every stored embedding replaced by
a random vector of that width (4096: Video-LLaVA-7B's, the size real MMAct data has), so records are as large as
real ones. The pipeline is timed alone (grain over the array_record files: read, pick a camera, standardise, pad
to 256 steps, batch; in config.data.num_workers worker processes unless --num_workers says otherwise), then the jitted train step of configs/full.py's model on one of its batches. Prints a table
and, last, one JSON line. Target (issue 4): the pipeline delivers at least 3x what the step consumes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from harjax import host_memory  # noqa: E402
from configs import full  # noqa: E402
from harjax.data import pipeline  # noqa: E402

_WIDE_CONFIG = "context-video_mean_last"  # the demo's builder config; its width is the embeddings' own


def pipeline_rate(split, batch_size: int, steps: int, num_workers: int) -> float:
    iterator = pipeline.train_iterator(split, batch_size, seed=0, process_index=0, process_count=1,
                                       num_workers=num_workers)
    next(iterator)  # threads and workers started, first reads done
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    rate = steps * batch_size / (time.perf_counter() - start)
    iterator.close()
    return rate


def widen_embeddings(embeddings_dir: str, output_dir: str, width: int) -> None:
    """Copies extractor output with every embedding kind replaced by random float16 vectors of `width`."""
    from data_builders.mmact import extract_embeddings

    rng = np.random.default_rng(0)
    for source in glob.glob(os.path.join(embeddings_dir, "*", "*")):
        target = os.path.join(output_dir, os.path.relpath(source, embeddings_dir))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.basename(source) == extract_embeddings.METADATA:
            with open(source) as f:
                metadata = json.load(f) | {"hidden_size": width}
            with open(target, "w") as f:
                json.dump(metadata, f)
            continue
        if not source.endswith(".npz"):
            shutil.copy(source, target)
            continue
        with np.load(source) as stored:
            arrays = {name: (rng.standard_normal((*stored[name].shape[:-1], width)).astype(np.float16)
                             if name in extract_embeddings.EMBEDDING_KINDS else stored[name]) for name in stored}
        np.savez(target, **arrays)


def demo_dataset(scratch: str, embedding_dim: int) -> tuple[str, str]:
    """(data_dir, tfds config) of the demo dataset, its embeddings `embedding_dim` wide."""
    from data_builders.mmact import build, demo, tiny_model

    data_dir = demo.prepare(os.path.join(scratch, "demo"))
    if embedding_dim == tiny_model.HIDDEN_SIZE:
        return data_dir, _WIDE_CONFIG
    wide = os.path.join(scratch, "embeddings_wide")
    widen_embeddings(os.path.join(data_dir, "embeddings"), wide, embedding_dim)
    wide_data_dir = os.path.join(scratch, "wide")
    build.build(os.path.join(data_dir, "manual"), wide, wide_data_dir, _WIDE_CONFIG)
    return wide_data_dir, _WIDE_CONFIG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--tfds_config", default=_WIDE_CONFIG, help="with --data_dir")
    parser.add_argument("--embedding_dim", type=int, default=4096, help="without --data_dir: the width of the random embeddings (32: the tiny model's own)")
    parser.add_argument("--protocol", default="cross_subject")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--num_workers", type=int, default=None,
                        help="grain worker processes; default: config.data.num_workers of configs/full.py")
    args = parser.parse_args()
    host_memory.retain_freed_memory()  # as harjax.main
    config = full.get_config("mmact")
    with tempfile.TemporaryDirectory() as scratch:
        data_dir, tfds_config = ((args.data_dir, args.tfds_config) if args.data_dir
                                 else demo_dataset(scratch, args.embedding_dim))
        config.data.update(data_dir=data_dir, tfds_config=tfds_config, protocol=args.protocol, max_length=256)
        config.train.batch_size = args.batch_size
        if args.num_workers is not None:
            config.data.num_workers = args.num_workers
        train_split, _ = pipeline.load_splits(config)
        produced = pipeline_rate(train_split, args.batch_size, args.steps, config.data.num_workers)
        local_batch = next(pipeline.train_iterator(train_split, args.batch_size, 0, 0, 1))
        consumed = args.batch_size / common.train_step_ms(config, local_batch, train_split.num_classes,
                                                          args.steps) * 1e3
    video_dim = local_batch["video"].shape[-1]
    print(f"{'input pipeline':<22} {produced:>10.1f} examples/s  (d_v {video_dim}, T {config.data.max_length}, "
          f"{config.data.num_workers} worker processes)")
    device = f"{jax.device_count()} x {jax.devices()[0].platform}"
    print(f"{'train step consumes':<22} {consumed:>10.1f} examples/s  ({device})")
    print(f"{'ratio':<22} {produced / consumed:>10.2f}x")
    print(json.dumps({"benchmark": "input_pipeline", "batch_size": args.batch_size, "video_dim": video_dim,
                      "max_length": config.data.max_length, "tfds_config": tfds_config,
                      "num_workers": config.data.num_workers,
                      "pipeline_examples_per_s": round(produced, 1), "step_examples_per_s": round(consumed, 1),
                      "ratio": round(produced / consumed, 2), "device": jax.devices()[0].device_kind,
                      "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
