"""MiniRocket's random-convolution features as a sensor encoder: fixed kernels, biases fitted from the training split.

On small real motion sets a transform that trains in seconds (Dempster, Schmidt and Webb, KDD 2021) beats every
learned encoder on some sets (benchmarks/RESULTS.md); this is that transform, computed as aeon's MiniRocket computes
it (tests/unit/test_minirocket.py checks the features against aeon's on the same input and parameters):
- 84 kernels of length 9: every choice of three taps weighted 2, the other six -1;
- dilations spread exponentially from 1 to (length - 1) / 8 of the reference length (the training input's
  config.data.max_length), at most `max_dilations` of them, about num_features / 84 features per kernel shared
  among them;
- with several channels, each kernel and dilation sums the convolutions of a random subset of 1-9 channels, drawn
  from `seed` with aeon's rule;
- biases: quantiles (a low-discrepancy sequence) of one kernel and dilation's convolution output on a randomly
  chosen training example (`fit`); the features: PPV, the proportion of positions whose output exceeds a bias.
  Half of the kernel/dilation pairs count every position ('same' padding), the other half only those whose whole
  receptive field lies in the recording, alternating as MiniRocket does.

What an encoder of harjax needs on top:
- masks: a padded or gap step is zero in the convolution and never counted, so a recording encodes the same
  whatever it is padded to; with `pad_to_length` a recording is read as followed by zeros up to the reference
  length (`reading`), so its duration shows in every feature as it does in aeon's equal-length input, still
  whatever a batch pads it to;
- a sequence: the PPV over each window of `stride` steps (S [B, n, F], n = ceil(T / stride)), so the keyless
  attention and every fusion mode pool segments of windows as they pool the other encoders' steps; `stride` 0 is
  one window over the whole recording, the features aeon computes, which the ridge head reads (harjax/models/ridge.py);
- the fitted state (biases, and each feature's mean and std over the training windows, with which the features are
  standardised) is non-trained state, kept in the 'batch_stats' collection beside the video standardisation: it is
  fitted once before step 0 (har_model.fit_statistics), saved in checkpoints and bundles, and never refitted on
  resume;
- a learned linear projection of the standardised features to `dim`, the width the attention and the classifier
  read (a Dense on 10,000 features, what a linear classifier on them is); `dim` 0 gives the standardised features.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

KERNEL_LENGTH = 9
KERNELS = np.array(list(itertools.combinations(range(KERNEL_LENGTH), 3)), np.int32)  # [84, 3]: the taps weighted 2
NUM_KERNELS = len(KERNELS)
FITTED = ("biases", "mean", "std")  # the encoder's variables in the 'batch_stats' collection
# A feature constant over the training windows (std at most this) is centred and left unscaled, as scikit-learn's
# StandardScaler does: divided by a tiny std, a value it takes only at prediction (a longer recording reaching a
# dilation no training one did) would be a million standard deviations and decide the prediction alone.
STD_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the features are, fixed by the settings and the input's width: dilations, their features, channels."""

    dilations: tuple[int, ...]
    features_per_dilation: tuple[int, ...]  # per kernel: each dilation's share of the kernel's features
    channels: np.ndarray  # [len(dilations) * 84, C] bool: the channels each (dilation, kernel) pair sums

    @property
    def num_features(self) -> int:
        return NUM_KERNELS * sum(self.features_per_dilation)


