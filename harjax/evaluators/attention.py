"""The keyless-attention weights of a few examples of distinct classes, for the report's attention figure.

Writes analysis/attention.npz: alpha [k, K, n] (each segment's weights over the encoder steps; an ensemble's are
its members' mean, and each member's own follow as member_alpha [k, N, K, n]), the examples' standardised
sensors, masks, labels, predictions, indices in the split and the class names; yields 'examples' (k).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np

from harjax import errors
from harjax.data import batch as batch_lib
from harjax.evaluators import common
from harjax.models import har_model

PREDICT_FN = "apply"  # the model on one batch: the weights are not among the eval step's outputs
FILE = "analysis/attention.npz"


def applies(config: ml_collections.ConfigDict) -> bool:
    """Only the fusion by keyless attention has weights to show."""
    return har_model.has_keyless_attention(config)


class Evaluator:
    """One example from each of `examples` classes spread over those present."""

    def __init__(self, apply_fn: Callable, context: common.Context, examples: int = 6):
        if examples < 1:
            raise errors.ConfigError(f"config.evals.{context.name}.examples must be >= 1, got {examples}")
        self._apply_fn = apply_fn
        self._context = context
        self._examples = examples

    def run(self, state, step: int) -> Iterator[tuple[str, float]]:
        data = self._context.data
        labels = data.labels
        classes = np.unique(labels)
        chosen = classes[np.linspace(0, len(classes) - 1, min(self._examples, len(classes))).round().astype(int)]
        indices = [int(np.flatnonzero(labels == label)[0]) for label in chosen]
        batch = batch_lib.examples(data, indices)
        output = jax.device_get(self._apply_fn(state, batch))
        buffer = io.BytesIO()
        np.savez(
            buffer,
            step=np.asarray(step),
            index=np.asarray(indices),
            alpha=output.alpha,
            **({} if output.member_alpha is None else {"member_alpha": output.member_alpha}),
            sensor=batch[batch_lib.SENSOR],
            sensor_mask=batch[batch_lib.SENSOR_MASK],
            label=batch[batch_lib.LABEL],
            prediction=output.logits.argmax(-1),
            class_names=np.asarray(data.class_names),
        )
        common.write_file(self._context.workdir, FILE, buffer.getvalue())
        yield "examples", len(indices)
