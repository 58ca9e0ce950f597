"""Keyless cross-modal attention (eq. 1-2): the video embedding weighs sensor steps with no key projection.

    alpha_i = softmax_i(v^T W s_i),   a = sum_i alpha_i s_i

computed per temporal segment k over that segment's recorded steps only.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def segment_masks(mask: jax.Array, num_segments: int) -> jax.Array:
    """Splits each sequence's recorded steps into K contiguous, near-equal segments.

    mask [B, n] -> [B, K, n]. Segments follow each example's own length, so a short recording still gets
    K segments of its own content instead of K - 1 segments of padding. A sequence with fewer than K recorded
    steps shares them: segment k, which would be empty, holds the step at its place (recorded step
    floor(k * steps / K)), so every segment reads the recording, as the classical methods pad a short one and score
    it. Only a sequence with no recorded step leaves its segments empty (all False).
    """
    rank = jnp.cumsum(mask, axis=-1) - 1  # position of each step among the recorded ones
    length = jnp.maximum(mask.sum(axis=-1, keepdims=True), 1)  # [B, 1]
    segments = jnp.arange(num_segments)
    # Truncating division: equal to floor division on recorded steps (rank >= 0), the only ones the mask keeps,
    # and a single division op, which ONNX converters express for any batch size.
    segment = jax.lax.div(rank * num_segments, length)  # [B, n]
    assigned = mask[:, None, :] & (segment[:, None, :] == segments[None, :, None])  # [B, K, n]
    place = jax.lax.div(segments[None, :] * length, num_segments)  # [B, K]: the recorded step at segment k's place
    shared = mask[:, None, :] & (rank[:, None, :] == place[:, :, None])  # [B, K, n]
    return assigned | (shared & ~assigned.any(axis=-1, keepdims=True))


def masked_mean(sequence: jax.Array, masks: jax.Array) -> jax.Array:
    """sequence [B, n, d], masks [B, K, n] -> [B, K, d]; an empty mask gives zeros."""
    weights = masks.astype(sequence.dtype)
    total = jnp.einsum("bkn,bnd->bkd", weights, sequence)
    return total / jnp.maximum(weights.sum(axis=-1, keepdims=True), 1)


class KeylessAttention(nn.Module):
    """Returns the pooled segments a [B, K, d_s] and the weights alpha [B, K, n] for inspection.

    The bilinear score is divided by sqrt(d_s), the usual dot-product scaling, so logits start near unit
    variance whatever the sizes; W absorbs the constant, so the model family is the paper's.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array, sensor: jax.Array, masks: jax.Array) -> tuple[jax.Array, jax.Array]:
        """video [B, d_v], sensor [B, n, d_s], masks [B, K, n]."""
        w = self.param("w", nn.initializers.lecun_normal(), (video.shape[-1], sensor.shape[-1]))
        query = jnp.dot(video, w.astype(self.dtype))  # [B, d_s]: v^T W once per example, not W s_i per step
        scores = jnp.einsum("bd,bnd->bn", query, sensor).astype(jnp.float32) / jnp.sqrt(sensor.shape[-1])
        scores = jnp.where(masks, scores[:, None, :], jnp.finfo(jnp.float32).min)  # [B, K, n]
        alpha = jax.nn.softmax(scores, axis=-1) * masks  # an empty segment gets all-zero weights
        pooled = jnp.einsum("bkn,bnd->bkd", alpha.astype(sensor.dtype), sensor)
        return pooled, alpha