def dilations(length: int, num_features: int, max_dilations: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(dilations, features per dilation) of a reference length: aeon's _fit_dilations."""
    per_kernel = max(num_features // NUM_KERNELS, 1)
    count = min(per_kernel, max_dilations)
    multiplier = per_kernel / count
    exponent = np.log2((length - 1) / (KERNEL_LENGTH - 1))
    values, counts = np.unique(np.logspace(0, exponent, count, base=2).astype(np.int32), return_counts=True)
    shares = (counts * multiplier).astype(np.int32)
    for index in range(per_kernel - shares.sum()):  # the remainder, one each from the smallest dilation up
        shares[index % len(shares)] += 1
    return tuple(int(value) for value in values), tuple(int(share) for share in shares)


def channel_combinations(num_channels: int, count: int, seed: int) -> np.ndarray:
    """[count, C] bool: the channels of each (dilation, kernel) pair, drawn as aeon draws them from `seed`."""
    rng = np.random.RandomState(seed)
    exponent = np.log2(min(num_channels, KERNEL_LENGTH) + 1)
    sizes = (2 ** rng.uniform(0, exponent, count)).astype(np.int32)
    chosen = np.zeros((count, num_channels), bool)
    for index, size in enumerate(sizes):
        chosen[index, rng.choice(num_channels, size, replace=False)] = True
    return chosen


def make_plan(length: int, num_channels: int, num_features: int, max_dilations: int, seed: int) -> Plan:
    """The features of a reference length and number of channels."""
    values, shares = dilations(length, num_features, max_dilations)
    return Plan(values, shares, channel_combinations(num_channels, len(values) * NUM_KERNELS, seed))


def quantiles(count: int) -> np.ndarray:
    """The low-discrepancy positions (multiples of the golden ratio, mod 1) the biases are read at."""
    return ((np.arange(1, count + 1) * ((np.sqrt(5) + 1) / 2)) % 1).astype(np.float32)


def convolutions(sensor: jax.Array, dilation: int, channels: np.ndarray) -> jax.Array:
    """sensor [B, T, C] (zero where not recorded), channels [84, C] -> every kernel's output [B, T, 84].

    Output t is sum_i w_i x[t + (i - 4) * dilation], zero beyond the ends, each kernel over its channels: one
    dilated convolution with fixed weights.
    """
    taps = np.full((KERNEL_LENGTH, NUM_KERNELS), -1.0, np.float32)
    taps[KERNELS, np.arange(NUM_KERNELS)[:, None]] = 2.0  # [9, 84]
    weights = taps[:, None, :] * channels.T[None].astype(np.float32)  # [9, C, 84]
    reach = (KERNEL_LENGTH // 2) * dilation
    return jax.lax.conv_general_dilated(
        sensor.astype(jnp.float32),
        jnp.asarray(weights),
        (1,),
        [(reach, reach)],
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"),
    )


def counted_positions(mask: jax.Array, dilation: int) -> jax.Array:
    """mask [B, T] -> [B, T]: the recorded steps whose outermost taps at `dilation` are recorded too.

    The positions a valid (unpadded) convolution outputs, where a recording has no gaps; half of the kernels
    count only these.
    """
    reach = (KERNEL_LENGTH // 2) * dilation
    padded = jnp.pad(mask, ((0, 0), (reach, reach)))
    return mask & padded[:, : mask.shape[1]] & padded[:, 2 * reach :]


def _window_sums(values: jax.Array, window: int) -> jax.Array:
    """[B, T, ...] -> [B, ceil(T / window), ...]: sums over consecutive windows of `window` steps."""
    steps = values.shape[1]
    windows = -(-steps // window)
    padding = [(0, 0), (0, windows * window - steps)] + [(0, 0)] * (values.ndim - 2)
    padded = jnp.pad(values, padding)
    return padded.reshape(values.shape[0], windows, window, *values.shape[2:]).sum(axis=2)


def features(sensor: jax.Array, mask: jax.Array, plan: Plan, biases: jax.Array, window: int) -> jax.Array:
    """PPV features of every window of `window` steps: sensor [B, T, C], mask [B, T] -> [B, ceil(T / window), F].

    Features in aeon's order: dilation, then kernel, then the kernel's biases at that dilation. A window without a
    counted position gives 0.
    """
    sensor = jnp.where(mask[..., None], sensor.astype(jnp.float32), 0.0)
    parity = np.arange(NUM_KERNELS) % 2
    parts, start = [], 0
    for index, (dilation, share) in enumerate(zip(plan.dilations, plan.features_per_dilation, strict=True)):
        rows = slice(index * NUM_KERNELS, (index + 1) * NUM_KERNELS)
        output = convolutions(sensor, dilation, plan.channels[rows])  # [B, T, 84]
        valid_only = jnp.asarray((parity + index) % 2 == 1)  # [84]
        # [B, T, 84] (logic rather than a select of booleans, which onnxruntime does not implement)
        counted = (valid_only & counted_positions(mask, dilation)[..., None]) | (~valid_only & mask[..., None])
        thresholds = biases[start : start + NUM_KERNELS * share].reshape(NUM_KERNELS, share)
        above = (output[..., None] > thresholds) & counted[..., None]  # [B, T, 84, share]
        positive = _window_sums(above.astype(jnp.float32), window)  # [B, n, 84, share]
        total = _window_sums(counted.astype(jnp.float32), window)[..., None]  # [B, n, 84, 1]
        parts.append((positive / jnp.maximum(total, 1.0)).reshape(*positive.shape[:2], -1))
        start += NUM_KERNELS * share
    return jnp.concatenate(parts, axis=-1)


def reading(sensor: jax.Array, mask: jax.Array, length: int, pad_to_length: bool) -> tuple[jax.Array, jax.Array]:
    """(sensor [B, T', C] zero where not recorded, the positions [B, T'] the features read).

    The positions are the recorded steps (T' = T), or with `pad_to_length` the recording and then zeros up to
    `length` (T' = max(T, length)).

    A variable-length recording read as followed by zeros up to the reference length shows its duration in every
    feature (as aeon's equal-length input shows it), while still depending on the recording alone, never on what a
    batch pads it to: what lies after its last recorded step reads as zeros, whatever is stored there. Gaps inside
    the recording stay unread.
    """
    sensor = jnp.where(mask[..., None], sensor, 0.0)
    if not pad_to_length:
        return sensor, mask
    missing = max(length - mask.shape[1], 0)  # an input shorter than the reference length is read to its end
    sensor, mask = jnp.pad(sensor, ((0, 0), (0, missing), (0, 0))), jnp.pad(mask, ((0, 0), (0, missing)))
    steps = jnp.arange(mask.shape[1])
    last = jnp.max(jnp.where(mask, steps, -1), axis=1, keepdims=True)  # [B, 1]
    return sensor, mask | ((steps > last) & (steps < length))


def fit_biases(sensor: np.ndarray, mask: np.ndarray, plan: Plan, seed: int) -> np.ndarray:
    """[F] biases: for each (dilation, kernel), quantiles of its output on one training example drawn by `seed`.

    sensor [N, T, C] and mask [N, T] are training examples as the model reads them; only an example's recorded
    positions count (aeon, on equal-length series without masks, reads every position).
    """
    rng = np.random.default_rng(seed)
    sensor = np.where(mask[..., None], sensor, 0.0).astype(np.float32)
    positions = quantiles(plan.num_features)
    biases, start = np.zeros(plan.num_features, np.float32), 0
    for index, (dilation, share) in enumerate(zip(plan.dilations, plan.features_per_dilation, strict=True)):
        chosen = rng.integers(len(sensor), size=NUM_KERNELS)  # one example per kernel
        rows = plan.channels[index * NUM_KERNELS : (index + 1) * NUM_KERNELS]
        output = np.asarray(convolutions(jnp.asarray(sensor[chosen]), dilation, rows))  # [84, T, 84]
        for kernel in range(NUM_KERNELS):
            recorded = output[kernel, mask[chosen[kernel]], kernel]
            span = slice(start + kernel * share, start + (kernel + 1) * share)
            biases[span] = np.quantile(recorded, positions[span]) if len(recorded) else 0.0
        start += NUM_KERNELS * share
    return biases


class MiniRocketEncoder(nn.Module):
    """sensor [B, T, C], mask [B, T] -> S [B, n, dim] and its mask: projected, standardised PPV per window.

    n = ceil(T / stride), or ceil(max(T, length) / stride) with `pad_to_length`; 1 with stride 0. With dim 0 S is
    the standardised features [B, n, F]. `length` is the reference length
    the dilations are chosen for (the training input's), fixed so that a bundle or an export at another window
    length keeps the fitted features.
    """

    length: int
    num_features: int = 10_000
    max_dilations: int = 32
    seed: int = 0
    stride: int = 8  # 0: one window, the whole recording
    dim: int = 128  # 0: the standardised features, not projected
    pad_to_length: bool = False  # read each recording as followed by zeros up to `length` (`reading`)
    dtype: Any = jnp.float32

    def plan(self, num_channels: int) -> Plan:
        return make_plan(self.length, num_channels, self.num_features, self.max_dilations, self.seed)

    def window(self, mask: Any) -> int:
        """Steps per feature window of an input read as `mask` [B, T']: `stride`, or all of them with stride 0."""
        return self.stride or mask.shape[1]

    @nn.compact
    def __call__(self, sensor: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        plan = self.plan(sensor.shape[-1])
        size = plan.num_features
        fitted = {
            name: self.variable("batch_stats", name, jnp.full, (size,), 1.0 if name == "std" else 0.0).value
            for name in FITTED
        }
        sensor, mask = reading(sensor, mask, self.length, self.pad_to_length)
        window = self.window(mask)
        ppv = features(sensor, mask, plan, jax.lax.stop_gradient(fitted["biases"]), window)  # [B, n, F]
        standardised = (ppv - fitted["mean"]) / fitted["std"]
        window_mask = _window_sums(mask.astype(jnp.int32), window) > 0  # [B, n]
        if not self.dim:
            return standardised * window_mask[..., None], window_mask
        projected = nn.Dense(self.dim, dtype=self.dtype, name="projection")(standardised.astype(self.dtype))
        return projected * window_mask[..., None].astype(projected.dtype), window_mask


def fit(
    sensor: np.ndarray, mask: np.ndarray, encoder: MiniRocketEncoder, seed: int, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """The encoder's fitted state from training examples: biases, then the standardisation of their window features.

    sensor [N, T, C] and mask [N, T] as the model reads them (standardised as in training, not augmented).
    """
    plan = encoder.plan(sensor.shape[-1])
    sensor, mask = map(
        np.asarray, reading(jnp.asarray(sensor), jnp.asarray(mask), encoder.length, encoder.pad_to_length)
    )
    biases = fit_biases(sensor, mask, plan, seed)
    total = np.zeros(plan.num_features, np.float64)
    total_sq = np.zeros(plan.num_features, np.float64)
    count = 0
    window = encoder.window(mask)
    compute = jax.jit(lambda x, m: features(x, m, plan, jnp.asarray(biases), window))
    for start in range(0, len(sensor), batch_size):
        part = slice(start, start + batch_size)
        windows = np.asarray(compute(sensor[part], mask[part]), np.float64)  # [b, n, F]
        recorded = np.asarray(_window_sums(jnp.asarray(mask[part], jnp.int32), window)) > 0  # [b, n]
        kept = windows[recorded]  # [windows, F]
        total, total_sq, count = total + kept.sum(0), total_sq + (kept**2).sum(0), count + len(kept)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0.0))
    std = np.where(std > STD_FLOOR, std, 1.0)  # constant in training: unscaled
    return {"biases": biases, "mean": mean.astype(np.float32), "std": std.astype(np.float32)}
