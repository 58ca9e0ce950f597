"""Orbax checkpoints of the train state and the loop's own state; resume and preemption.

A checkpoint holds, per step: 'state' (the TrainState), 'loop' (the open window of train metrics) and 'signature'
(parameter shapes and the model config, checked before any array is read, so a mismatch names its cause instead
of failing deep inside Orbax). The data position needs no entry: the training batches are a function of the step
(harjax/data/pipeline.py), so a resume may change the number of input workers or processes.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import traverse_util

BEST_METRIC = "eval/macro_f1"
_MAX_LISTED = 12


class IncompatibleCheckpointError(ValueError):
    """The workdir's checkpoint was written by a model with other parameter shapes."""


def model_signature(config: ml_collections.ConfigDict, abstract_state: Any) -> dict[str, Any]:
    """Parameter and statistics shapes (what must match to restore), and the model config (to explain a mismatch)."""
    arrays = traverse_util.flatten_dict(
        {"params": abstract_state.params, "batch_stats": abstract_state.batch_stats}, sep="/"
    )
    return json.loads(
        json.dumps(
            {
                "shapes": {path: [list(leaf.shape), str(leaf.dtype)] for path, leaf in arrays.items()},
                "model_config": config.model.to_dict(),
            }
        )
    )


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str) -> list[str]:
    return [
        f"{prefix}{key}: checkpoint {saved.get(key, 'absent')!r}, config {current.get(key, 'absent')!r}"
        for key in sorted(saved.keys() | current.keys())
        if saved.get(key) != current.get(key)
    ]


class Checkpointer:
    """Keeps the last `keep` checkpoints plus the best by `best_metric`; saves are asynchronous.

    `best_metric` is the macro-F1 of the split that selects the model.
    """

    def __init__(self, directory: str, keep: int, signature: dict[str, Any], best_metric: str = BEST_METRIC):
        self.directory = directory
        self._signature = signature
        score = lambda metrics: metrics[best_metric]  # noqa: E731
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [
                ocp.checkpoint_managers.LatestN(keep),
                ocp.checkpoint_managers.BestN(get_metric_fn=score, n=1, keep_checkpoints_without_metrics=False),
            ]
        )
        self.manager = ocp.CheckpointManager(  # best_fn: what best_step() ranks by (the policy only keeps)
            directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy, best_fn=score, best_mode="max", enable_async_checkpointing=True
            ),
        )

    @property
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    @property
    def best_step(self) -> int | None:
        """The saved step with the best selection metric (the run's model selection)."""
        return self.manager.best_step()

    def check_compatible(self, step: int) -> None:
        saved = self.manager.restore(step, args=ocp.args.Composite(signature=ocp.args.JsonRestore()))["signature"]
        shapes = _differences(saved["shapes"], self._signature["shapes"], "")
        if shapes:
            config = _differences(
                traverse_util.flatten_dict(saved["model_config"], sep="."),
                traverse_util.flatten_dict(self._signature["model_config"], sep="."),
                "model.",
            )
            listed = shapes[:_MAX_LISTED] + (
                [f"... and {len(shapes) - _MAX_LISTED} more"] if len(shapes) > _MAX_LISTED else []
            )
            raise IncompatibleCheckpointError(
                f"{self.directory} holds step {step} of a model with other parameter shapes.\n"
                f"Model config differences:\n  "
                + ("\n  ".join(config) or "none (the data's shapes differ)")
                + "\nParameters:\n  "
                + "\n  ".join(listed)
                + "\nUse a new --workdir, or the config and data that wrote the checkpoint."
            )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """(state, loop state) at `step`, placed as `abstract_state`'s shardings say."""
        self.check_compatible(step)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore())
        )
        logging.info("restored step %d from %s", step, self.directory)
        return restored["state"], restored["loop"]

    def save(
        self, step: int, state: Any, loop_state: Mapping[str, Any], metrics: Mapping[str, float] | None = None
    ) -> None:
        """Every process calls this; Orbax writes to a temporary name, so a killed save never replaces a good one."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                loop=ocp.args.JsonSave(dict(loop_state)),
                signature=ocp.args.JsonSave(self._signature),
            ),
            metrics=dict(metrics) if metrics else None,
            force=True,
        )

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
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm) if jax.process_count() == 1 else None

    def _on_sigterm(self, signum, frame) -> None:
        logging.warning("SIGTERM received: saving a checkpoint at the end of this step, then stopping")
        self._signalled = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return self._checkpointer.manager.reached_preemption(step)
        return self._signalled

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
