"""The input pipeline: load a source's splits, standardise sensors, and serve batches from a data cache.

Training batches are a function of (seed, step) alone (harjax.data.sampling), so a resumed run starts its
iterator at the restored step and sees exactly the batches the uninterrupted run would, whatever its data cache,
number of input workers or processes. Caches (config.data.cache): 'none' reads the records each batch needs
(grain, optionally in worker processes), 'host' reads each split once into columns and gathers batches with
vectorised numpy, 'device' also places the training columns on the accelerators, where the jitted step gathers
its own batch from the selection it is given; 'auto' takes the first that fits. All gather with the split's one
gather function, so they serve the same batches bit for bit. Evaluation visits every example exactly once: the last
batch is padded and masked through 'valid', never dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence

import grain
import ml_collections
import numpy as np
from absl import flags

from harjax import errors
from harjax.data import batch as batch_lib, normalization, npz, sampling, synthetic, tfds_source

SOURCES = ("synthetic", "npz", "mmact", "recordings")
CACHES = ("auto", "none", "host", "device")
_ENDLESS = 2**62  # steps: a range no run reaches


def load_splits(config: ml_collections.ConfigDict, keep_video: bool = False) -> tuple[batch_lib.Split, batch_lib.Split]:
    """(train, eval) splits of config.data.source, sensors standardised (config.data.sensor_normalization).

    A video-free model's splits leave the video embeddings out, unless `keep_video` (a distillation teacher reads
    them).
    """
    source = config.data.source
    if source in ("mmact", "recordings"):
        # standardised with the dataset's stored statistics
        train, evaluation = tfds_source.load_splits(config, keep_video)
    elif source in ("synthetic", "npz"):
        train, evaluation = _load_arrays(config, keep_video)
    else:
        raise errors.ConfigError(f"config.data.source must be one of {SOURCES}, got {source!r}")
    for data in (train, evaluation):
        if not len(data):
            raise batch_lib.DataError(f"{data.origin} holds no examples")
    if config.model.modalities in ("both", "video") and not train.has_video:
        raise batch_lib.DataError(
            f"config.model.modalities={config.model.modalities!r} needs video embeddings, but {train.origin} has no "
            "'video' array [N, d_v]; add one or train a video-free config such as configs/sensor_only.py"
        )
    return train, evaluation


def without_video(split: batch_lib.Split) -> batch_lib.Split:
    """The split with its video embeddings left out: a video-free student's, once its teacher has read them."""
    if isinstance(split, batch_lib.WithTargets):
        return dataclasses.replace(split, split=without_video(split.split))
    if isinstance(split, batch_lib.ArrayData):
        return dataclasses.replace(
            split, arrays={name: array for name, array in split.arrays.items() if name != batch_lib.VIDEO}
        )
    return dataclasses.replace(split, uses_video=False, video_shape=(), video_source={})


def _load_arrays(
    config: ml_collections.ConfigDict, keep_video: bool
) -> tuple[batch_lib.ArrayData, batch_lib.ArrayData]:
    if config.data.source == "synthetic":
        train = synthetic.generate(config.data.synthetic, "train", config.seed)
        evaluation = synthetic.generate(config.data.synthetic, "eval", config.seed)
    else:
        train, evaluation = npz.load_pair(config.data.train_path, config.data.eval_path, config.data.num_classes)
    if config.model.modalities == "sensor" and not keep_video:  # neither split needs (or must agree on) video
        train, evaluation = (
            dataclasses.replace(
                data, arrays={name: array for name, array in data.arrays.items() if name != batch_lib.VIDEO}
            )
            for data in (train, evaluation)
        )
    batch_lib.check_compatible_splits(train, evaluation)
    if not len(train):
        return train, evaluation  # load_splits reports the empty split
    mode = normalization.check_mode(config.data.sensor_normalization)
    mean, std = normalization.dataset_statistics(train.arrays[batch_lib.SENSOR], train.arrays[batch_lib.SENSOR_MASK])
    return tuple(
        dataclasses.replace(
            data,
            arrays=data.arrays
            | {
                batch_lib.SENSOR: normalization.standardise(
                    data.arrays[batch_lib.SENSOR], data.arrays[batch_lib.SENSOR_MASK], mode, mean, std
                )
            },
            normalization=normalization.applied(mode, mean, std),
            sampling_rate_hz=config.data.sampling_rate_hz,
        )
        for data in (train, evaluation)
    )


