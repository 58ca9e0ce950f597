"""MMAct from its TFDS dataset (built by data_builders/mmact): protocol splits, camera views, normalisation.

Reads with tfds.builder_from_directory, so training needs neither the builder's code nor its dependencies.
Training examples are trials: each epoch picks one of the trial's cameras at random (seeded per element by
grain, so resumes stay exact). Evaluation examples are (trial, camera) views; views of a trial share a 'trial'
id, so the evaluation also reports the per-trial average. Sensors are standardised with the protocol's training
statistics stored in the dataset, then padded (or cropped: randomly in training, centred in evaluation) to
config.data.max_length steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any

import ml_collections
import numpy as np

from harjax.data import batch as batch_lib

DATASET = "mmact"
PROTOCOLS = ("cross_subject", "cross_view", "cross_scene", "cross_session")


def dataset_directory(data_dir: str, tfds_config: str) -> str:
    """<data_dir>/mmact/<config>/<latest version>."""
    root = os.path.join(data_dir, DATASET, tfds_config)
    versions = sorted((entry for entry in os.listdir(root) if entry[:1].isdigit()),
                      key=lambda v: tuple(int(part) for part in v.split("."))) if os.path.isdir(root) else []
    if not versions:
        raise batch_lib.DataError(
            f"{root}: no built MMAct dataset (config.data.data_dir={data_dir!r}, TFDS config {tfds_config!r}); "
            "build it with python -m data_builders.mmact.build --config=" + tfds_config)
    return os.path.join(root, versions[-1])


@dataclasses.dataclass(frozen=True)
class MMActSplit:
    """One protocol split as contract examples; see the module docstring."""

    source: Any  # tfds random-access data source of stored trials
    items: np.ndarray  # train: [N] trial indices; eval: [N, 2] (trial index, camera index)
    training: bool
    mean: np.ndarray  # [C] normalisation of recorded streams
    std: np.ndarray
    stream_axes: int
    max_length: int
    uses_video: bool
    video_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    channel_names: tuple[str, ...]
    origin: str
    fingerprint: str
    report: dict[str, int]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.training:
            return self.source[int(self.items[index])]
        trial, camera = self.items[index]
        return self._contract(self.source[int(trial)], int(camera), None) | {batch_lib.TRIAL: np.int32(trial)}

    @property
    def random_transform(self):
        return self._random_view if self.training else None

    def _random_view(self, stored: dict[str, Any], rng: np.random.Generator) -> batch_lib.Batch:
        cameras = np.flatnonzero(stored["camera_mask"])
        return self._contract(stored, int(rng.choice(cameras)) if len(cameras) else -1, rng)

    def _contract(self, stored: dict[str, Any], camera: int, rng: np.random.Generator | None) -> batch_lib.Batch:
        sensor = stored["sensor"]  # [T, C]
        recorded = np.repeat(stored["sensor_present"], self.stream_axes)  # [C]
        sensor = np.where(recorded, (sensor - self.mean) / self.std, 0.0).astype(np.float32)
        excess = len(sensor) - self.max_length
        if excess > 0:
            start = int(rng.integers(0, excess + 1)) if rng is not None else excess // 2
            sensor = sensor[start:start + self.max_length]
        length = len(sensor)
        example = {
            batch_lib.SENSOR: np.pad(sensor, ((0, self.max_length - length), (0, 0))),
            batch_lib.SENSOR_MASK: np.arange(self.max_length) < length,
            batch_lib.LABEL: np.int32(stored["label"]),
        }
        if self.uses_video:
            example[batch_lib.VIDEO] = stored["embedding"][camera].astype(np.float32)
        return example

    @property
    def example_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        spec = {batch_lib.SENSOR: ((self.max_length, len(self.mean)), np.dtype(np.float32)),
                batch_lib.SENSOR_MASK: ((self.max_length,), np.dtype(bool)),
                batch_lib.LABEL: ((), np.dtype(np.int32))}
        if self.uses_video:
            spec[batch_lib.VIDEO] = (self.video_shape, np.dtype(np.float32))
        if not self.training:
            spec[batch_lib.TRIAL] = ((), np.dtype(np.int32))
        return spec

    @property
    def has_video(self) -> bool:
        return self.uses_video


def _open(directory: str) -> Any:
    import tensorflow_datasets as tfds

    return tfds.builder_from_directory(directory)


def load_splits(config: ml_collections.ConfigDict) -> tuple[MMActSplit, MMActSplit]:
    """(train, eval) of config.data.protocol from the TFDS dataset under config.data.data_dir."""
    data = config.data
    if data.protocol not in PROTOCOLS:
        raise ValueError(f"config.data.protocol must be one of {PROTOCOLS}, got {data.protocol!r}")
    if not data.data_dir:
        raise batch_lib.DataError("config.data.source='mmact' needs config.data.data_dir (the TFDS data_dir)")
    tfds_config = data.tfds_config or f"{data.prompt_set}-{data.embedding}"
    directory = dataset_directory(data.data_dir, tfds_config)
    builder = _open(directory)
    with open(os.path.join(directory, "dataset_info.json"), "rb") as f:
        fingerprint = hashlib.sha256(f.read()).hexdigest()[:16]
    stats = builder.info.metadata["normalization"][data.protocol]
    names = tuple(builder.info.features["label"].names)
    embedding_shape = tuple(builder.info.features["embedding"].shape)  # [cameras, d] or [cameras, 8, d]
    streams = builder.info.features["sensor_present"].shape[0]
    uses_video = config.model.modalities in ("both", "video")
    uses_sensor = config.model.modalities in ("both", "sensor")
    if data.protocol == "cross_view":  # its train and test splits hold the same trials, cameras aside
        if not uses_video:
            logging.warning("config.data.protocol='cross_view' tests unseen cameras of the training trials: this "
                            "video-free model is tested on the recordings it trained on, so its scores measure "
                            "memorisation, not generalisation (experiment suites leave such runs out)")
        elif uses_sensor:
            logging.warning("cross_view: the test trials' sensor data is in the training split; only the camera "
                            "view is new")
    extracted_with = builder.info.metadata.get("embeddings", {}).get("prompt_set")
    if extracted_with != data.prompt_set:
        raise ValueError(f"{directory} holds embeddings of prompt set {extracted_with!r}, but config.data.prompt_set="
                         f"{data.prompt_set!r}")

    def split(part: str) -> MMActSplit:
        name = f"{data.protocol}_{part}"
        source = builder.as_data_source(name)
        items, report = [], {"trials": len(source), "skipped_no_camera": 0, "skipped_no_sensor": 0,
                             "longer_than_max_length": 0}
        for index in range(len(source)):
            stored = source[index]
            cameras = np.flatnonzero(stored["camera_mask"])
            if uses_video and not len(cameras):
                report["skipped_no_camera"] += 1
                continue
            if uses_sensor and not len(stored["sensor"]):
                report["skipped_no_sensor"] += 1
                continue
            report["longer_than_max_length"] += len(stored["sensor"]) > data.max_length
            if part == "train":
                items.append(index)
            else:  # one view per camera; a video-free model needs one view per trial
                items.extend((index, camera) for camera in (cameras if uses_video else [-1]))
        report["examples"] = len(items)
        skipped = {reason: count for reason, count in report.items() if reason.startswith("skipped") and count}
        if skipped:
            logging.warning("%s/%s: %s", directory, name, skipped)
        return MMActSplit(
            source=source, items=np.asarray(items, np.int64), training=part == "train",
            mean=np.asarray(stats["mean"], np.float32), std=np.asarray(stats["std"], np.float32),
            stream_axes=len(stats["mean"]) // streams, max_length=data.max_length, uses_video=uses_video,
            video_shape=embedding_shape[1:], num_classes=len(names), class_names=names,
            channel_names=tuple(builder.info.metadata["sensor_channels"]),
            origin=f"{directory} [{name}]", fingerprint=fingerprint, report=report)

    return split("train"), split("test")
