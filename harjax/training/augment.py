"""Training-time augmentation of a batch, inside the jitted train step (config.data.augment).

Each transformation draws its randomness from jax.random keyed by (seed, step) and, per example, by its row in the
global batch, so a resumed run is exact and the batches do not depend on workers, processes or the data cache
(the global batch of a step is the same for all of them, and threefry's bits do not depend on the sharding).
Evaluation never calls this. Masks are never changed and padding stays zero: every transformation acts on a
recording's recorded steps only, and time transformations resample within each recording's own length.

Sensors (standardised values):
  jitter            Gaussian noise with this std
  scale             each channel multiplied by a factor ~ N(1, scale)
  magnitude_warp    each channel multiplied by a smooth curve through `knots` values ~ N(1, magnitude_warp)
  time_warp         time resampled along a smooth monotone warp whose speed at `knots` points is ~ N(1, time_warp)
  crop              a random window of at least this fraction of the recording, stretched back to its length
                    (window slicing); 0 is off
  shift             the recording rotated by a random number of steps (cyclically, within its own length)
  stream_drop       each sensor stream (channel group, harjax.data.batch.sensor_streams) zeroed with this
                    probability, as a missing stream is stored (never all streams of an example)
Video embedding:
  video_noise       Gaussian noise with this many times each dimension's std over the batch
  video_drop        the embedding removed with this probability (the 'video removed' input of the robustness
                    evaluation and of predictions without video)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from harjax import errors
from harjax.data import batch as batch_lib

SENSOR_SETTINGS = ("jitter", "scale", "magnitude_warp", "time_warp", "crop", "shift", "stream_drop")
VIDEO_SETTINGS = ("video_noise", "video_drop")


def check(settings: ml_collections.ConfigDict) -> None:
    """Rejects augmentation settings out of range, naming the key."""
    for name in (*SENSOR_SETTINGS, *VIDEO_SETTINGS):
        if settings[name] < 0:
            raise errors.ConfigError(f"config.data.augment.{name} must be >= 0, got {settings[name]}")
    for name in ("crop", "stream_drop", "video_drop"):
        if settings[name] > 1:
            raise errors.ConfigError(f"config.data.augment.{name} must be at most 1, got {settings[name]}")
    if settings.knots < 2:
        raise errors.ConfigError(f"config.data.augment.knots must be >= 2, got {settings.knots}")


def enabled(settings: ml_collections.ConfigDict) -> bool:
    """Whether any augmentation is switched on."""
    return any(settings[name] for name in (*SENSOR_SETTINGS, *VIDEO_SETTINGS))


def _smooth(key: jax.Array, shape: tuple[int, ...], std: float, knots: int, position: jax.Array) -> jax.Array:
    """Smooth random curves: [B, T] + shape[2:], read at `position` [B, T] (0..1 along each recording).

    The curves pass through `knots` values ~ N(1, std) at evenly spaced points of each recording, linearly
    interpolated.
    """
    values = 1.0 + std * jax.random.normal(key, (shape[0], knots, *shape[1:]))  # [B, knots, ...]
    scaled = position * (knots - 1)  # [B, T]
    left = jnp.clip(jnp.floor(scaled).astype(jnp.int32), 0, knots - 2)
    weight = (scaled - left)[..., *([None] * len(shape[1:]))]
    take = jax.vmap(lambda v, i: v[i])
    return (1 - weight) * take(values, left) + weight * take(values, left + 1)


def _resample(x: jax.Array, source: jax.Array) -> jax.Array:
    """x [B, T, C] read at fractional steps `source` [B, T] by linear interpolation."""
    left = jnp.floor(source).astype(jnp.int32)
    weight = (source - left)[..., None]
    right = jnp.minimum(left + 1, x.shape[1] - 1)
    take = jax.vmap(lambda rows, index: rows[index])
    return (1 - weight) * take(x, left) + weight * take(x, right)


def augment(
    batch: dict[str, jax.Array], key: jax.Array, settings: ml_collections.ConfigDict, streams: Sequence[Sequence[int]]
) -> dict[str, jax.Array]:
    """The batch with every enabled transformation applied, in the order listed above.

    `streams` are the sensor channels of each stream.
    """
    keys = iter(jax.random.split(key, 16))
    sensor, mask = batch[batch_lib.SENSOR], batch[batch_lib.SENSOR_MASK]
    dtype = sensor.dtype
    x = sensor.astype(jnp.float32)
    recorded = mask[..., None].astype(jnp.float32)  # [B, T, 1]
    length = jnp.maximum(mask.sum(axis=1), 1).astype(jnp.float32)  # [B]
    step = jnp.arange(x.shape[1], dtype=jnp.float32)[None]  # [1, T]
    position = jnp.clip(step / jnp.maximum(length[:, None] - 1, 1), 0, 1)  # [B, T]: 0..1 along each recording
    batch_size, _, channels = x.shape
    if settings.jitter:
        x = x + settings.jitter * jax.random.normal(next(keys), x.shape)
    if settings.scale:
        x = x * (1 + settings.scale * jax.random.normal(next(keys), (batch_size, 1, channels)))
    if settings.magnitude_warp:
        x = x * _smooth(next(keys), (batch_size, channels), settings.magnitude_warp, settings.knots, position)
    if settings.time_warp:
        speed = jnp.maximum(_smooth(next(keys), (batch_size,), settings.time_warp, settings.knots, position), 0.1)
        warped = jnp.cumsum(speed * mask, axis=1) - speed  # [B, T]: monotone, 0 at the first step
        total = jnp.maximum(jnp.max(warped * mask, axis=1, keepdims=True), 1e-6)
        x = _resample(x, jnp.clip(warped / total, 0, 1) * (length[:, None] - 1))
    if settings.crop:
        kept = settings.crop + (1 - settings.crop) * jax.random.uniform(next(keys), (batch_size, 1))  # [B, 1]
        start = jax.random.uniform(next(keys), (batch_size, 1)) * (1 - kept)
        x = _resample(x, (start + kept * position) * (length[:, None] - 1))
    if settings.shift:
        offset = jnp.floor(jax.random.uniform(next(keys), (batch_size, 1)) * length[:, None])
        x = _resample(x, jnp.mod(step + offset, length[:, None]))
    if settings.stream_drop:
        dropped = jax.random.bernoulli(next(keys), settings.stream_drop, (batch_size, len(streams)))
        dropped = dropped & ~dropped.all(axis=1, keepdims=True)  # an example keeps at least one stream
        channel_drop = jnp.zeros((batch_size, channels), bool)
        for index, stream in enumerate(streams):
            channel_drop = channel_drop.at[:, jnp.asarray(stream)].set(dropped[:, index : index + 1])
        x = jnp.where(channel_drop[:, None, :], 0.0, x)
    out = dict(batch) | {batch_lib.SENSOR: (x * recorded).astype(dtype)}
    if batch_lib.VIDEO in batch and settings.video_noise:
        video = batch[batch_lib.VIDEO]
        spread = jnp.std(video, axis=0, keepdims=True)  # per dimension, over the batch
        out[batch_lib.VIDEO] = video + settings.video_noise * spread * jax.random.normal(next(keys), video.shape)
    if batch_lib.VIDEO in batch and settings.video_drop:
        present = ~jax.random.bernoulli(next(keys), settings.video_drop, (batch_size,))
        out[batch_lib.VIDEO_PRESENT] = present & batch.get(batch_lib.VIDEO_PRESENT, True)
    return out
