"""Ensembles of N members in one program: a leading member axis on every parameter, one vmapped step.

Small real datasets reward averaging several networks (InceptionTime's own recipe is an ensemble of 5), and on an
accelerator N small models batched together should cost about one (not yet measured: benchmarks/accelerator.sh).
config.model.ensemble_size = N trains N copies of the model side by side: the train step updates every member on
the same batch (harjax/training/step.py; vmapped or one after another, ENSEMBLE_STEPS), so parameters, optimizer
state and the dropout and augmentation keys carry a leading member axis [N, ...]. Member m starts from
fold_in(key(seed), m) and is the model trained alone from that key, to float rounding
(tests/integration/test_ensemble.py).
N = 1 is the plain model: no member axis and key(seed), so checkpoints and bundles written before ensembles
existed restore unchanged.

The ensemble predicts the mean of its members' probabilities. Its logits are log(mean_m softmax(logits_m)), so
their softmax is that mean and every consumer of logits (metrics, losses, bundles, exports) needs no special
case; its contrastive embeddings are the mean of the members' unit embeddings (each member's projection space is
its own, so only directions are comparable), and its attention weights the members' mean (each segment's weights
still sum to 1). The members' own logits and weights ride along as `member_logits` and `member_alpha` for
per-member metrics and the attention file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import ml_collections

from harjax import errors
from harjax.models import har_model

T = TypeVar("T")
# config.model.ensemble_step: how the train step runs the members. 'vmap' batches them into one program of
# N-times-wider operations (meant for accelerators, where N small models should cost about one); 'sequential' runs
# the single model's update once per member inside the same jitted step. On CPU the vmapped convolutions become
# grouped ones, which XLA's CPU backend ran 15-25% slower than N plain ones (benchmarks/ensemble_step.py,
# RESULTS.md), so 'auto' is sequential there and vmap elsewhere. Both give every member the update it would get
# alone.
ENSEMBLE_STEPS = ("auto", "vmap", "sequential")


def ensemble_size(model_config: ml_collections.ConfigDict | dict[str, Any]) -> int:
    """config.model.ensemble_size, checked; 1 for configs and bundles written before ensembles existed."""
    size = model_config.get("ensemble_size", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise errors.ConfigError(f"config.model.ensemble_size must be a positive integer, got {size!r}")
    return size


def vectorised(setting: str, platform: str) -> bool:
    """config.model.ensemble_step on `platform` (jax.default_backend()): whether to vmap the members' updates."""
    if setting not in ENSEMBLE_STEPS:
        raise errors.ConfigError(f"config.model.ensemble_step must be one of {ENSEMBLE_STEPS}, got {setting!r}")
    return setting == "vmap" or (setting == "auto" and platform != "cpu")


def stacked(trees: list[T]) -> T:
    """Trees of the same structure stacked on a new leading member axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def member_key(seed: int, member: int | jax.Array, size: int) -> jax.Array:
    """The key member `member` of an ensemble of `size` starts from; the plain model's key when size is 1."""
    root = jax.random.key(seed)
    return root if size == 1 else jax.random.fold_in(root, member)


def init(init_fn: Callable[[jax.Array], T], seed: int, size: int) -> T:
    """init_fn(key) for one member, or stacked over `size` members' keys (a leading member axis on every leaf)."""
    if size == 1:
        return init_fn(member_key(seed, 0, 1))
    keys = jax.vmap(lambda member: member_key(seed, member, size))(jnp.arange(size))
    return jax.vmap(init_fn)(keys)


def member(tree: T, index: int) -> T:
    """Member `index` of a tree with a leading member axis (its parameters, its optimizer state, ...)."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def _mean_direction(embeddings: jax.Array) -> jax.Array:
    """[N, B, D] -> [B, D]: the mean of the members' unit vectors."""
    norm = jnp.linalg.norm(embeddings, axis=-1, keepdims=True)
    return jnp.mean(embeddings / jnp.maximum(norm, 1e-12), axis=0)


def _mean_probabilities(logits: jax.Array) -> jax.Array:
    """[N, B, ..., classes] members' logits -> [B, ..., classes]: the log of their mean probabilities."""
    log_probabilities = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jax.nn.logsumexp(log_probabilities, axis=0) - math.log(logits.shape[0])


def combine(members: har_model.ModelOutput) -> har_model.ModelOutput:
    """The ensemble's output from its members' ([N, B, ...] -> [B, ...]); the members' logits and weights kept."""
    embeddings = {
        name: None if value is None else _mean_direction(value)
        for name, value in (
            ("video_embedding", members.video_embedding),
            ("sensor_embedding", members.sensor_embedding),
        )
    }
    return har_model.ModelOutput(
        logits=_mean_probabilities(members.logits),
        **embeddings,
        logit_scale=None if members.logit_scale is None else jnp.mean(members.logit_scale),
        alpha=None if members.alpha is None else jnp.mean(members.alpha, axis=0),
        member_logits=jnp.moveaxis(members.logits, 0, 1),  # [B, N, classes]
        member_alpha=None if members.alpha is None else jnp.moveaxis(members.alpha, 0, 1),  # [B, N, K, n]
        family_logits=None if members.family_logits is None else _mean_probabilities(members.family_logits),
    )


def apply(
    apply_fn: Callable[..., har_model.ModelOutput], variables: Any, batch: Any, size: int, **kwargs: Any
) -> har_model.ModelOutput:
    """The ensemble's output on a batch: apply_fn(variables, batch) itself when size is 1, else its members' combined.

    With size > 1 every leaf of `variables` has the leading member axis; the batch is shared. The members run one
    after another in one program, not vmapped: the ONNX exporter converts Flax layers by rules of its own that
    have no batching rule, and evaluation, serving and every export share this one function.
    """
    if size == 1:
        return apply_fn(variables, batch, **kwargs)
    outputs = [apply_fn(member(variables, index), batch, **kwargs) for index in range(size)]
    return combine(stacked(outputs))  # [N, B, ...] each