VALIDATION_SEED = 0  # the validation split is a property of the data, the same for every run's seed


def validation_split(
    config: ml_collections.ConfigDict, train: batch_lib.Split
) -> tuple[batch_lib.Split, batch_lib.Split | None]:
    """(what trains, the validation split or None).

    The validation split is config.data.validation_fraction of the training split, held out for model selection so
    the test split never reaches it; whole subjects where the data has them.
    """
    fraction = config.data.validation_fraction
    if not fraction:
        return train, None
    rest, validation = train.hold_out(fraction, VALIDATION_SEED)
    logging.info("validation: %d examples from %s; training on %d", len(validation), validation.origin, len(rest))
    return rest, validation


def per_process_batch_size(global_batch_size: int, num_devices: int, num_processes: int, flag: str) -> int:
    """The global batch splits evenly over devices (and therefore over processes)."""
    if global_batch_size <= 0 or global_batch_size % num_devices:
        raise errors.ConfigError(f"{flag}={global_batch_size} must be a positive multiple of the {num_devices} devices")
    return global_batch_size // num_processes


def choose_cache(
    setting: str,
    train: batch_lib.Split,
    evaluations: Sequence[batch_lib.Split],
    fraction: float,
    device_bytes: int | None,
    replicas: int,
) -> str:
    """The data cache to use: config.data.cache, with 'auto' resolved by sizes.

    A named cache that does not fit fails here, before training, with the sizes and the setting to use instead.

    device: the training split on every local device (`replicas` copies), the evaluated splits (test, validation)
    in host memory; host: every split in host memory; none: records read as batches need them. Each may take
    `fraction` of the free memory it lives in (`device_bytes` of one device; None, as on CPU, means the device's
    memory is the host's).
    """
    if setting not in CACHES:
        raise errors.ConfigError(f"config.data.cache must be one of {CACHES}, got {setting!r}")
    host_free = free_host_bytes()
    evaluated = sum(data.column_bytes for data in evaluations)
    host_budget = fraction * host_free
    if device_bytes is None:  # CPU devices live in host memory: their copies and the evaluated splits share it
        fits = {"device": replicas * train.column_bytes + evaluated <= host_budget}
        device_budget = host_budget / replicas
    else:
        device_budget = fraction * device_bytes
        fits = {"device": train.column_bytes <= device_budget and evaluated <= host_budget}
    fits["host"] = train.column_bytes + evaluated <= host_budget
    sizes = (
        f"training split {gigabytes(train.column_bytes)}, evaluated splits {gigabytes(evaluated)}; "
        f"{fraction:g} of free memory: {gigabytes(device_budget)} per device, {gigabytes(host_budget)} host"
    )
    if setting == "auto":
        choice = next((cache for cache in ("device", "host") if fits[cache]), "none")
    elif setting != "none" and not fits[setting]:
        instead = next(cache for cache in ("host", "none") if cache == "none" or fits[cache])
        raise batch_lib.DataError(
            f"config.data.cache={setting!r} does not fit ({sizes}); use "
            f"config.data.cache={instead!r} (or raise config.data.cache_memory_fraction)"
        )
    else:
        choice = setting
    logging.info("data cache: %s (config.data.cache=%r; %s)", choice, setting, sizes)
    return choice


def free_host_bytes() -> int:
    """Available host memory (MemAvailable): what host caches, and CPU devices, may take."""
    try:
        with open("/proc/meminfo") as f:
            available = next(line for line in f if line.startswith("MemAvailable:"))
        return int(available.split()[1]) * 1024
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gigabytes(size: float) -> str:
    """Bytes as the messages about memory give them."""
    return f"{size / 2**30:.2f} GB"


