"""Orbax checkpoints of the train state and the loop's own state; resume and preemption.

A checkpoint holds, per step: 'state' (the TrainState), 'loop' (the open window of train metrics) and 'signature'
(parameter shapes and the model config, checked before any array is read, so a mismatch names its cause instead
of failing deep inside Orbax). The data position needs no entry: the training batches are a function of the step
(harjax/data/pipeline.py), so a resume may change the number of input workers or processes.

A checkpoint that cannot be read (a truncated array file, a missing metadata file) fails naming its step and the
file, and the earlier steps to continue from; `restore_latest(fallback=True)` continues from the latest intact one
and moves the damaged ones to checkpoints/damaged/<step>, never deleting them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import traverse_util
from orbax.checkpoint._src.metadata import array_metadata_store  # what Orbax's default jax.Array handler keeps

from harjax import errors

BEST_METRIC = "eval/macro_f1"
DAMAGED_DIR = "damaged"  # where unreadable checkpoints are moved, under the checkpoint directory
_MAX_LISTED = 6
# Files every step of ours has (Orbax's layout), JSON but the manifest: one missing or unparsable names the damage.
_EXPECTED_FILES = ("signature/metadata", "loop/metadata", "state/_METADATA", "state/manifest.ocdbt")


class IncompatibleCheckpointError(errors.UserError):
    """The workdir's checkpoint was written by a model with other parameter shapes."""


