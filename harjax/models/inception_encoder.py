"""An InceptionTime-style sensor encoder: multi-scale blocks whose receptive field spans whole motions.

The paper's light CNN (sensor_encoder.py) sees 9-17 input steps per output step; a gesture or an exercise repetition
spans hundreds. Each block here (Ismail Fawaz et al., 2020, "InceptionTime") is a bottleneck 1x1 convolution, then
convolutions of several lengths (9, 19, 39 by default) and a max-pool branch side by side, their outputs
concatenated, normalised (`norm`: 'layer', over each step's channels as the CNN's blocks; or 'batch',
InceptionTime's, over the batch's recorded steps only, with running averages for inference) and passed through GELU;
every `residual_every` blocks a 1x1 shortcut is added. Six blocks see 229 steps. The interface is the CNN's: sensor
[B, T, C] and mask [B, T] in, S [B, n, d_s] and its mask out, n = ceil(T / stride) (the first block's stride), d_s =
4 * filters; padded steps are zeroed before every convolution and the pool, so a sequence encodes the same whatever
it is padded to. Autodiff differentiates it: the hand-written backward of the CNN's blocks was measured for those
blocks only (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from harjax.models import sensor_encoder

NORMS = ("layer", "batch")


def _masked(x: jax.Array, mask: jax.Array) -> jax.Array:
    return x * mask[..., None].astype(x.dtype)


def normalise(x: jax.Array, mask: jax.Array, norm: str, train: bool, dtype: Any, name: str) -> jax.Array:
    """x [B, n, F] normalised per step over its channels ('layer') or per channel over the recorded steps ('batch').

    A LayerNorm keeps no batch state, but it rescales every step to unit variance, so a quiet stretch of a
    one-channel recording looks as loud as a motion; a BatchNorm keeps each step's loudness, and its batch
    statistics regularise small batches (InceptionTime's choice). Its statistics skip padding, so a recording
    encodes the same whatever it is padded to.
    """
    if norm == "layer":
        return nn.LayerNorm(dtype=dtype, name=name)(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, name=name)(x, mask=mask[..., None])


def max_pool3(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Max over each step and its two neighbours, recorded steps only: x [B, T, F] -> [B, T, F].

    Three shifted copies rather than reduce_window, which every exporter (StableHLO, ONNX) expresses alike.
    """
    low = jnp.finfo(x.dtype).min
    held = jnp.where(mask[..., None], x, low)
    padded = jnp.pad(held, ((0, 0), (1, 1), (0, 0)), constant_values=low)
    pooled = jnp.maximum(jnp.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    return _masked(pooled, mask)


class InceptionBlock(nn.Module):
    filters: int
    kernel_sizes: Sequence[int]
    bottleneck: int
    stride: int = 1
    norm: str = "layer"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        """x [B, T, C], mask [B, T] -> [B, ceil(T / stride), 4 * filters] and its mask."""
        inputs = _masked(x, mask)
        reduced = inputs
        if x.shape[-1] > 1 and self.bottleneck:
            reduced = _masked(self._conv(inputs, self.bottleneck, 1, 1, "bottleneck"), mask)
        branches = [self._conv(reduced, self.filters, size, self.stride, f"conv_{size}") for size in self.kernel_sizes]
        branches.append(self._conv(max_pool3(inputs, mask), self.filters, 1, self.stride, "pool_conv"))
        out_mask = mask[:, :: self.stride]  # [B, ceil(T / stride)], the length every branch has
        y = jnp.concatenate(branches, axis=-1)  # [B, n, (len(kernel_sizes) + 1) * filters]
        y = normalise(y, out_mask, self.norm, train, self.dtype, "norm")
        return _masked(nn.gelu(y), out_mask), out_mask

    def _conv(self, x: jax.Array, features: int, size: int, stride: int, name: str) -> jax.Array:
        kernel = self.param(name, nn.initializers.lecun_normal(), (size, x.shape[-1], features))
        return sensor_encoder.conv1d(x.astype(self.dtype), kernel.astype(self.dtype), stride)


class InceptionEncoder(nn.Module):
    """`depth` InceptionBlocks with a residual 1x1 shortcut every `residual_every` blocks."""

    depth: int = 6
    filters: int = 32
    kernel_sizes: Sequence[int] = (9, 19, 39)
    bottleneck: int = 32
    residual_every: int = 3
    stride: int = 1
    norm: str = "layer"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, sensor: jax.Array, mask: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """sensor [B, T, C], mask [B, T] -> S [B, n, d_s], mask [B, n] with n = ceil(T / stride)."""
        x, residual, residual_mask = sensor.astype(self.dtype), sensor.astype(self.dtype), mask
        for index in range(self.depth):
            x, mask = InceptionBlock(
                self.filters,
                tuple(self.kernel_sizes),
                self.bottleneck,
                self.stride if index == 0 else 1,
                self.norm,
                self.dtype,
                name=f"InceptionBlock_{index}",
            )(x, mask, train)
            if self.residual_every and (index + 1) % self.residual_every == 0:
                stride = self.stride if index + 1 == self.residual_every else 1  # the shortcut skips the stride too
                kernel = self.param(
                    f"shortcut_{index}", nn.initializers.lecun_normal(), (1, residual.shape[-1], x.shape[-1])
                )
                shortcut = sensor_encoder.conv1d(_masked(residual, residual_mask), kernel.astype(self.dtype), stride)
                shortcut = normalise(shortcut, mask, self.norm, train, self.dtype, f"shortcut_norm_{index}")
                x = _masked(nn.gelu(x + shortcut), mask)
                residual, residual_mask = x, mask
        return x, mask
