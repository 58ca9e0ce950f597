"""The train and eval steps: pure functions of (state, batch), each jitted once over the device mesh."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util
from flax.training import train_state
from jax.sharding import Mesh

from harjax.data import batch as batch_lib
from harjax.models import ensemble, har_model
from harjax.training import augment, losses, parallel


class TrainState(train_state.TrainState):
    batch_stats: Any  # running statistics of the video standardisation
    dropout_key: jax.Array
    nonfinite_steps: jax.Array  # updates skipped because the loss or a gradient was NaN/Inf


def learning_rate_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup, then cosine decay; it counts applied updates, so skipped steps do not advance it."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=train_config.learning_rate,
        warmup_steps=train_config.warmup_steps,
        decay_steps=max(train_config.num_steps, train_config.warmup_steps + 1),
        end_value=train_config.learning_rate * train_config.final_learning_rate_fraction,
    )


def _cap_logit_scale(max_logit_scale: float) -> optax.GradientTransformation:
    """Keeps log(1/tau) at or below log(max) after every update, as CLIP clamps it.

    A clamp inside the forward pass would have zero gradient above the cap and freeze the temperature there.
    """
    cap = math.log(max_logit_scale)

    def update(updates, state, params):
        return jax.tree.map(lambda u, p: jnp.minimum(u, cap - p), updates, params), state

    transform = optax.GradientTransformation(lambda params: optax.EmptyState(), update)
    return optax.masked(
        transform,
        lambda params: traverse_util.path_aware_map(lambda path, _: path[-1] == har_model.LOGIT_SCALE, params),
    )


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW; weight decay on kernels and embeddings (ndim >= 2) only."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(config.train.grad_clip_norm),
        optax.inject_hyperparams(optax.adamw)(
            learning_rate=schedule, weight_decay=config.train.weight_decay, mask=decay_mask
        ),
        _cap_logit_scale(config.loss.max_logit_scale),
    )


def _applied_learning_rate(opt_state: optax.OptState) -> jax.Array:
    """The learning rate the optimizer used for its last update, read from its own state."""
    return optax.tree_utils.tree_get(
        opt_state, "learning_rate", filtering=lambda path, value: isinstance(value, jax.Array)
    )


def member_train_state(
    model: nn.Module, tx: optax.GradientTransformation, example_batch: dict[str, jax.Array], key: jax.Array
) -> TrainState:
    """One model's initial state from `key` (its parameters' and its dropout and augmentation keys' root)."""
    init_key, dropout_key = jax.random.split(key)
    variables = model.init(init_key, example_batch, train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables.get("params", {}),  # none under a fitted head (config.model.head='ridge')
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
        dropout_key=dropout_key,
        nonfinite_steps=jnp.zeros((), jnp.int32),
    )


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    example_batch: dict[str, jax.Array],
    seed: int,
    ensemble_size: int = 1,
) -> TrainState:
    """Initial state from a batch's shapes; jit it with replicated out_shardings to place it on the mesh.

    With ensemble_size N > 1 every field has a leading member axis and member m starts from its own key
    (harjax/models/ensemble.py).
    """
    return ensemble.init(functools.partial(member_train_state, model, tx, example_batch), seed, ensemble_size)


