"""A light 1D CNN that turns wearable streams [B, T, C] into the sequence S = s_1..s_n [B, n, d_s].

Each block is conv -> LayerNorm over channels -> tanh-GELU, in two implementations with the same parameters
(one ConvBlock_i scope: kernel, conv_bias, scale, bias), so checkpoints move freely between them:
- 'autodiff': the plain composition, differentiated by JAX: the reference.
- 'hand_written': `conv_norm_gelu`, whose backward is written out. Profiling the train step on a 2-core CPU
  showed the encoder taking most of the step, and in it XLA's own gradient of this block transposing the
  activations to [C, T, B] for the kernel gradient while recomputing LayerNorm and GELU in that transposed order.
  The backward below keeps the natural layout: LayerNorm and GELU in closed form, the kernel gradient as one
  product per tap over all (batch, step) rows (157 -> 132 ms per step there; benchmarks/RESULTS.md).
config.model.encoder_backward chooses; 'auto' takes the hand-written one on CPU, where it was measured faster, and
autodiff elsewhere until a measurement (benchmarks/accelerator.sh) says otherwise. tests/unit/test_models.py checks
values and gradients of the two against each other. Checkpoints written before ConvBlock existed (Conv_i /
LayerNorm_i) do not restore.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from harjax import errors

_LAYER_NORM_EPS = 1e-6  # flax.linen.LayerNorm's
BACKWARDS = ("auto", "hand_written", "autodiff")


def conv1d(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """x [B, T, C], kernel [k, C, F] -> [B, ceil(T / stride), F]; output i is centred on input i * stride.

    (Asymmetric 'SAME' padding would shift the window by one step for some T.)
    """
    size = kernel.shape[0]
    return jax.lax.conv_general_dilated(
        x, kernel, (stride,), [((size - 1) // 2, size // 2)], dimension_numbers=("NWC", "WIO", "NWC")
    )


def _column_sum(x: jax.Array) -> jax.Array:
    return x.reshape(-1, x.shape[-1]).sum(axis=0)  # [..., F] -> [F]


def _normalized(x, kernel, conv_bias, stride, dtype):
    """Float32 LayerNorm statistics of the conv output: (normalized, 1 / std), both [B, n, F] / [B, n, 1]."""
    z = conv1d(x.astype(dtype), kernel.astype(dtype), stride).astype(jnp.float32) + conv_bias
    centred = z - z.mean(axis=-1, keepdims=True)
    inv_std = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + _LAYER_NORM_EPS)
    return centred * inv_std, inv_std


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def conv_norm_gelu(
    x: jax.Array, kernel: jax.Array, conv_bias: jax.Array, scale: jax.Array, bias: jax.Array, stride: int, dtype: Any
) -> jax.Array:
    """gelu(LayerNorm(conv1d(x, kernel) + conv_bias) * scale + bias) in `dtype`; statistics in float32."""
    return _forward(x, kernel, conv_bias, scale, bias, stride, dtype)[0]


def _forward(x, kernel, conv_bias, scale, bias, stride, dtype):
    normalized, inv_std = _normalized(x, kernel, conv_bias, stride, dtype)
    return nn.gelu(normalized * scale + bias).astype(dtype), (x, kernel, scale, bias, normalized, inv_std)


def _kernel_gradient(x: jax.Array, d_out: jax.Array, kernel_size: int, stride: int) -> jax.Array:
    """dL/dkernel [k, C, F]: for each tap i, the inputs it reads (x shifted by i, strided) times d_out."""
    steps = d_out.shape[1]
    padded = jnp.pad(x, ((0, 0), ((kernel_size - 1) // 2, kernel_size // 2), (0, 0)))
    d_rows = d_out.reshape(-1, d_out.shape[-1])  # [B * n, F]
    taps = [
        jax.lax.slice_in_dim(padded, i, i + stride * (steps - 1) + 1, stride, axis=1).reshape(-1, x.shape[-1])
        for i in range(kernel_size)
    ]  # each [B * n, C]
    return jnp.stack([jnp.dot(tap.T, d_rows, preferred_element_type=jnp.float32) for tap in taps])


def _backward(stride, dtype, residuals, grad):
    x, kernel, scale, bias, normalized, inv_std = residuals
    d_pre = jax.vjp(nn.gelu, normalized * scale + bias)[1](grad.astype(jnp.float32))[0]
    d_normalized = d_pre * scale
    d_z = inv_std * (
        d_normalized
        - d_normalized.mean(axis=-1, keepdims=True)
        - normalized * jnp.mean(d_normalized * normalized, axis=-1, keepdims=True)
    )
    d_conv = d_z.astype(dtype)
    x_compute = x.astype(dtype)
    d_x = jax.vjp(lambda inputs: conv1d(inputs, kernel.astype(dtype), stride), x_compute)[1](d_conv)[0]
    d_kernel = _kernel_gradient(x_compute, d_conv, kernel.shape[0], stride)
    return (
        d_x.astype(x.dtype),
        d_kernel.astype(kernel.dtype),
        _column_sum(d_z),
        _column_sum(d_pre * normalized),
        _column_sum(d_pre),
    )


conv_norm_gelu.defvjp(_forward, _backward)


def plain_conv_norm_gelu(
    x: jax.Array, kernel: jax.Array, conv_bias: jax.Array, scale: jax.Array, bias: jax.Array, stride: int, dtype: Any
) -> jax.Array:
    """The same function as conv_norm_gelu, left to JAX's autodiff."""
    return _forward(x, kernel, conv_bias, scale, bias, stride, dtype)[0]


def hand_written_backward(setting: str, platform: str) -> bool:
    """config.model.encoder_backward on `platform` (jax.default_backend()): whether to use conv_norm_gelu."""
    if setting not in BACKWARDS:
        raise errors.ConfigError(f"config.model.encoder_backward must be one of {BACKWARDS}, got {setting!r}")
    return setting == "hand_written" or (setting == "auto" and platform == "cpu")


class ConvBlock(nn.Module):
    """One encoder block as a module: the parameters of conv_norm_gelu, with or without its hand-written backward."""

    features: int
    kernel_size: int
    stride: int
    dtype: Any = jnp.float32
    hand_written: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel_size, x.shape[-1], self.features))
        conv_bias = self.param("conv_bias", nn.initializers.zeros, (self.features,))
        scale = self.param("scale", nn.initializers.ones, (self.features,))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        block = conv_norm_gelu if self.hand_written else plain_conv_norm_gelu
        return block(x, kernel, conv_bias, scale, bias, self.stride, self.dtype)


class SensorEncoder(nn.Module):
    """ConvBlocks; strided blocks downsample the sequence and its mask together.

    Activations on padded steps are zeroed before every convolution, so padding never changes a valid output:
    a sequence encodes the same whatever it is padded to.
    """

    channels: Sequence[int]
    strides: Sequence[int]
    kernel_size: int
    dtype: Any = jnp.float32
    hand_written_backward: bool = True

    @nn.compact
    def __call__(self, sensor: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """sensor [B, T, C], mask [B, T] -> S [B, n, d_s], mask [B, n] with n = T / prod(strides)."""
        x = sensor
        for features, stride in zip(self.channels, self.strides, strict=True):
            x = x * mask[..., None].astype(x.dtype)
            x = ConvBlock(features, self.kernel_size, stride, self.dtype, self.hand_written_backward)(x)
            mask = mask[:, ::stride]  # [B, ceil(T / stride)], the same length as x
        return x * mask[..., None].astype(x.dtype), mask
