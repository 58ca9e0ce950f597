"""Orbax checkpoints of the train state, the data iterator and the model signature; resume and preemption.

A checkpoint directory holds, per step: 'state' (the TrainState), 'data_iter' (this process's grain iterator
position) and 'signature' (what fixes the parameter shapes, checked before any array is read).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from typing import Any, Mapping

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from harjax.data import batch as batch_lib

BEST_METRIC = "eval/macro_f1"


class IncompatibleCheckpointError(ValueError):
    """The workdir's checkpoint was written by a model with other shapes."""


def model_signature(config: ml_collections.ConfigDict, data: batch_lib.ArrayData) -> dict[str, Any]:
    """Everything that decides the parameter tree, as plain JSON values."""
    signature = {"model": config.model.to_dict(), "num_classes": data.num_classes, "data_dims": data.dims,
                 "contrastive_heads": config.loss.contrastive_weight > 0,
                 "learnable_temperature": config.loss.learnable_temperature}
    return json.loads(json.dumps(signature))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Checkpointer:
    """Keeps the last `keep` checkpoints plus the best by eval macro-F1; saves are asynchronous."""

    def __init__(self, workdir: str, keep: int, signature: dict[str, Any]):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._signature = signature
        policy = ocp.checkpoint_managers.AnyPreservationPolicy([
            ocp.checkpoint_managers.LatestN(keep),
            ocp.checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], n=1,
                                          keep_checkpoints_without_metrics=False)])
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(preservation_policy=policy,
                                                                 enable_async_checkpointing=True))

    @property
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def check_compatible(self, step: int) -> None:
        saved = self.manager.restore(step, args=ocp.args.Composite(signature=ocp.args.JsonRestore()))["signature"]
        saved, current = _flatten(saved), _flatten(self._signature)
        differences = [f"{key}: checkpoint {saved.get(key)!r}, config {current.get(key)!r}"
                       for key in sorted(saved.keys() | current.keys()) if saved.get(key) != current.get(key)]
        if differences:
            raise IncompatibleCheckpointError(
                f"{self.directory} holds step {step} of a model that differs from this config:\n  "
                + "\n  ".join(differences) + "\nUse a new --workdir, or the config that wrote the checkpoint.")

    def restore(self, step: int, abstract_state: Any, data_iterator: grain.DatasetIterator | None = None) -> Any:
        """The state at `step` (placed as `abstract_state`'s shardings say); moves `data_iterator` in place."""
        self.check_compatible(step)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        logging.info("restored step %d from %s", step, self.directory)
        return restored["state"]

    def save(self, step: int, state: Any, data_iterator: grain.DatasetIterator,
             metrics: Mapping[str, float] | None = None) -> None:
        """Every process calls this; Orbax writes to a temporary name, so a killed save never replaces a good one."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data_iter=grain.checkpoint.CheckpointSave(data_iterator),
            signature=ocp.args.JsonSave(self._signature)), metrics=dict(metrics) if metrics else None, force=True)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class PreemptionWatcher:
    """Says when to save and stop because the job is being preempted (SIGTERM).

    Several processes must agree on the step, which jax.distributed's preemption sync gives through Orbax; a
    lone process catches SIGTERM itself.
    """

    def __init__(self, checkpointer: Checkpointer):
        self._checkpointer = checkpointer
        self._signalled = False
        if jax.process_count() == 1:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        logging.warning("SIGTERM received: saving a checkpoint at the end of this step, then stopping")
        self._signalled = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return self._checkpointer.manager.reached_preemption(step)
        return self._signalled

    def close(self) -> None:
        if jax.process_count() == 1:
            signal.signal(signal.SIGTERM, self._previous)
