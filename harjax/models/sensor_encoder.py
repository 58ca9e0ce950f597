"""A light 1D CNN that turns wearable streams [B, T, C] into the sequence S = s_1..s_n [B, n, d_s]."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class SensorEncoder(nn.Module):
    """Conv -> LayerNorm -> GELU blocks; strided blocks downsample the sequence and its mask together.

    Activations on padded steps are zeroed before every convolution, so padding never changes a valid output:
    a sequence encodes the same whatever it is padded to.
    """

    channels: Sequence[int]
    strides: Sequence[int]
    kernel_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, sensor: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """sensor [B, T, C], mask [B, T] -> S [B, n, d_s], mask [B, n] with n = T / prod(strides)."""
        x = sensor
        # Output i is centred on input i * stride whatever T is ('SAME' would shift by one for some T).
        padding = ((self.kernel_size - 1) // 2, self.kernel_size // 2)
        for features, stride in zip(self.channels, self.strides, strict=True):
            x = x * mask[..., None].astype(x.dtype)
            x = nn.Conv(features, (self.kernel_size,), strides=(stride,), padding=(padding,), dtype=self.dtype)(x)
            mask = mask[:, ::stride]  # [B, ceil(T / stride)], the same length as x
            x = nn.gelu(nn.LayerNorm(dtype=self.dtype)(x))
        return x * mask[..., None].astype(x.dtype), mask
