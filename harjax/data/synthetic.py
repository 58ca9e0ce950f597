"""Seeded, class-conditional HAR data generated in memory: the default source that runs anywhere.

Each modality alone is ambiguous by construction, so only fusion can solve the task:
- video embeddings identify the class up to a pair (classes 2k and 2k+1 share a prototype), and carry a few
  huge, uninformative dimensions as Video-LLaVA hidden states do;
- sensor sequences identify the class up to a shift by half the class count (c and c + ceil(n/2) share a
  motion pattern), with random lengths, time offsets and noise.
Unimodal models therefore plateau near 50% accuracy while a fusion model can approach 100%.
"""

from __future__ import annotations

import hashlib
import json

import ml_collections
import numpy as np

from harjax.data import batch as batch_lib

_SPLIT_SEEDS = {"train": 1, "eval": 2}
_NUM_MASSIVE_DIMS = 4  # LLM hidden states have a handful of dimensions hundreds of times larger than the rest


def generate(cfg: ml_collections.ConfigDict, split: str, seed: int) -> batch_lib.ArrayData:
    """One split; prototypes depend only on `seed`, so train and eval share them."""
    num_classes, seq_len, channels, video_dim = cfg.num_classes, cfg.seq_len, cfg.channels, cfg.video_dim
    if num_classes < 2 or seq_len < 8 or channels < 1 or video_dim <= _NUM_MASSIVE_DIMS:
        raise ValueError(f"config.data.synthetic needs num_classes >= 2, seq_len >= 8, channels >= 1 and "
                         f"video_dim > {_NUM_MASSIVE_DIMS}; got {cfg.to_dict()}")
    prototypes = np.random.default_rng(seed)
    num_motions = (num_classes + 1) // 2
    frequencies = prototypes.uniform(1.0, 6.0, (num_motions, channels))  # cycles per seq_len steps
    phases = prototypes.uniform(0, 2 * np.pi, (num_motions, channels))
    amplitudes = prototypes.uniform(0.5, 1.5, (num_motions, channels))
    video_prototypes = prototypes.normal(size=(num_classes // 2 + 1, video_dim)).astype(np.float32)
    massive_dims = prototypes.choice(video_dim, _NUM_MASSIVE_DIMS, replace=False)

    rng = np.random.default_rng([seed, _SPLIT_SEEDS[split]])
    size = cfg.num_train if split == "train" else cfg.num_eval
    label = rng.integers(0, num_classes, size)
    motion = label % num_motions

    lengths = rng.integers(int(cfg.min_length_fraction * seq_len), seq_len + 1, size)
    steps = np.arange(seq_len)
    offsets = rng.uniform(0, seq_len, (size, 1, 1))
    t = (steps[None, :, None] + offsets) / seq_len  # [N, T, 1]
    sensor = amplitudes[motion][:, None] * np.sin(2 * np.pi * frequencies[motion][:, None] * t
                                                  + phases[motion][:, None])  # [N, T, C]
    sensor += cfg.noise * rng.normal(size=sensor.shape)
    sensor_mask = steps[None] < lengths[:, None]
    sensor = np.where(sensor_mask[..., None], sensor, 0.0).astype(np.float32)

    video = video_prototypes[label // 2] + cfg.noise * rng.normal(size=(size, video_dim))
    video[:, massive_dims] = 300.0 + 50.0 * rng.normal(size=(size, _NUM_MASSIVE_DIMS))

    arrays = batch_lib.validate_arrays(
        {batch_lib.SENSOR: sensor, batch_lib.SENSOR_MASK: sensor_mask, batch_lib.LABEL: label,
         batch_lib.VIDEO: video.astype(np.float32)}, origin=f"synthetic {split} split")
    description = json.dumps({"generator": "harjax.data.synthetic", "seed": seed, "split": split,
                              **cfg.to_dict()}, sort_keys=True)
    return batch_lib.ArrayData(
        arrays=arrays, num_classes=num_classes, class_names=tuple(f"class_{i:02d}" for i in range(num_classes)),
        origin=f"synthetic {split} split", fingerprint=hashlib.sha256(description.encode()).hexdigest()[:16])
