"""harjax's TFDS dataset format: what every builder writes and harjax/data/tfds_source.py reads, defined once.

MMAct's builder (data_builders/mmact) and the recordings builder (data_builders/recordings, also UTD-MHAD's) both
write, per dataset config:
- one record per trial (`features`): sensor [T, C] float32 aligned at the config's rate, sensor_present [streams],
  embedding [cameras, d] (or [cameras, 8, d] for 'frame_means') float16 where the build has video, camera_mask
  [cameras], label, subject, scene, session, trial (a recordings build adds sensor_mask [T] and groups);
- the splits '<protocol>_train' and '<protocol>_test' of each protocol;
- metadata: 'protocols', 'normalization' (per protocol, the training split's `Statistics`), 'sensor_channels',
  'sensor_rate_hz', 'cameras', 'embeddings' (the extraction's metadata), 'build_report' (what was skipped, and why)
  and INDEX (per split, the listing the reader selects views from without decoding a record: `listing`).
Config names are '<prompt_set>-<embedding kind>' (`config_name`), 'sensors' for a build without video, with
'-<rate>hz' at a rate other than DEFAULT_RATE_HZ; a prompt learned on a protocol's training split is the prompt set
'learned_<protocol>' (`learned_prompt_set`). Reading needs none of the builders' code (tfds.builder_from_directory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_RATE_HZ = 50.0  # the sensor rate of a config without a '-<rate>hz' suffix (and of builds that predate it)
SENSORS_ONLY = "sensors"  # the config of a recordings build without video
LEARNED_PREFIX = "learned_"  # a learned prompt's prompt set, extraction folder and TFDS config prefix
INDEX = "index"  # metadata: per split, what listing the views needs (camera_mask, sensor_length, label, subject)
# A channel constant over a protocol's training split is divided by this, not by 0 (the recordings build reports
# such channels); a channel never recorded there keeps std 1, so its zeros stay zeros.
STD_FLOOR = 1e-6


def config_name(prompt_set: str | None, embedding: str, rate_hz: float = DEFAULT_RATE_HZ) -> str:
    """'<prompt_set>-<embedding>', or SENSORS_ONLY without a prompt set, with '-<rate>hz' at another rate."""
    return at_rate(f"{prompt_set}-{embedding}" if prompt_set else SENSORS_ONLY, rate_hz)


def at_rate(name: str, rate_hz: float) -> str:
    """A config name as built at `rate_hz`: unchanged at DEFAULT_RATE_HZ, else '<name>-<rate>hz'."""
    return name if rate_hz == DEFAULT_RATE_HZ else f"{name}-{rate_hz:g}hz"


def embedding_kind(name: str) -> str:
    """The stored embedding kind of a '<prompt_set>-<kind>[-...]' config."""
    return name.split("-")[1]


def learned_prompt_set(protocol: str) -> str:
    """The prompt set (extraction folder, TFDS config prefix) of a prompt learned on `protocol`'s training split."""
    return LEARNED_PREFIX + protocol


def stored_prompt_set(prompt_set: str, protocol: str) -> str:
    """The prompt set a build stores for config.data.prompt_set: 'learned' is the prompt learned on `protocol`.

    A learned prompt belongs to the protocol whose training split it was learned on, so each protocol reads its own.
    """
    return learned_prompt_set(protocol) if prompt_set == "learned" else prompt_set


class Statistics:
    """Per-channel mean and std of a protocol's training split, over the steps where each channel was recorded.

    Sums are float64 (long splits of float32 values). The result is the dataset's metadata['normalization'] entry.
    """

    def __init__(self, channels: int):
        self.total, self.total_sq, self.count = np.zeros(channels), np.zeros(channels), np.zeros(channels, np.int64)

    def add(self, values: np.ndarray, recorded: np.ndarray | None = None) -> None:
        """values [S, C] of one trial; recorded [C] bool: the channels it has (None: all)."""
        recorded = np.ones(values.shape[1], bool) if recorded is None else np.asarray(recorded, bool)
        values = values.astype(np.float64)
        self.total += np.where(recorded, values.sum(0), 0)
        self.total_sq += np.where(recorded, (values**2).sum(0), 0)
        self.count += recorded * len(values)

    def result(self) -> dict[str, list[float]]:
        """{'mean', 'std', 'steps'} per channel: std floored at STD_FLOOR, 1 where a channel was never recorded."""
        steps = np.maximum(self.count, 1)
        mean = self.total / steps
        std = np.sqrt(np.maximum(self.total_sq / steps - mean**2, 0))
        std = np.where(self.count > 0, np.maximum(std, STD_FLOOR), 1.0)
        return {"mean": mean.tolist(), "std": std.tolist(), "steps": self.count.astype(int).tolist()}


def constant_channels(statistics: dict[str, list[float]], channel_names: Sequence[str]) -> list[str]:
    """The channels a split's statistics found constant (their std is the floor)."""
    return [channel_names[index] for index in np.flatnonzero(np.asarray(statistics["std"]) <= STD_FLOOR)]


def listing(
    camera_mask: Sequence[Sequence[bool]], sensor_length: Sequence[int], label: Sequence[int], subject: Sequence[int]
) -> dict[str, list]:
    """A split's INDEX entry: per stored trial, in record order, its cameras, aligned steps, label and subject."""
    return {
        "camera_mask": [list(map(bool, mask)) for mask in camera_mask],
        "sensor_length": [int(length) for length in sensor_length],
        "label": [int(value) for value in label],
        "subject": [int(value) for value in subject],
    }


def features(
    channel_names: Sequence[str],
    streams: Sequence[str],
    class_names: Sequence[str],
    rate_hz: float,
    num_cameras: int,
    embedding_shape: tuple[int, ...] | None,
    embedding_doc: str = "",
) -> dict[str, Any]:
    """The record's features every build has; embedding_shape [cameras, ...] or None for a build without video.

    A builder adds its own (MMAct: frames; recordings: sensor_mask and groups) before making the FeaturesDict.
    """
    import tensorflow_datasets as tfds

    tensor = tfds.features.Tensor
    features = {
        "sensor": tensor(
            shape=(None, len(channel_names)),
            dtype=np.float32,
            doc=f"aligned at {rate_hz} Hz: {', '.join(channel_names)}",
        ),
        "sensor_present": tensor(shape=(len(streams),), dtype=np.bool_, doc=f"which of {tuple(streams)} the trial has"),
        "camera_mask": tensor(shape=(num_cameras,), dtype=np.bool_, doc="cameras with an embedding in this split"),
        "label": tfds.features.ClassLabel(names=list(class_names)),
        "subject": np.int32,
        "scene": np.int32,
        "session": np.int32,
        "trial": tfds.features.Text(),
    }
    if embedding_shape is not None:
        features["embedding"] = tensor(shape=embedding_shape, dtype=np.float16, doc=embedding_doc)
    return features
