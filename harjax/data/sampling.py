"""Which examples make training batch s, and the random numbers they use: functions of (seed, s) alone.

Global batch s holds positions [s*B, (s+1)*B) of an endless stream of epochs, each epoch a fresh permutation of
the split; process p takes its consecutive B/P of them. Per-example random draws (MMAct's camera and crop) are a
hash of (seed, epoch, example), so they do not depend on the batch, the process, the worker or the data cache, and
a run resumed at step s sees exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from harjax import errors

CAMERA, CROP, OCCLUSION = 1, 2, 3  # salts: independent draws per purpose


def uniform(seed: int, salt: int, *keys: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per element of the broadcast keys (non-negative ints).

    Hashed with splitmix64: the same wherever and in whatever batch a key is seen.
    """
    with np.errstate(over="ignore"):
        x = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt) * np.uint64(0xD1B54A32D192ED03)
        for key in keys:
            x = _mix(x + np.asarray(key).astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9))
    return (_mix(x) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


@dataclasses.dataclass(frozen=True)
class TrainingOrder:
    """The examples of each training batch."""

    num_examples: int
    global_batch: int
    seed: int

    def __post_init__(self):
        if self.num_examples < self.global_batch:
            raise errors.ConfigError(
                f"{self.num_examples} training examples are fewer than one global batch of "
                f"{self.global_batch} (config.train.batch_size)"
            )

    def batch(self, step: int, process_index: int = 0, process_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(examples [b], their epochs [b]) of this process's rows of global batch `step` (b = B / processes)."""
        local = self.global_batch // process_count
        start = step * self.global_batch + process_index * local
        positions = np.arange(start, start + local)
        epochs = positions // self.num_examples
        examples = np.empty(local, np.int64)
        for epoch in np.unique(epochs):  # a batch straddles at most two epochs
            here = epochs == epoch
            examples[here] = _permutation(self.seed, int(epoch), self.num_examples)[positions[here] % self.num_examples]
        return examples, epochs