class DamagedCheckpointError(errors.UserError):
    """A checkpoint whose files cannot be read; the message names the step, the file and what to do."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclasses.dataclass(frozen=True)
class Fallback:
    """What restore_latest did with damaged checkpoints (recorded in runs.jsonl)."""

    damaged: tuple[int, ...]  # the steps moved aside, latest first
    restored: int | None  # the step restored instead (None: none was intact)

    def record(self) -> dict[str, Any]:
        return {"damaged_steps_moved_aside": list(self.damaged), "restored_step": self.restored}


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


def register_array_handler(replica_parallel: bool = False) -> None:
    """Sets how Orbax writes a replicated jax.Array: whole from one replica (harjax's way), or a slice from each.

    Replica-parallel saving (Orbax's default except on GPU) cuts every array into one slice per replica with an eager
    jax op, compiled once per shape and offset. harjax's train states are tens of MB, so the slices only cost: on 8
    CPU devices at configs/full.py's size (24.5 MB, 196 arrays) a process's first save took 6-7 s instead of 0.45 s
    and each later one 0.6-0.7 s instead of 0.3 s (benchmarks/RESULTS.md, "checkpoint_save.py", which passes True to
    measure Orbax's way). Orbax reads the handler from a process-wide registry, so this replaces its jax.Array handler
    there, with its default settings but this one.
    """
    ocp.type_handlers.register_type_handler(
        jax.Array,
        ocp.type_handlers.ArrayHandler(
            array_metadata_store=array_metadata_store.Store(), use_replica_parallel=replica_parallel
        ),
        override=True,
    )


class Checkpointer:
    """Keeps the last `keep` checkpoints plus the best by `best_metric`; saves are asynchronous.

    `best_metric` is the macro-F1 of the split that selects the model.
    """

    def __init__(self, directory: str, keep: int, signature: dict[str, Any], best_metric: str = BEST_METRIC):
        register_array_handler()
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
                [f"and {len(shapes) - _MAX_LISTED} more"] if len(shapes) > _MAX_LISTED else []
            )
            raise IncompatibleCheckpointError(
                f"{self.directory} holds step {step} of a model with other parameter shapes: model config "
                f"differences: {'; '.join(config) or 'none (the data shapes differ)'}; parameters: "
                f"{'; '.join(listed)}; use a new --workdir, or the config and data that wrote the checkpoint"
            )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """(state, loop state) at `step`, placed as `abstract_state`'s shardings say.

        A step whose files cannot be read raises DamagedCheckpointError, naming the file.
        """
        try:
            with _quiet_event_loop():
                self.check_compatible(step)
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()
                    ),
                )
        except IncompatibleCheckpointError:
            raise
        except Exception as error:  # Orbax and tensorstore raise many types on damaged files
            raise self._damaged(step, error) from error
        logging.info("restored step %d from %s", step, self.directory)
        return restored["state"], restored["loop"]

    def _damaged(self, step: int, error: Exception) -> DamagedCheckpointError:
        """The error for an unreadable step: the file at fault, and the earlier steps to continue from."""
        step_dir = os.path.join(self.directory, str(step))
        broken = next((name for name in _EXPECTED_FILES if not _readable(os.path.join(step_dir, name))), None)
        named = re.search(r'of local file "([^"]+)"', str(error)) or re.search(r'local file "([^"]+)"', str(error))
        if broken:
            path = os.path.join(step_dir, broken)
            cause = f"{path} is {'missing' if not os.path.exists(path) else 'not valid JSON (truncated?)'}"
        elif named:
            cause = f"{named.group(1)} cannot be read ({str(error).split(':', 1)[0]}: truncated or damaged)"
        else:
            cause = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        earlier = sorted((s for s in self.manager.all_steps() if s < step), reverse=True)
        advice = (
            f"earlier checkpoints: {', '.join(map(str, earlier))}; continue from one with --restore_step=N (or from "
            "the latest that reads with --restore_fallback; damaged steps are moved to "
            f"{os.path.join(self.directory, DAMAGED_DIR)}, never deleted); harjax.export takes --step=N"
            if earlier
            else "no earlier checkpoint to continue from: move the checkpoints folder aside to start again"
        )
        return DamagedCheckpointError(
            f"checkpoint step {step} in {self.directory} cannot be read: {cause}; {advice}", step
        )

    def move_aside(self, step: int) -> str:
        """Moves an unreadable step to checkpoints/damaged/<step> (process 0; never deleted); returns where."""
        target = os.path.join(self.directory, DAMAGED_DIR, str(step))
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            suffix = 0
            while os.path.exists(target):  # a step damaged again in a later run keeps its first copy too
                suffix += 1
                target = os.path.join(self.directory, DAMAGED_DIR, f"{step}.{suffix}")
            os.replace(os.path.join(self.directory, str(step)), target)
        sync_processes(f"moved aside checkpoint {step}")
        self.manager.reload()
        logging.warning("checkpoint step %d could not be read: moved to %s", step, target)
        return target

    def restore_latest(
        self, abstract_state: Any, step: int | None = None, fallback: bool = False
    ) -> tuple[Any, dict[str, Any], int, Fallback | None]:
        """(state, loop state, step, what was moved aside) of the latest checkpoint, or of `step`.

        `step` (--restore_step) continues from an earlier checkpoint when every later one is damaged: those are
        moved aside first. `fallback` (--restore_fallback) does that by itself, from the latest intact one.
        """
        latest = self.latest_step
        if step is not None:
            if step not in self.manager.all_steps():
                raise errors.ConfigError(
                    f"--restore_step={step}: {self.directory} holds steps {sorted(self.manager.all_steps())}"
                )
            later = sorted((s for s in self.manager.all_steps() if s > step), reverse=True)
            for candidate in later:  # only damaged steps may be skipped
                try:
                    self.restore(candidate, abstract_state)
                except DamagedCheckpointError:
                    continue
                raise errors.ConfigError(
                    f"--restore_step={step}: the later step {candidate} reads fine; --restore_step only skips "
                    "damaged checkpoints"
                )
            for candidate in later:
                self.move_aside(candidate)
            state, loop_state = self.restore(step, abstract_state)
            return state, loop_state, step, Fallback(tuple(later), step)
        damaged: list[int] = []
        candidate = latest
        while True:
            try:
                state, loop_state = self.restore(candidate, abstract_state)
            except DamagedCheckpointError:
                if not fallback:
                    raise
                damaged.append(candidate)
                self.move_aside(candidate)
                candidate = self.latest_step
                if candidate is None:
                    raise DamagedCheckpointError(
                        f"{self.directory}: no checkpoint can be read (steps {damaged} moved to "
                        f"{os.path.join(self.directory, DAMAGED_DIR)}); move the checkpoints folder aside to "
                        "start again",
                        damaged[0],
                    ) from None
                continue
            return state, loop_state, candidate, Fallback(tuple(damaged), candidate) if damaged else None

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
    """Says when to save and stop because the job is being preempted (SIGTERM) or interrupted (Ctrl-C).

    Several processes must agree on the step, which jax.distributed's preemption sync gives through Orbax (it
    listens for SIGTERM); a lone process catches SIGTERM and SIGINT itself. A second Ctrl-C stops at once, without
    the checkpoint.
    """

    def __init__(self, checkpointer: Checkpointer):
        self._checkpointer = checkpointer
        self._received: int | None = None
        self._previous = {}
        if jax.process_count() == 1:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self._received is not None:
            raise KeyboardInterrupt  # the second Ctrl-C
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        logging.warning(
            "%s received: saving a checkpoint at the end of this step, then stopping (Ctrl-C again stops at once)", name
        )
        self._received = signum

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return self._checkpointer.manager.reached_preemption(step)
        return self._received is not None

    @property
    def cause(self) -> int:
        """The signal the run stops for, which its exit status reports: SIGINT after Ctrl-C, else SIGTERM."""
        return signal.SIGINT if self._received == signal.SIGINT else signal.SIGTERM

    def close(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _readable(path: str) -> bool:
    """Whether one of a step's expected files is there and, if JSON, parses."""
    if not os.path.isfile(path):
        return False
    if path.endswith(".ocdbt"):
        return True
    try:
        with open(path) as f:
            json.load(f)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


@contextlib.contextmanager
def _quiet_event_loop() -> Iterator[None]:
    """Keeps the event-loop noise of a failed restore out of the log: one error says what happened.

    A damaged checkpoint fails many of tensorstore's reads at once: asyncio logs 'Task exception was never
    retrieved' for each, and the reads still in flight call back into Orbax's closed event loop later, each
    printed as an unraisable 'Event loop is closed' traceback (a hundred or more lines per array).
    """
    log = logging.getLogger("asyncio")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    except Exception:
        _ignore_closed_event_loop_callbacks()
        raise
    finally:
        log.setLevel(level)


def _ignore_closed_event_loop_callbacks() -> None:
    """From now on, drops only the unraisable 'Event loop is closed' errors of late tensorstore callbacks."""
    previous = sys.unraisablehook
    if getattr(previous, "harjax_closed_loop_filter", False):
        return

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
            return
        previous(unraisable)

    hook.harjax_closed_loop_filter = True
    sys.unraisablehook = hook


def sync_processes(name: str) -> None:
    """Waits until every process of a multi-process job gets here (a no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
