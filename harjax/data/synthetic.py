"""Seeded, class-conditional HAR data generated in memory: the default source that runs anywhere.

Two tasks (config.data.synthetic.task), both built so that neither modality alone solves them:

'pairs' (the default): video embeddings identify the class up to a pair (classes 2k and 2k+1 share a
prototype), sensor sequences up to a shift by half the class count (c and c + ceil(n/2) share a motion pattern).
Unimodal models plateau near 50% and every fusion model approaches 100%: it checks that fusion works, but cannot
rank fusion variants.

'bursts' (what the experiment suite's :synthetic variant uses): each recording holds `num_contexts` short bursts
of motion at random, non-overlapping positions among weaker distractor motion and noise. Bursts differ in kind:
each kind adds its own offset to the channels while it lasts. The video embedding carries a context (which
kind of burst matters) and the class up to a pair {2k, 2k+1}. The burst of the context's kind shows the class's
motion; another burst shows the motion of the other class of the pair, and the rest random classes. So the video
alone leaves a pair open, the sensors alone leave open which burst to read, and a fusion model must use the video
to find the right burst among the others: the job the keyless attention is for. Noise keeps every variant short
of 100%.

Both tasks give the video a few huge, uninformative dimensions, as Video-LLaVA hidden states have.
"""

from __future__ import annotations

import hashlib
import json

import ml_collections
import numpy as np

from harjax import errors
from harjax.data import batch as batch_lib

TASKS = ("pairs", "bursts")
_SPLIT_SEEDS = {"train": 1, "eval": 2}
_NUM_MASSIVE_DIMS = 4  # LLM hidden states have a handful of dimensions hundreds of times larger than the rest
_DISTRACTOR_AMPLITUDE = 0.3  # background motion, relative to a burst


def generate(cfg: ml_collections.ConfigDict, split: str, seed: int) -> batch_lib.ArrayData:
    """One split; prototypes depend only on `seed`, so train and eval share them."""
    num_classes, seq_len, channels, video_dim = cfg.num_classes, cfg.seq_len, cfg.channels, cfg.video_dim
    if num_classes < 2 or seq_len < 8 or channels < 1 or video_dim <= _NUM_MASSIVE_DIMS:
        raise errors.ConfigError(
            f"config.data.synthetic needs num_classes >= 2, seq_len >= 8, channels >= 1 and "
            f"video_dim > {_NUM_MASSIVE_DIMS}; got {cfg.to_dict()}"
        )
    if cfg.task not in TASKS:
        raise errors.ConfigError(f"config.data.synthetic.task must be one of {TASKS}, got {cfg.task!r}")
    prototypes = np.random.default_rng(seed)
    rng = np.random.default_rng([seed, _SPLIT_SEEDS[split]])
    size = cfg.num_train if split == "train" else cfg.num_eval
    label = rng.integers(0, num_classes, size)
    lengths = rng.integers(int(cfg.min_length_fraction * seq_len), seq_len + 1, size)
    sensor_mask = np.arange(seq_len)[None] < lengths[:, None]
    make = _pairs if cfg.task == "pairs" else _bursts
    sensor, video = make(cfg, prototypes, rng, label, lengths)
    sensor = np.where(sensor_mask[..., None], sensor, 0.0).astype(np.float32)
    massive_dims = prototypes.choice(video_dim, _NUM_MASSIVE_DIMS, replace=False)
    video[:, massive_dims] = 300.0 + 50.0 * rng.normal(size=(size, _NUM_MASSIVE_DIMS))

    arrays = batch_lib.validate_arrays(
        {
            batch_lib.SENSOR: sensor,
            batch_lib.SENSOR_MASK: sensor_mask,
            batch_lib.LABEL: label,
            batch_lib.VIDEO: video.astype(np.float32),
        },
        origin=f"synthetic {split} split",
    )
    description = json.dumps(
        {"generator": "harjax.data.synthetic", "seed": seed, "split": split, **cfg.to_dict()}, sort_keys=True
    )
    return batch_lib.ArrayData(
        arrays=arrays,
        num_classes=num_classes,
        class_names=tuple(f"class_{i:02d}" for i in range(num_classes)),
        origin=f"synthetic {split} split",
        fingerprint=hashlib.sha256(description.encode()).hexdigest()[:16],
        video_source={"generator": "harjax.data.synthetic", "task": cfg.task},
    )


