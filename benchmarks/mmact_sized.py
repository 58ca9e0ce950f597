"""An MMAct-sized TFDS dataset of random records, in the real builder's format, for the input benchmarks.

Real MMAct cannot ship and a synthetic release of its size (36,000 clips) takes hours to extract; the input
pipeline only cares about record sizes. So this builder subclasses the MMAct builder (same features, same
metadata: normalisation, channels, the stored listing) and writes random trials: sensor lengths spread like
MMAct's clips (median about 6 s at 50 Hz, 40 to 2,575 steps), about 2.5% of camera views missing, Video-LLaVA-7B's
4096-wide float16 embeddings. Only the cross_subject splits are written (subjects 1-16 train, 17-20 test).

    build(data_dir, trials=8968, embedding_dim=4096) -> the data_dir to read with harjax (config 'context-...')
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data_builders.mmact import layout, mmact_dataset_builder

TFDS_CONFIG = "context-video_mean_last"
PROTOCOL = "cross_subject"
_MISSING_VIEW = 0.025


class MMActSized(mmact_dataset_builder.Builder):
    name = "mmact_sized"

    def __init__(self, *, trials: int, embedding_dim: int, **kwargs: Any):
        self._trials, self._embedding_dim_value = trials, embedding_dim
        super().__init__(embeddings_dir="", **kwargs)

    def _embedding_dim(self) -> int:
        return self._embedding_dim_value

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        rng = np.random.default_rng(0)
        lengths = np.clip(rng.lognormal(np.log(305), 0.55, self._trials), 40, 2575).astype(int)
        masks = rng.random((self._trials, len(layout.CAMERAS))) > _MISSING_VIEW
        labels = rng.integers(0, len(layout.CLASSES), self._trials)
        test = rng.random(self._trials) < 0.2  # about subjects 17-20's share
        channels = len(mmact_dataset_builder.SENSOR_CHANNELS)
        self.info.metadata["normalization"] = {PROTOCOL: {"mean": [0.0] * channels, "std": [1.0] * channels}}
        self.info.metadata["sensor_channels"] = list(mmact_dataset_builder.SENSOR_CHANNELS)
        self.info.metadata["cameras"] = list(layout.CAMERAS)
        self.info.metadata["embeddings"] = {
            "prompt_set": "context",
            "hidden_size": self._embedding_dim_value,
            "model": "random (benchmarks/mmact_sized.py)",
        }
        members = {f"{PROTOCOL}_train": np.flatnonzero(~test), f"{PROTOCOL}_test": np.flatnonzero(test)}
        subjects = rng.integers(1, 21, self._trials)
        self.info.metadata["index"] = {
            split: {
                "camera_mask": masks[trials].tolist(),
                "sensor_length": lengths[trials].tolist(),
                "label": labels[trials].tolist(),
                "subject": subjects[trials].tolist(),
            }
            for split, trials in members.items()
        }
        return {split: self._random_trials(trials, lengths, masks, labels) for split, trials in members.items()}

    def _random_trials(
        self, trials: np.ndarray, lengths: np.ndarray, masks: np.ndarray, labels: np.ndarray
    ) -> Iterator:
        channels = len(mmact_dataset_builder.SENSOR_CHANNELS)
        for trial in trials:
            rng = np.random.default_rng([1, int(trial)])
            embedding = rng.standard_normal((len(layout.CAMERAS), self._embedding_dim_value)).astype(np.float16)
            embedding[~masks[trial]] = 0
            yield (
                f"trial{trial:05d}",
                {
                    "sensor": rng.standard_normal((lengths[trial], channels)).astype(np.float32),
                    "sensor_present": np.ones(len(layout.SENSOR_STREAMS), bool),
                    "embedding": embedding,
                    "camera_mask": masks[trial],
                    "label": int(labels[trial]),
                    "subject": 1,
                    "scene": 1,
                    "session": 1,
                    "trial": f"trial{trial:05d}",
                },
            )


def build(data_dir: str, trials: int = 8968, embedding_dim: int = 4096) -> str:
    """Writes the dataset under data_dir (once) and returns data_dir, laid out as harjax reads MMAct."""
    readable = os.path.join(data_dir, "mmact")
    if not os.path.exists(readable):
        builder = MMActSized(
            trials=trials,
            embedding_dim=embedding_dim,
            config=TFDS_CONFIG,
            data_dir=data_dir,
            file_format="array_record",
        )
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=data_dir))
        os.symlink(os.path.join(data_dir, MMActSized.name), readable)
    return data_dir