def _objective(
    output: har_model.ModelOutput,
    batch: dict[str, jax.Array],
    weights: jax.Array,
    contrastive_weight: float,
    mesh: Mesh,
    label_smoothing: float = 0.0,
    distillation: tuple[float, float] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L = CE + lambda * InfoNCE over the global batch, with its parts for logging.

    Training may smooth the CE's targets (config.loss.label_smoothing) and, given `distillation` (temperature T,
    weight w: config.distill) and a batch carrying the teacher's logits, replaces the CE by
    (1 - w) * CE + w * T^2 * KL(teacher || student); evaluation does neither, so validation losses compare across
    recipes.
    """
    cross_entropy = losses.cross_entropy(output.logits, batch[batch_lib.LABEL], weights, label_smoothing)
    parts = {"cross_entropy": cross_entropy}
    loss = cross_entropy
    if distillation is not None and batch_lib.TEACHER_LOGITS in batch:
        temperature, weight = distillation
        distilled = losses.distillation(output.logits, batch[batch_lib.TEACHER_LOGITS], temperature, weights)
        loss = (1.0 - weight) * cross_entropy + weight * distilled
        parts["distillation"] = distilled
    if output.video_embedding is not None:
        contrastive = losses.global_info_nce(
            mesh, parallel.DATA_AXIS, output.video_embedding, output.sensor_embedding, output.logit_scale, weights
        )
        loss = loss + contrastive_weight * contrastive
        parts |= {"contrastive": contrastive, "temperature": 1.0 / output.logit_scale}
    return loss, parts


def train_step(
    state: TrainState,
    inputs: dict[str, jax.Array],
    resident: Any = None,
    teacher_variables: Any = None,
    *,
    contrastive_weight: float,
    mesh: Mesh,
    gather: Callable | None = None,
    augmentation: tuple[ml_collections.ConfigDict, Any] | None = None,
    label_smoothing: float = 0.0,
    distillation: tuple[float, float] | None = None,
    teacher: Callable | None = None,
) -> tuple[TrainState, dict]:
    """One update on a global batch; a non-finite loss or gradient leaves the state as it was (step aside).

    `inputs` is the batch, or with the device data cache a Selection that `gather` turns into the batch from the
    device-resident columns `resident`. `augmentation` (config.data.augment and the sensor streams) transforms
    the batch first (harjax/training/augment.py). `teacher(teacher_variables, batch)`, when given, gives the
    distillation targets: the teacher's logits on the batch as augmented, the view the student sees.
    metrics['finite'] says whether the update was applied, so the loop can keep skipped steps out of averages.
    """
    batch = inputs if gather is None else gather(resident, inputs, jnp)
    dropout_key = jax.random.fold_in(state.dropout_key, state.step)  # a function of the step: resumes exactly
    if augmentation is not None:
        batch = augment.augment(batch, jax.random.fold_in(dropout_key, 1), *augmentation)
    if teacher is not None:
        batch = batch | {batch_lib.TEACHER_LOGITS: jax.lax.stop_gradient(teacher(teacher_variables, batch))}
    weights = jnp.ones_like(batch[batch_lib.LABEL], jnp.float32)

    def loss_fn(params):
        output, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch,
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        loss, parts = _objective(output, batch, weights, contrastive_weight, mesh, label_smoothing, distillation)
        return loss, (parts, output.logits, updates.get("batch_stats", {}))

    (loss, (parts, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)  # any NaN/Inf gradient makes the norm non-finite
    updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
    state = kept.replace(step=state.step + 1, nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
    metrics = {
        "loss": loss,
        **parts,
        "grad_norm": grad_norm,
        "finite": finite,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch[batch_lib.LABEL]),
        "learning_rate": _applied_learning_rate(updated.opt_state),
    }
    return state, metrics


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    contrastive_weight: float,
    mesh: Mesh,
    ensemble_size: int = 1,
) -> dict[str, jax.Array]:
    """Per-example logits, labels and contrastive embeddings, and the batch's losses summed over valid rows.

    An ensemble is scored as one model (its mean probabilities, harjax/models/ensemble.py), its members' logits
    added as 'member_logits' [B, N, classes] (and a ridge's and the trained part's beside it as 'family_logits'
    [B, 2, classes]). The rows are scored on the host (accuracy, F1, retrieval).
    """
    weights = batch[batch_lib.VALID].astype(jnp.float32)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    output = ensemble.apply(state.apply_fn, variables, batch, ensemble_size, train=False)
    loss, parts = _objective(output, batch, weights, contrastive_weight, mesh)
    count = weights.sum()
    sums = {name: value * count for name, value in {"loss": loss, **parts}.items() if name != "temperature"}
    rows = {
        name: batch[name]
        for name in (batch_lib.LABEL, batch_lib.VALID, batch_lib.TRIAL, batch_lib.INDEX)
        if name in batch
    }
    outputs = {
        name: value
        for name, value in (
            ("video_embedding", output.video_embedding),
            ("sensor_embedding", output.sensor_embedding),
            ("member_logits", output.member_logits),
            ("family_logits", output.family_logits),
        )
        if value is not None
    }
    return {"logits": output.logits, **rows, **outputs, "count": count, "sums": sums}


def _over_members(step: Callable, size: int, vectorised: bool) -> Callable:
    """A train step of one member made the ensemble's: every member updated on the same batch.

    vmapped, or once per member in one program (models/ensemble.py, ENSEMBLE_STEPS). The metrics are the members'
    means; 'finite' holds when every member's update was applied.
    """

    def ensemble_step(
        state: TrainState, inputs: Any, resident: Any = None, teacher_variables: Any = None
    ) -> tuple[TrainState, dict]:
        if vectorised:
            state, metrics = jax.vmap(step, in_axes=(0, None, None, None))(state, inputs, resident, teacher_variables)
        else:
            state, metrics = ensemble.stacked(
                [step(ensemble.member(state, index), inputs, resident, teacher_variables) for index in range(size)]
            )
        return state, {name: value.all() if name == "finite" else value.mean() for name, value in metrics.items()}

    return ensemble_step


def jit_train_step(
    mesh: Mesh,
    contrastive_weight: float,
    gather: Callable | None = None,
    augmentation: tuple[ml_collections.ConfigDict, Any] | None = None,
    ensemble_size: int = 1,
    ensemble_step: str = "auto",
    label_smoothing: float = 0.0,
    distillation: tuple[float, float] | None = None,
    teacher: Callable | None = None,
) -> Callable:
    """The compiled train step, (state, inputs, resident, teacher_variables) -> (state, metrics).

    The old state's buffers are donated to the new one. With `gather` (the device data cache) the step builds its
    batch from resident columns; with `augmentation` it augments it; with ensemble_size > 1 it updates every
    member of the state's member axis (`ensemble_step`: config.model.ensemble_step); `label_smoothing` is
    config.loss.label_smoothing's, checked by losses.label_smoothing; `distillation` (temperature, weight) is
    config.distill's when a teacher's logits ride in the batches, and `teacher` computes them on each augmented
    batch (config.distill.targets='augmented').
    """
    step = functools.partial(
        train_step,
        contrastive_weight=contrastive_weight,
        mesh=mesh,
        gather=gather,
        augmentation=augmentation,
        label_smoothing=label_smoothing,
        distillation=distillation,
        teacher=teacher,
    )
    vectorised = ensemble.vectorised(ensemble_step, jax.default_backend())  # checks the setting for every run
    if ensemble_size > 1:
        step = _over_members(step, ensemble_size, vectorised)
    return jax.jit(
        step,
        donate_argnums=0,
        out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
    )


def jit_eval_step(mesh: Mesh, contrastive_weight: float, ensemble_size: int = 1) -> Callable:
    """Outputs are replicated, so every process sees the whole global batch's logits."""
    return jax.jit(
        functools.partial(eval_step, contrastive_weight=contrastive_weight, mesh=mesh, ensemble_size=ensemble_size),
        out_shardings=parallel.replicated(mesh),
    )