def _motion_library(
    prototypes: np.random.Generator, count: int, channels: int, cycles: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequencies, phases, amplitudes), each [count, channels]: one oscillation per motion.

    Each motion oscillates in every channel, at `cycles` (low, high) cycles per unit of time.
    """
    return (
        prototypes.uniform(*cycles, (count, channels)),
        prototypes.uniform(0, 2 * np.pi, (count, channels)),
        prototypes.uniform(0.5, 1.5, (count, channels)),
    )


def _oscillation(library: tuple[np.ndarray, ...], motion: np.ndarray, t: np.ndarray) -> np.ndarray:
    """motion [N], t [N, T] in cycles-per-unit time -> [N, T, C]."""
    frequencies, phases, amplitudes = (part[motion][:, None] for part in library)  # [N, 1, C]
    return amplitudes * np.sin(2 * np.pi * frequencies * t[..., None] + phases)


def _pairs(cfg, prototypes, rng, label, lengths) -> tuple[np.ndarray, np.ndarray]:
    num_motions = (cfg.num_classes + 1) // 2
    library = _motion_library(prototypes, num_motions, cfg.channels, cycles=(1.0, 6.0))  # per recording
    video_prototypes = prototypes.normal(size=(cfg.num_classes // 2 + 1, cfg.video_dim)).astype(np.float32)
    offsets = rng.uniform(0, cfg.seq_len, (len(label), 1))
    t = (np.arange(cfg.seq_len)[None] + offsets) / cfg.seq_len  # [N, T]
    sensor = _oscillation(library, label % num_motions, t)
    sensor += cfg.noise * rng.normal(size=sensor.shape)
    video = video_prototypes[label // 2] + cfg.noise * rng.normal(size=(len(label), cfg.video_dim))
    return sensor, video


def _bursts(cfg, prototypes, rng, label, lengths) -> tuple[np.ndarray, np.ndarray]:
    size, num_kinds, seq_len = len(label), cfg.num_contexts, cfg.seq_len
    if num_kinds < 2 or cfg.burst_steps * num_kinds > cfg.min_length_fraction * seq_len:
        raise errors.ConfigError(
            f"config.data.synthetic: 'bursts' needs num_contexts >= 2 and num_contexts * burst_steps "
            f"<= min_length_fraction * seq_len, so every burst fits the shortest recording; got "
            f"{num_kinds} x {cfg.burst_steps} and {cfg.min_length_fraction} x {seq_len}"
        )
    library = _motion_library(prototypes, cfg.num_classes, cfg.channels, cycles=(0.5, 2.5))  # per burst
    kind_offsets = prototypes.normal(size=(num_kinds, cfg.channels))
    kind_offsets *= cfg.kind_offset / np.linalg.norm(kind_offsets, axis=1, keepdims=True)
    context_prototypes = prototypes.normal(size=(num_kinds, cfg.video_dim))
    pair_prototypes = prototypes.normal(size=(cfg.num_classes // 2 + 1, cfg.video_dim))

    context = rng.integers(0, num_kinds, size)
    # Motion shown by each kind of burst [N, kinds]: the context's kind shows the class, another kind the other
    # class of its video pair (an odd class count leaves the last class without one), the rest random classes.
    motions = rng.integers(0, cfg.num_classes, (size, num_kinds))
    rows = np.arange(size)
    motions[rows, context] = label
    pair_kind = (context + rng.integers(1, num_kinds, size)) % num_kinds
    partner = label ^ 1
    motions[rows, pair_kind] = np.where(partner < cfg.num_classes, partner, motions[rows, pair_kind])

    steps = np.arange(seq_len)
    background = _oscillation(
        library,
        rng.integers(0, cfg.num_classes, size),
        (steps[None] + rng.uniform(0, seq_len, (size, 1))) / cfg.burst_steps,
    )
    sensor = _DISTRACTOR_AMPLITUDE * background
    # Bursts in random order, each at a random place inside its own share of the recording: never overlapping.
    slot_width = lengths // num_kinds  # [N]
    order = np.argsort(rng.random((size, num_kinds)), axis=1)  # order[n, k]: the slot of kind k
    window = np.hanning(cfg.burst_steps)
    for kind in range(num_kinds):
        start = order[:, kind] * slot_width + (rng.random(size) * (slot_width - cfg.burst_steps + 1)).astype(int)
        position = steps[None] - start[:, None]  # [N, T]
        inside = (position >= 0) & (position < cfg.burst_steps)
        envelope = np.where(inside, window[np.clip(position, 0, cfg.burst_steps - 1)], 0.0)[..., None]
        burst = _oscillation(library, motions[:, kind], position / cfg.burst_steps) + kind_offsets[kind]
        sensor = sensor + envelope * burst
    sensor += cfg.noise * rng.normal(size=sensor.shape)
    video = (
        context_prototypes[context] + pair_prototypes[label // 2] + cfg.noise * rng.normal(size=(size, cfg.video_dim))
    )
    return sensor, video