def training_selection(
    data: batch_lib.Split, order: sampling.TrainingOrder, step: int, process_index: int, process_count: int
) -> batch_lib.Selection:
    """This process's rows of global batch `step`, with their random draws (camera, crop)."""
    examples, epochs = order.batch(step, process_index, process_count)
    draws = np.stack(
        [
            sampling.uniform(order.seed, sampling.CAMERA, epochs, examples),
            sampling.uniform(order.seed, sampling.CROP, epochs, examples),
        ],
        axis=1,
    )  # [b, 2]
    return data.select(examples, draws)


def train_iterator(
    data: batch_lib.Split,
    batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    num_workers: int = 0,
    start_batch: int = 0,
    cache: str = "none",
) -> grain.DatasetIterator:
    """Endless, reshuffled each epoch, starting at global batch `start_batch` (the step a run resumes from).

    Yields this process's `batch_size` rows of each global batch: contract batches, or with cache='device' the
    Selections the jitted step gathers its batch with. Global batch s is a function of (seed, s) alone
    (harjax.data.sampling), so every cache, worker count and process count serves the same batches.
    num_workers > 0 reads records in that many worker processes (cache='none' only: reading MMAct records holds
    the GIL, so threads alone stop scaling; the in-memory caches gather whole batches with vectorised numpy).
    Call close() on the iterator when done.
    """
    if num_workers < 0:
        raise errors.ConfigError(
            f"config.data.num_workers must be >= 0 (0: batches built in the training process), got {num_workers}"
        )
    if cache not in CACHES[1:]:
        raise ValueError(f"cache must be one of {CACHES[1:]} (resolve 'auto' with choose_cache), got {cache!r}")
    try:
        order = sampling.TrainingOrder(len(data), batch_size * process_count, seed)
    except errors.ConfigError as error:
        raise errors.ConfigError(f"{data.origin}: {error}") from error
    select = functools.partial(
        training_selection, data, order, process_index=process_index, process_count=process_count
    )
    if cache == "device":
        build = select
    elif cache == "host":
        columns = data.columns()
        build = lambda step: data.gather(columns, select(step), np)  # noqa: E731
    else:
        build = lambda step: data.gather(*data.read(select(step)), np)  # noqa: E731
    batches = (
        grain.MapDataset.range(start_batch, _ENDLESS)
        .map(build)
        .to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    )
    if num_workers > 0 and cache == "none":
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app use their defaults
            flags.FLAGS.mark_as_parsed()
        batches = batches.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers), worker_init_fn=_leave_signals_to_the_trainer
        )
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


def eval_batches(
    data: batch_lib.Split,
    batch_size: int,
    process_index: int,
    process_count: int,
    columns: batch_lib.Columns | None = None,
) -> Iterator[batch_lib.Batch]:
    """Every example once, in order; all processes yield the same number of batches so collectives line up.

    From `columns` (the split in memory) when given, else reading just each batch's records. Each batch carries
    'index', the rows' positions in the split (-1 on padding), so what is computed per example (robustness
    corruptions, chosen examples) does not depend on the number of processes.
    """
    positions = np.arange(process_index, len(data), process_count)  # this process's rows: p, p + P, ...
    num_batches = max(1, math.ceil(math.ceil(len(data) / process_count) / batch_size))
    for index in range(num_batches):
        chosen = positions[index * batch_size : (index + 1) * batch_size]
        if len(chosen):
            selection = data.select(chosen, None)
            batch = (
                data.gather(columns, selection, np) if columns is not None else data.gather(*data.read(selection), np)
            )
        else:
            batch = batch_lib.empty_batch(data)
        padded = batch_lib.pad_batch(batch | {batch_lib.INDEX: chosen.astype(np.int32)}, batch_size)
        padded[batch_lib.INDEX][len(chosen) :] = -1
        yield padded


def log_summary(train: batch_lib.Split, evaluation: batch_lib.Split) -> None:
    """Logs the sizes, origins, class count and shapes of the splits a run uses."""
    logging.info(
        "train: %d examples from %s; eval: %d examples from %s; %d classes; shapes %s",
        len(train),
        train.origin,
        len(evaluation),
        evaluation.origin,
        train.num_classes,
        batch_lib.dims(train),
    )
