"""Cross-entropy, the symmetric InfoNCE whose negatives are the whole global batch (eq. 6-7), and distillation.

`info_nce` is written once, per device, against a named mesh axis: it runs under jax.shard_map (gradient taken
outside), under jax.pmap (gradient taken inside, then pmean), or on one device with axis_name=None.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, PartitionSpec as P

from harjax import errors

# Far below any real logit (|logit| <= max logit scale), yet finite so a fully masked row stays finite.
_MASKED_LOGIT = -1e9


def label_smoothing(loss: ml_collections.ConfigDict) -> float:
    """config.loss.label_smoothing, checked: the share of each training target spread evenly over the classes."""
    smoothing = loss.get("label_smoothing", 0.0)  # configs saved before it existed: none
    if not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
        raise errors.ConfigError(f"config.loss.label_smoothing must be in [0, 1), got {smoothing!r}")
    return float(smoothing)


def distillation_settings(config: ml_collections.ConfigDict) -> tuple[float, float] | None:
    """(temperature, weight) of config.distill, checked; None when it names no teacher (or predates it)."""
    distill = config.get("distill")
    if not distill or not distill.get("teacher"):
        return None
    temperature, weight = distill.get("temperature"), distill.get("weight")
    if not isinstance(temperature, (int, float)) or temperature <= 0:
        raise errors.ConfigError(f"config.distill.temperature must be > 0, got {temperature!r}")
    if not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise errors.ConfigError(f"config.distill.weight must be in [0, 1] (the teacher's share), got {weight!r}")
    return float(temperature), float(weight)


DISTILLATION_TARGETS = ("augmented", "example")


def distillation_targets(config: ml_collections.ConfigDict) -> str:
    """config.distill.targets, checked: the teacher's logits on each augmented batch, or once per example."""
    targets = config.distill.get("targets", "example")
    if targets not in DISTILLATION_TARGETS:
        raise errors.ConfigError(f"config.distill.targets must be one of {DISTILLATION_TARGETS}, got {targets!r}")
    return targets


def cross_entropy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None, smoothing: float = 0.0
) -> jax.Array:
    """Mean softmax cross-entropy in float32 over rows with non-zero weight, against smoothed targets if asked.

    With `smoothing` s the target puts 1 - s on the label and s / C on every class, so a model that has memorised a
    small training split keeps being pulled back from certainty instead of seeing a loss of zero.
    """
    logits = logits.astype(jnp.float32)
    if smoothing:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)  # [B, C]
        losses = optax.softmax_cross_entropy(logits, targets)
    else:
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if weights is None:
        return losses.mean()
    weights = weights.astype(jnp.float32)
    return (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def distillation(
    student_logits: jax.Array, teacher_logits: jax.Array, temperature: float, weights: jax.Array | None = None
) -> jax.Array:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), the mean over rows with non-zero weight, in float32.

    Hinton et al. (2015): the temperature softens both distributions so the teacher's ranking of the wrong classes
    (which activities it finds alike) carries signal, and T^2 keeps the gradient's scale that of the labels' CE.
    """
    log_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
    log_teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
    losses = temperature**2 * jnp.sum(jnp.exp(log_teacher) * (log_teacher - log_student), axis=-1)  # [B]
    if weights is None:
        return losses.mean()
    weights = weights.astype(jnp.float32)
    return (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def _l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def info_nce(
    video: jax.Array,
    sensor: jax.Array,
    logit_scale: jax.Array,
    weights: jax.Array | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    """This device's share of the symmetric InfoNCE; its mean over the axis is the global-batch loss.

    video, sensor [b, D] are this device's rows; each row's positive is its own pair, its negatives every other
    row of the global batch [B = b * devices, D]. Rows with weight 0 (evaluation padding) are neither anchors nor
    negatives. Logits are float32 whatever the compute dtype.
    """
    local = video.shape[0]
    weights = jnp.ones((local,), jnp.float32) if weights is None else weights.astype(jnp.float32)
    video, sensor = _l2_normalize(video), _l2_normalize(sensor)
    if axis_name is None:
        all_video, all_sensor, all_weights, offset, num_devices = video, sensor, weights, 0, 1
    else:
        all_video = jax.lax.all_gather(video, axis_name, tiled=True)  # [B, D] in mesh order
        all_sensor = jax.lax.all_gather(sensor, axis_name, tiled=True)
        all_weights = jax.lax.all_gather(weights, axis_name, tiled=True)
        offset = jax.lax.axis_index(axis_name) * local  # this device's rows sit here in the gathered batch
        num_devices = jax.lax.axis_size(axis_name)
    labels = offset + jnp.arange(local)
    negatives = all_weights[None, :] > 0

    def directional(anchors: jax.Array, candidates: jax.Array) -> jax.Array:
        logits = logit_scale.astype(jnp.float32) * anchors @ candidates.T  # [b, B]
        logits = jnp.where(negatives, logits, _MASKED_LOGIT)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    per_row = 0.5 * (directional(video, all_sensor) + directional(sensor, all_video))  # [b]
    per_row = jnp.where(weights > 0, per_row, 0.0)  # a padded anchor has no positive: keep its huge loss out
    total_weight = weights.sum() if axis_name is None else jax.lax.psum(weights.sum(), axis_name)
    return num_devices * (per_row * weights).sum() / jnp.maximum(total_weight, 1.0)


def global_info_nce(
    mesh: Mesh, axis_name: str, video: jax.Array, sensor: jax.Array, logit_scale: jax.Array, weights: jax.Array
) -> jax.Array:
    """InfoNCE over the global batch from arrays sharded on `axis_name`, for use inside jit.

    Each device gathers only the normalised embeddings, not the other devices' activations; differentiate the
    result directly (replicated parameters get their gradients summed by the all_gather's transpose).
    """
    per_device = jax.shard_map(
        lambda v, s, scale, w: jax.lax.pmean(info_nce(v, s, scale, w, axis_name), axis_name),
        mesh=mesh,
        in_specs=(P(axis_name), P(axis_name), P(), P(axis_name)),
        out_specs=P(),
    )
    return per_device(video, sensor, logit_scale, weights)
