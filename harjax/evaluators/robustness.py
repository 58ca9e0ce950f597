"""Missing-modality and occlusion robustness: evaluation inputs corrupted on the host, the trained model unchanged.

Yields '<condition>/<score>' for each condition (clean, video_removed, <stream>_removed, occluded_<pct>pct) and the
classification scores (accuracy, macro_f1, and per trial where examples are views); writes analysis/robustness.json.

Each condition is a function of an evaluation batch (numpy, batch contract plus 'index'). "Removed" follows the
batch contract's convention (harjax/data/batch.py): the model sees the training mean, i.e. zeros after
standardisation, for a removed video embedding ('video_present' False) and for a removed sensor stream (its
channels zeroed, as MMAct stores a missing stream). Occlusion masks out one contiguous span covering a fraction of
each recording's recorded steps, placed by a hash of (seed, fraction, recording), so the span does not depend on
batch size or process count, and all camera views of an MMAct trial lose the same span.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence

import ml_collections
import numpy as np

from harjax import errors
from harjax.data import batch as batch_lib, sampling
from harjax.evaluators import classification, common
from harjax.models import har_model

Corruption = Callable[[batch_lib.Batch], batch_lib.Batch]
CLEAN = "clean"
FILE = "analysis/robustness.json"


def applies(config: ml_collections.ConfigDict) -> bool:
    """Every model can lose an input."""
    return True


def remove_video(batch: batch_lib.Batch) -> batch_lib.Batch:
    """The batch with every video removed."""
    return batch | {batch_lib.VIDEO_PRESENT: np.zeros(len(batch[batch_lib.LABEL]), bool)}


def remove_channels(batch: batch_lib.Batch, channels: Sequence[int]) -> batch_lib.Batch:
    """The batch with these sensor channels removed."""
    sensor = batch[batch_lib.SENSOR].copy()
    sensor[..., list(channels)] = 0.0
    return batch | {batch_lib.SENSOR: sensor}


def occlude(batch: batch_lib.Batch, fraction: float, seed: int) -> batch_lib.Batch:
    """Masks out a span of round(fraction * L) of each row's L recorded steps (at least one step stays)."""
    mask = batch[batch_lib.SENSOR_MASK]
    keys = batch[batch_lib.TRIAL] if batch_lib.TRIAL in batch else batch[batch_lib.INDEX]
    length = mask.sum(axis=1)  # [B]
    span = np.minimum(np.round(fraction * length).astype(int), np.maximum(length - 1, 0))
    draw = sampling.uniform(seed, sampling.OCCLUSION, round(fraction * 1e6), keys)
    start = np.floor(draw * (length - span + 1)).astype(int)
    rank = np.cumsum(mask, axis=1) - 1  # position of each step among the recorded ones  [B, T]
    hidden = mask & (rank >= start[:, None]) & (rank < (start + span)[:, None])
    return batch | {
        batch_lib.SENSOR_MASK: mask & ~hidden,
        batch_lib.SENSOR: np.where(hidden[..., None], 0.0, batch[batch_lib.SENSOR]).astype(np.float32),
    }


def conditions(
    uses_video: bool, uses_sensor: bool, channel_names: Sequence[str], fractions: Sequence[float], seed: int
) -> dict[str, Corruption | None]:
    """Condition name -> corruption (None for the clean inputs), for the modalities the model uses."""
    found: dict[str, Corruption | None] = {CLEAN: None}
    if uses_video:
        found["video_removed"] = remove_video
    if uses_sensor:
        for stream, channels in batch_lib.sensor_streams(tuple(channel_names)).items():
            found[f"{stream}_removed"] = lambda batch, channels=channels: remove_channels(batch, channels)
        for fraction in fractions:
            found[f"occluded_{round(fraction * 100)}pct"] = lambda batch, fraction=fraction: occlude(
                batch, fraction, seed
            )
    return found


class Evaluator:
    """Scores its split under every condition, with the trained model unchanged."""

    def __init__(
        self,
        predict_fn: common.PredictFn,
        context: common.Context,
        occlusion_fractions: Sequence[float] = (0.1, 0.25, 0.5),
    ):
        self._predict_fn = predict_fn
        self._context = context
        config = context.config
        if not all(0 < fraction < 1 for fraction in occlusion_fractions):
            raise errors.ConfigError(
                f"config.evals.{context.name}.occlusion_fractions must lie in (0, 1), got {tuple(occlusion_fractions)}"
            )
        self._conditions = conditions(
            har_model.uses_video(config),
            har_model.uses_sensor(config),
            context.data.channel_names,
            occlusion_fractions,
            config.seed,
        )

    def run(self, state, step: int) -> Iterator[tuple[str, float]]:
        results = {
            name: classification.scores(self._predict_fn(state, corrupt).rows, self._context.data.num_classes)[0]
            for name, corrupt in self._conditions.items()
        }
        common.write_file(
            self._context.workdir, FILE, json.dumps({"step": step, "conditions": results}, indent=1).encode()
        )
        for name, values in results.items():
            for metric, value in values.items():
                yield f"{name}/{metric}", value
