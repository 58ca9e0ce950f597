"""The input pipeline: load a source's splits, standardise sensors, and serve grain iterators of batches.

Training batches are a function of the step alone (the shuffled order, the random transforms and the split over
processes are all seeded by position), so a resumed run starts its iterator at the restored step and sees exactly
the batches the uninterrupted run would, whatever its number of input workers or processes. Evaluation visits every
example exactly once: the last batch is padded and masked through 'valid', never dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from typing import Iterator

import grain
import ml_collections
from absl import flags
import numpy as np

from harjax.data import batch as batch_lib
from harjax.data import mmact, npz, synthetic

SOURCES = ("synthetic", "npz", "mmact")


def load_splits(config: ml_collections.ConfigDict) -> tuple[batch_lib.Split, batch_lib.Split]:
    """(train, eval) splits of config.data.source, sensors standardised with train statistics."""
    source = config.data.source
    if source == "mmact":
        train, evaluation = mmact.load_splits(config)  # standardised with the dataset's stored statistics
    elif source in ("synthetic", "npz"):
        train, evaluation = _load_arrays(config)
    else:
        raise ValueError(f"config.data.source must be one of {SOURCES}, got {source!r}")
    for data in (train, evaluation):
        if not len(data):
            raise batch_lib.DataError(f"{data.origin} holds no examples")
    if config.model.modalities in ("both", "video") and not train.has_video:
        raise batch_lib.DataError(
            f"config.model.modalities={config.model.modalities!r} needs video embeddings, but {train.origin} has no "
            "'video' array [N, d_v]; add one or train a video-free config such as configs/sensor_only.py")
    return train, evaluation


def _load_arrays(config: ml_collections.ConfigDict) -> tuple[batch_lib.ArrayData, batch_lib.ArrayData]:
    if config.data.source == "synthetic":
        train = synthetic.generate(config.data.synthetic, "train", config.seed)
        evaluation = synthetic.generate(config.data.synthetic, "eval", config.seed)
    else:
        train = npz.load(config.data.train_path, config.data.num_classes)
        evaluation = npz.load(config.data.eval_path, config.data.num_classes or train.num_classes)
    if config.model.modalities == "sensor":  # video-free: neither split needs (or must agree on) video
        train, evaluation = (dataclasses.replace(data, arrays={name: array for name, array in data.arrays.items()
                                                               if name != batch_lib.VIDEO})
                             for data in (train, evaluation))
    batch_lib.check_compatible_splits(train, evaluation)
    if not len(train):
        return train, evaluation  # load_splits reports the empty split
    mean, std = sensor_statistics(train)
    return standardise_sensors(train, mean, std), standardise_sensors(evaluation, mean, std)


def sensor_statistics(data: batch_lib.ArrayData) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over recorded steps only (padding would bias both towards zero)."""
    recorded = data.arrays[batch_lib.SENSOR][data.arrays[batch_lib.SENSOR_MASK]]  # [num_recorded_steps, C]
    return recorded.mean(axis=0), np.maximum(recorded.std(axis=0), 1e-6)


def standardise_sensors(data: batch_lib.ArrayData, mean: np.ndarray, std: np.ndarray) -> batch_lib.ArrayData:
    """(x - mean) / std on recorded steps; padding stays exactly zero."""
    mask = data.arrays[batch_lib.SENSOR_MASK][..., None]
    sensor = np.where(mask, (data.arrays[batch_lib.SENSOR] - mean) / std, 0.0).astype(np.float32)
    return dataclasses.replace(data, arrays={**data.arrays, batch_lib.SENSOR: sensor})


def per_process_batch_size(global_batch_size: int, num_devices: int, num_processes: int, flag: str) -> int:
    """The global batch splits evenly over devices (and therefore over processes)."""
    if global_batch_size <= 0 or global_batch_size % num_devices:
        raise ValueError(f"{flag}={global_batch_size} must be a positive multiple of the {num_devices} devices")
    return global_batch_size // num_processes


def train_iterator(data: batch_lib.Split, batch_size: int, seed: int, process_index: int,
                   process_count: int, num_workers: int = 0, start_batch: int = 0) -> grain.DatasetIterator:
    """Endless, reshuffled each epoch, starting after `start_batch` global batches (the step a run resumes from).

    One global order whatever the number of processes: global batch s is rows [s*B, (s+1)*B) of the shuffled
    stream, and process p reads its consecutive `batch_size` rows of it, so 1 process x 8 devices and 2 processes
    x 4 devices train on the same global batches. num_workers > 0 builds batches in that many worker processes
    (decoding MMAct records holds the GIL, so threads alone stop scaling); the batches are the same as with 0.
    Call close() on the iterator when done.
    """
    if len(data) < batch_size * process_count:
        raise ValueError(f"{data.origin}: {len(data)} training examples are fewer than one global batch of "
                         f"{batch_size * process_count} (config.train.batch_size)")
    if num_workers < 0:
        raise ValueError(f"config.data.num_workers must be >= 0 (0: batches built in the training process), "
                         f"got {num_workers}")
    dataset = grain.MapDataset.source(data).seed(seed).shuffle().repeat()
    if data.random_transform is not None:
        dataset = dataset.random_map(data.random_transform)  # seeded by global position
    dataset = dataset.batch(batch_size, drop_remainder=True)  # per-process batches, process_count per global batch
    dataset = dataset[start_batch * process_count + process_index::process_count]
    batches = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app use their defaults
            flags.FLAGS.mark_as_parsed()
        batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                                      worker_init_fn=_leave_signals_to_the_trainer)
    return iter(batches)


def _leave_signals_to_the_trainer(worker_index: int, worker_count: int) -> None:
    """Input workers ignore SIGTERM and SIGINT, and exit when the trainer is gone.

    Clusters signal every process of a job on preemption; the trainer then still needs batches until the step all
    processes agree to checkpoint at, so workers must outlive the signal. The trainer's close() stops them; if the
    trainer is killed outright, a watcher thread notices the new parent and ends the worker.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    trainer = os.getppid()

    def exit_when_orphaned() -> None:
        while os.getppid() == trainer:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=exit_when_orphaned, daemon=True, name="harjax-orphan-watch").start()


def eval_batches(data: batch_lib.Split, batch_size: int, process_index: int,
                 process_count: int) -> Iterator[batch_lib.Batch]:
    """Every example once, in order; all processes yield the same number of batches so collectives line up.

    Each batch carries 'index', the rows' positions in the split (-1 on padding), so what is computed per
    example (robustness corruptions, chosen examples) does not depend on the number of processes.
    """
    shard = grain.MapDataset.source(data)[process_index::process_count]
    num_batches = max(1, math.ceil(math.ceil(len(data) / process_count) / batch_size))
    batches = shard.batch(batch_size, drop_remainder=False)
    for index in range(num_batches):
        batch = batches[index] if index < len(batches) else batch_lib.empty_batch(data)
        rows = len(batch[batch_lib.LABEL])
        positions = (index * batch_size + np.arange(rows)) * process_count + process_index  # rows p, p+P, ...
        padded = batch_lib.pad_batch(batch | {batch_lib.INDEX: positions.astype(np.int32)}, batch_size)
        padded[batch_lib.INDEX][rows:] = -1
        yield padded


def log_summary(train: batch_lib.Split, evaluation: batch_lib.Split) -> None:
    logging.info("train: %d examples from %s; eval: %d examples from %s; %d classes; shapes %s",
                 len(train), train.origin, len(evaluation), evaluation.origin, train.num_classes,
                 batch_lib.dims(train))
