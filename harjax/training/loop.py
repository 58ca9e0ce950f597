"""train(config, workdir) and evaluate(config, workdir): setup, the loop, checkpoint selection, logging.

The loop trains, saves checkpoints and calls the evaluators config.evals asks for when they are due
(harjax/evaluators/); it scores nothing itself. What they yield is logged under their prefixes ('eval/', 'val/',
'eval_selected/', 'robustness/', ...); the macro-F1 of the classification evaluator that runs during training
ranks the checkpoints. Throughput and the time of each evaluator go to perf.jsonl ('perf/...').

Ctrl-C or SIGTERM stops a run at the end of the current step, after a checkpoint of it: train() returns where it
stopped (Stopped), and harjax.main exits with status 130 or 143, so `train && export` never ships an unfinished run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
import tqdm

from harjax import errors
from harjax.data import batch as batch_lib, pipeline
from harjax.evaluators import common as evaluators, robustness
from harjax.models import ensemble, har_model
from harjax.training import (
    augment,
    checkpointing,
    losses,
    memory,
    metrics as metrics_lib,
    parallel,
    step as step_lib,
    workdir as workdir_lib,
)

_POSITIVE_TRAIN_KEYS = (
    "batch_size",
    "eval_batch_size",
    "num_steps",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
)
PROFILE_DIR = "profile"


def validate_train_config(train_config: ml_collections.ConfigDict) -> None:
    """Rejects settings of config.train that no run can use, naming the key."""
    for key in _POSITIVE_TRAIN_KEYS:
        if not isinstance(train_config[key], int) or train_config[key] <= 0:
            raise errors.ConfigError(f"config.train.{key} must be a positive integer, got {train_config[key]!r}")
    if train_config.warmup_steps < 0 or train_config.learning_rate <= 0:
        raise errors.ConfigError(
            "config.train.warmup_steps must be >= 0 and config.train.learning_rate > 0, got "
            f"{train_config.warmup_steps} and {train_config.learning_rate}"
        )
    profile = tuple(train_config.profile_steps)
    if profile and not (
        len(profile) == 2 and all(isinstance(step, int) for step in profile) and 1 <= profile[0] < profile[1]
    ):
        raise errors.ConfigError(
            "config.train.profile_steps must be () or (first, stop) with 1 <= first < stop: the steps "
            f"first..stop-1 are traced; got {profile}"
        )


def resolve_budget(train_config: ml_collections.ConfigDict, num_examples: int) -> None:
    """The step counts and cadences an epoch budget says, for a split of `num_examples`.

    Small datasets need many passes; a budget in steps would give a few hundred recordings a tenth of the passes
    forty get. config.train.num_epochs replaces the step budget (and, with their *_epochs, the warmup and
    cadences); config.train.min_epochs only raises it to that many passes, so one recipe gives tiny sets its steps
    and larger ones their passes. The resolved steps are what config.json records.
    """
    for key in ("num_epochs", "min_epochs", "warmup_epochs", "eval_every_epochs", "checkpoint_every_epochs"):
        if train_config[key] < 0:
            raise errors.ConfigError(f"config.train.{key} must be >= 0, got {train_config[key]}")
    if not _budget_in_epochs(train_config):
        return
    steps_per_epoch = num_examples / train_config.batch_size
    if train_config.num_epochs:
        train_config.num_steps = max(1, math.ceil(train_config.num_epochs * steps_per_epoch))
        for key, epochs in (
            ("warmup_steps", "warmup_epochs"),
            ("eval_every", "eval_every_epochs"),
            ("checkpoint_every", "checkpoint_every_epochs"),
        ):
            if train_config[epochs]:
                least = 0 if key == "warmup_steps" else 1
                train_config[key] = max(least, round(train_config[epochs] * steps_per_epoch))
    train_config.num_steps = max(train_config.num_steps, math.ceil(train_config.min_epochs * steps_per_epoch))
    logging.info(
        "config.train.num_epochs=%g, min_epochs=%g over %d examples: %d steps (eval every %d, checkpoint every %d)",
        train_config.num_epochs,
        train_config.min_epochs,
        num_examples,
        train_config.num_steps,
        train_config.eval_every,
        train_config.checkpoint_every,
    )


def _budget_in_epochs(train_config: ml_collections.ConfigDict) -> bool:
    return bool(train_config.get("num_epochs") or train_config.get("min_epochs"))


def last_step(config: ml_collections.ConfigDict, workdir: str) -> int | None:
    """The run's last step: config.train.num_steps, or with an epoch budget what its config.json resolved."""
    if not _budget_in_epochs(config.train):
        return config.train.num_steps
    try:
        with open(os.path.join(workdir, workdir_lib.CONFIG_FILE)) as f:
            return json.load(f)["config"]["train"]["num_steps"]
    except (FileNotFoundError, ValueError, KeyError):
        return None  # not started


def training_complete(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Whether the run in `workdir` did everything that follows its last step.

    Every evaluator that runs at the last step (during training or after it) has logged there. A restart does not
    repeat them, and the experiment runner counts only such runs as finished (a run preempted in its last step
    has logged that step's training metrics, not all of these).
    """
    last = last_step(config, workdir)
    if last is None:
        return False
    logged = {key for record in metrics_lib.read_metrics(workdir) if record["step"] == last for key in record}
    wanted = {schedule.prefix for schedule in evaluators.schedules(config) if schedule.every or schedule.at_end}
    return any(key.startswith("train/") for key in logged) and all(
        any(key.startswith(prefix) for key in logged) for prefix in wanted
    )


@dataclasses.dataclass
class _Run:
    """What training and stand-alone evaluation share: data, model, mesh, initial state, checkpoints, evaluators."""

    config: ml_collections.ConfigDict
    workdir: str
    mesh: Any
    splits: dict[str, batch_lib.Split]  # 'train', 'eval' and, when held out, 'validation'
    cache: str
    train_batch_size: int  # this process's rows of each global batch
    ensemble_size: int  # config.model.ensemble_size: members side by side (harjax/models/ensemble.py)
    init_state: Callable[[], step_lib.TrainState]
    abstract_state: Any
    checkpointer: checkpointing.Checkpointer
    writer: metrics_lib.MetricWriter
    predict_fns: dict[str, dict[str, Callable]]  # per evaluated split: 'predict' (every example) and 'apply'
    evaluators: list[evaluators.Scheduled]
    selection_metric: str  # what ranks checkpoints: the selecting evaluator's macro-F1
    short_recordings: dict[str, int]  # per split: recordings with fewer encoder steps than segments (config.json)

    def close(self) -> None:
        self.checkpointer.close()
        self.writer.close()


class _SplitPredictor:
    """Every example of one evaluation split once through the eval step.

    The evaluators of one round share the clean predictions of a state (the last one is kept, with the state it
    belongs to, so no other state can be mistaken for it).
    """

    def __init__(
        self, data: batch_lib.Split, columns: batch_lib.Columns | None, batch_size: int, eval_step: Callable, mesh: Any
    ):
        self._data, self._columns, self._batch_size = data, columns, batch_size
        self._eval_step, self._mesh = eval_step, mesh
        self._last: tuple[Any, evaluators.Predictions] | None = None

    def __call__(
        self, state: step_lib.TrainState, corrupt: robustness.Corruption | None = None
    ) -> evaluators.Predictions:
        if corrupt is None and self._last is not None and self._last[0] is state:
            return self._last[1]
        outputs = []
        for local_batch in pipeline.eval_batches(
            self._data, self._batch_size, jax.process_index(), jax.process_count(), self._columns
        ):
            if corrupt is not None:
                local_batch = corrupt(local_batch)
            outputs.append(self._eval_step(state, parallel.global_batch(local_batch, self._mesh)))
        outputs = jax.device_get(outputs)
        count = sum(output["count"] for output in outputs)
        losses = {name: float(sum(output["sums"][name] for output in outputs) / count) for name in outputs[0]["sums"]}
        rows = {
            name: np.concatenate([output[name] for output in outputs])
            for name in outputs[0]
            if name not in ("count", "sums")
        }
        valid = rows.pop(batch_lib.VALID)
        predictions = evaluators.Predictions({name: values[valid] for name, values in rows.items()}, losses)
        if corrupt is None:
            self._last = (state, predictions)
        return predictions


def _selection_metric(scheduled: Sequence[evaluators.Scheduled]) -> str:
    """The selection key (classification's macro-F1) of the first evaluator that runs during training."""
    for entry in scheduled:
        if entry.schedule.every and entry.selection_key:
            return f"{entry.schedule.prefix}{entry.selection_key}"
    raise errors.ConfigError(
        "config.evals: no classification evaluator runs during training (every > 0) on the split that "
        "selects checkpoints (the validation split when config.data.validation_fraction > 0, else the "
        "test split), so no checkpoint could be chosen"
    )


class Teacher(Protocol):
    """A distillation teacher (harjax/serving/teacher.py loads one): its logits ride in the training batches.

    `attach` gives the training split its logits on every example (config.distill.targets='example'), and its
    identity in every case; `apply(variables, batch)` computes them on each augmented batch inside the train step
    ('augmented').
    """

    reads_video: bool
    variables: Any

    def attach(self, split: batch_lib.Split, workdir: str, batch_size: int) -> batch_lib.Split: ...

    def apply(self, variables: Any, batch: dict[str, jax.Array]) -> jax.Array: ...


def _setup(config: ml_collections.ConfigDict, workdir: str, teacher: Teacher | None = None) -> _Run:
    validate_train_config(config.train)
    mesh = parallel.make_mesh()
    keep_video = teacher is not None and teacher.reads_video
    read, eval_data = pipeline.load_splits(config, keep_video)
    train_data, validation_data = pipeline.validation_split(config, read)
    if teacher is not None:
        train_data = teacher.attach(train_data, workdir, config.train.eval_batch_size)
        per_example = losses.distillation_targets(config) == "example"
        if keep_video and per_example and config.model.modalities == "sensor":  # read by the teacher, not the student
            train_data, eval_data = pipeline.without_video(train_data), pipeline.without_video(eval_data)
            # The same held-out examples (chosen by labels and subjects), viewed as the video-free student's.
            validation_data = pipeline.validation_split(config, pipeline.without_video(read))[1]
    resolve_budget(config.train, len(train_data))
    validate_train_config(config.train)
    pipeline.log_summary(train_data, eval_data)
    splits = {"train": train_data, "eval": eval_data} | ({"validation": validation_data} if validation_data else {})
    ensemble_size = ensemble.ensemble_size(config.model)
    evaluated = {evaluators.TEST: eval_data} | ({evaluators.VALIDATION: validation_data} if validation_data else {})
    har_model.resolve_reference_length(config)
    model = har_model.build_model(config, train_data.num_classes)
    short_recordings = {
        name: har_model.count_short_recordings(config, data.recording_lengths, name) for name, data in splits.items()
    }
    for name, count in short_recordings.items():
        if count:
            logging.warning(
                "%s split: %d recordings have fewer encoder steps than config.model.num_segments=%d; their segments "
                "share their steps, and they are scored like the others",
                name,
                count,
                config.model.num_segments,
            )
    train_batch_size = pipeline.per_process_batch_size(
        config.train.batch_size, jax.device_count(), jax.process_count(), "config.train.batch_size"
    )
    eval_batch_size = pipeline.per_process_batch_size(
        config.train.eval_batch_size, jax.device_count(), jax.process_count(), "config.train.eval_batch_size"
    )
    example = {
        name: np.zeros((jax.device_count(), *shape), dtype) for name, (shape, dtype) in train_data.example_spec.items()
    }
    init = functools.partial(
        step_lib.create_train_state,
        model,
        step_lib.make_optimizer(config, step_lib.learning_rate_schedule(config.train)),
        example,
        config.seed,
        ensemble_size,
    )
    abstract_state = parallel.replicated_abstract(jax.eval_shape(init), mesh)
    device_free = parallel.free_device_bytes()
    cache = pipeline.choose_cache(
        config.data.cache,
        train_data,
        list(evaluated.values()),
        config.data.cache_memory_fraction,
        None if device_free is None else device_free - memory.state_bytes(abstract_state),  # what the state leaves
        jax.local_device_count(),
    )

    eval_step = step_lib.jit_eval_step(mesh, config.loss.contrastive_weight, ensemble_size)
    apply = jax.jit(
        lambda state, batch: ensemble.apply(
            state.apply_fn,
            {"params": state.params, "batch_stats": state.batch_stats},
            batch,
            ensemble_size,
            train=False,
        )
    )
    predict_fns = {
        split: {
            "predict": _SplitPredictor(
                data, data.columns() if cache != "none" else None, eval_batch_size, eval_step, mesh
            ),
            "apply": apply,
        }
        for split, data in evaluated.items()
    }
    scheduled = evaluators.from_config(config, predict_fns, evaluated, workdir)
    selection_metric = _selection_metric(scheduled)
    checkpointer = checkpointing.Checkpointer(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        config.train.keep_checkpoints,
        checkpointing.model_signature(config, abstract_state),
        best_metric=selection_metric,
    )
    return _Run(
        config,
        workdir,
        mesh,
        splits,
        cache,
        train_batch_size,
        ensemble_size,
        functools.partial(
            _fitted,
            jax.jit(init, out_shardings=parallel.replicated(mesh)),
            model,
            train_data,
            config.seed,
            ensemble_size,
            mesh,
        ),
        abstract_state,
        checkpointer,
        metrics_lib.MetricWriter(workdir, enabled=jax.process_index() == 0),
        predict_fns,
        scheduled,
        selection_metric,
        short_recordings,
    )


FIT_EXAMPLES = 512  # training examples the fitted state (MiniRocket's biases and feature statistics) is read from


def _fitted(
    init: Callable[[], step_lib.TrainState],
    model: har_model.HARModel,
    train_data: batch_lib.Split,
    seed: int,
    ensemble_size: int,
    mesh: Any,
) -> step_lib.TrainState:
    """The initial state with what is fitted from the training split before step 0, each member its own draws.

    A sample of FIT_EXAMPLES training examples in an order drawn from the seed (every one for a ridge, which
    is fitted to them all), as evaluation reads them (standardised, not augmented); the same on every process. A
    resume restores the fitted state with the rest, never refitting it.
    """
    state = init()
    if not har_model.fits_statistics(model):
        return state
    order = np.random.default_rng(seed).permutation(len(train_data))
    if not har_model.has_ridge(model):
        order = order[:FIT_EXAMPLES]
    sample = batch_lib.examples(train_data, np.sort(order))
    batch_stats = jax.device_get(state.batch_stats)
    members = [
        har_model.fit_statistics(
            model, batch_stats if ensemble_size == 1 else ensemble.member(batch_stats, m), sample, [seed, m]
        )
        for m in range(ensemble_size)
    ]
    fitted = members[0] if ensemble_size == 1 else ensemble.stacked(members)
    return state.replace(batch_stats=parallel.replicate(fitted, mesh))


def _evaluate(
    due: Sequence[evaluators.Scheduled], state: step_lib.TrainState, step: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(what the evaluators yield, under their prefixes; the seconds each took, as 'perf/eval_seconds/<name>').

    An evaluator's time includes predicting its split when it is the first of the round to need it.
    """
    scalars, perf = {}, {}
    for entry in due:
        started = time.perf_counter()
        yielded = {f"{entry.schedule.prefix}{key}": value for key, value in entry.evaluator.run(state, step)}
        if not yielded:
            raise RuntimeError(
                f"config.evals.{entry.schedule.name}: the {entry.schedule.type} evaluator yielded "
                "nothing (an evaluator yields at least one value, which marks that it ran)"
            )
        scalars |= yielded
        perf[f"perf/eval_seconds/{entry.schedule.name}"] = time.perf_counter() - started
    return scalars, perf


def _finish(run: _Run, state: step_lib.TrainState, step: int) -> None:
    """Once training is complete: the evaluators that run after the last step, logged as one record.

    They run on the final checkpoint, or on the one the validation split selected. Every process takes part; process
    0 decides whether an earlier start already did it.
    """
    if not parallel.agree(not training_complete(run.config, run.workdir)):
        return
    final = [
        entry for entry in run.evaluators if entry.schedule.at_end and entry.schedule.checkpoint == evaluators.CURRENT
    ]
    on_selected = [
        entry for entry in run.evaluators if entry.schedule.at_end and entry.schedule.checkpoint == evaluators.SELECTED
    ]
    scalars, perf = _evaluate(final, state, step)
    if on_selected:
        run.checkpointer.manager.wait_until_finished()
        selected = run.checkpointer.best_step or step
        selected_state, _ = run.checkpointer.restore(selected, run.abstract_state)
        chosen, chosen_perf = _evaluate(on_selected, selected_state, selected)
        scalars |= chosen | {
            f"{prefix}step": selected for prefix in dict.fromkeys(entry.schedule.prefix for entry in on_selected)
        }
        perf |= chosen_perf
        logging.info(
            "after training: %s; the selected checkpoint is step %d",
            ", ".join(f"{name} {value:.4f}" for name, value in scalars.items() if name.endswith("/macro_f1")),
            selected,
        )
    run.writer.write(step, scalars | perf)


class _Throughput:
    """Steps and examples per second between log lines, evaluations left out.

    The first step of a start (compilation included) is reported on its own.
    """

    def __init__(self, global_batch_size: int):
        self._global_batch_size = global_batch_size
        self._started = time.perf_counter()
        self._steps = 0
        self._paused = 0.0
        self.first_step_seconds: float | None = None

    def first_step_done(self, step_metrics: Any) -> None:
        jax.block_until_ready(step_metrics)
        self.first_step_seconds = time.perf_counter() - self._started
        self._started, self._steps, self._paused = time.perf_counter(), 0, 0.0

    def count(self) -> None:
        self._steps += 1

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self._paused += time.perf_counter() - started

    def pop(self) -> dict[str, float]:
        """The window's figures (call after the window's metrics were fetched, so its steps have run)."""
        seconds = time.perf_counter() - self._started - self._paused
        figures = {}
        if self.first_step_seconds is not None:
            figures["perf/train/first_step_seconds"] = self.first_step_seconds
            self.first_step_seconds = None
        if self._steps and seconds > 0:
            figures |= {
                "perf/train/steps_per_second": self._steps / seconds,
                "perf/train/examples_per_second": self._steps * self._global_batch_size / seconds,
            }
        self._started, self._steps, self._paused = time.perf_counter(), 0, 0.0
        return figures


class _StepProfiler:
    """config.train.profile_steps = (first, stop): a jax.profiler trace of steps first..stop-1 in workdir/profile/."""

    def __init__(self, steps: Sequence[int], workdir: str):
        self._steps = tuple(steps)
        self._directory = os.path.join(workdir, PROFILE_DIR, f"process_{jax.process_index()}")
        self._active = False

    def before(self, step: int) -> None:
        if self._steps and not self._active and self._steps[0] <= step < self._steps[1]:
            jax.profiler.start_trace(self._directory)
            self._active = True
            logging.info("profiling steps %d..%d into %s", step, self._steps[1] - 1, self._directory)

    def after(self, step: int, state: Any) -> None:
        if self._active and step == self._steps[1] - 1:
            jax.block_until_ready(state)  # the trace holds the device work of its last step
            self.close()

    def close(self) -> None:
        if self._active:
            jax.profiler.stop_trace()
            self._active = False


def _check_data(run: _Run, allow_data_change: bool) -> dict[str, Any]:
    """A resumed run's data must be what it was trained on: refused naming the split, unless allowed.

    Returns what a start allowed to change, for runs.jsonl.
    """
    changes = workdir_lib.data_changes(run.workdir, run.splits) if workdir_lib.recorded_data(run.workdir) else {}
    if not changes:
        return {}
    described = "; ".join(
        f"split '{name}' was {change['before']}, now {change['now']}" for name, change in changes.items()
    )
    if not allow_data_change:
        raise errors.UserError(
            f"--workdir={run.workdir} was trained on other data: {described}; resume with its data, use a new "
            "--workdir, or pass --allow_data_change (recorded in runs.jsonl)"
        )
    logging.warning("resuming on other data (--allow_data_change): %s", described)
    return {"allow_data_change": changes}


def _restore(run: _Run, restore_step: int | None, restore_fallback: bool) -> tuple[Any, dict, int, dict[str, Any]]:
    """(state, loop state, step, events for runs.jsonl): the latest checkpoint, or as --restore_* asks."""
    restored = run.checkpointer.restore_latest(run.abstract_state, restore_step, restore_fallback)
    state, loop_state, step, fallback = restored
    return state, loop_state, step, ({"checkpoint_fallback": fallback.record()} if fallback else {})


@dataclasses.dataclass(frozen=True)
class Stopped:
    """Where a run stopped by a signal (Ctrl-C, SIGTERM) before its last step saved its checkpoint: a rerun resumes."""

    step: int
    num_steps: int
    signal: int  # signal.SIGINT (Ctrl-C) or signal.SIGTERM (preemption), what the command's exit status reports


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a call of train() did: the last evaluation's scalars, and where it stopped when interrupted."""

    eval_metrics: dict[str, float]
    stopped: Stopped | None  # None: training is complete


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, **options: Any) -> dict[str, float]:
    """train() for callers that need only the last evaluation's scalars (an interrupted run returns normally)."""
    return train(config, workdir, **options).eval_metrics


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    allow_data_change: bool = False,
    restore_step: int | None = None,
    restore_fallback: bool = False,
    teacher: Teacher | None = None,
) -> TrainResult:
    """Trains from scratch or resumes from the workdir's latest checkpoint, until done or stopped by a signal.

    The workdir is locked for the run's lifetime. A resume on other data is refused unless `allow_data_change`; an
    unreadable latest checkpoint is refused unless `restore_step` (an earlier step, every later one damaged) or
    `restore_fallback` (the latest that reads) says where to continue from. A run stopped by Ctrl-C or SIGTERM
    returns once its checkpoint is written (on every process, when there are several), saying where it stopped.
    A config that distils (config.distill.teacher) needs the `teacher` loaded (harjax/serving/teacher.py).
    """
    distillation = losses.distillation_settings(config)
    if distillation is not None:
        losses.distillation_targets(config)  # checked before the teacher reads the training split
    if distillation is not None and teacher is None:  # a library caller's omission, named with the fix
        raise errors.ConfigError(
            f"config.distill.teacher={config.distill.teacher}: pass teacher=harjax.serving.teacher.load(...) to "
            "loop.train (python -m harjax.main loads it)"
        )
    workdir_lib.prepare(workdir)
    train_config = config.train
    with contextlib.ExitStack() as cleanup:
        cleanup.enter_context(workdir_lib.locked(workdir))
        run = _setup(config, workdir, teacher)
        cleanup.callback(run.close)
        train_data = run.splits["train"]
        window = metrics_lib.TrainMetricWindow()
        events: dict[str, Any] = {}
        memory.check_state(run.abstract_state, config)
        if run.checkpointer.latest_step is None:
            if restore_step is not None:
                raise errors.ConfigError(f"--restore_step={restore_step}: {workdir} holds no checkpoint")
            state, start_step = run.init_state(), 0
        else:
            events |= _check_data(run, allow_data_change)
            state, loop_state, start_step, restored = _restore(run, restore_step, restore_fallback)
            events |= restored
            window.restore(loop_state["train_window"])
        # Every step, skipped non-finite ones included, consumes one global batch.
        train_iterator = pipeline.train_iterator(
            train_data,
            run.train_batch_size,
            config.seed,
            jax.process_index(),
            jax.process_count(),
            config.data.num_workers,
            start_batch=start_step,
            cache=run.cache,
        )
        cleanup.callback(train_iterator.close)
        on_device = run.cache == "device"
        resident = parallel.replicate(train_data.columns(), run.mesh) if on_device else None
        run.writer.truncate_after(start_step if start_step else -1)  # from scratch: clean files
        if jax.process_index() == 0:
            workdir_lib.write_run_config(
                workdir, config, run.splits, start_step, run.cache, run.selection_metric, events, run.short_recordings
            )
        at_start = [entry for entry in run.evaluators if entry.schedule.at_start]
        if at_start and start_step == 0:  # the untrained model: the chance line of every curve
            untrained, perf = _evaluate(at_start, state, 0)
            run.writer.write(0, untrained | perf)
        augment.check(config.data.augment)
        streams = tuple(map(tuple, batch_lib.sensor_streams(train_data.channel_names).values()))
        in_step_teacher = teacher is not None and losses.distillation_targets(config) == "augmented"
        teacher_variables = parallel.replicate(teacher.variables, run.mesh) if in_step_teacher else None
        train_step = step_lib.jit_train_step(
            run.mesh,
            config.loss.contrastive_weight,
            train_data.gather if on_device else None,
            (config.data.augment, streams) if augment.enabled(config.data.augment) else None,
            run.ensemble_size,
            config.model.get("ensemble_step", "auto"),
            losses.label_smoothing(config.loss),
            distillation,
            teacher.apply if in_step_teacher else None,
        )
        preemption = checkpointing.PreemptionWatcher(run.checkpointer)
        cleanup.callback(preemption.close)
        profiler = _StepProfiler(train_config.profile_steps, workdir)
        cleanup.callback(profiler.close)
        throughput = _Throughput(train_config.batch_size)
        progress = cleanup.enter_context(
            tqdm.tqdm(
                total=train_config.num_steps,
                initial=start_step,
                disable=jax.process_index() != 0,
                desc="train",
                unit="step",
                dynamic_ncols=True,
            )
        )

        eval_metrics: dict[str, float] = {}
        stopped: Stopped | None = None
        for step in range(start_step + 1, train_config.num_steps + 1):
            profiler.before(step)
            batch = parallel.global_batch(next(train_iterator), run.mesh)
            if step == start_step + 1:  # the program that runs every step, checked against the free memory first
                train_step = train_step.lower(state, batch, resident, teacher_variables).compile()
                memory.check_step(train_step, run.abstract_state, config)
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, step_metrics = train_step(state, batch, resident, teacher_variables)
            profiler.after(step, state)
            if step == start_step + 1:
                throughput.first_step_done(step_metrics)
            else:
                throughput.count()
            window.add(step_metrics)
            progress.update()
            last = step == train_config.num_steps
            if step % train_config.log_every == 0 or last:
                scalars = {f"train/{name}": value for name, value in window.pop_means().items()}
                scalars["train/nonfinite_steps"] = int(np.sum(jax.device_get(state.nonfinite_steps)))  # all members
                run.writer.write(step, scalars | throughput.pop())
                if "train/loss" in scalars:
                    progress.set_postfix(loss=f"{scalars['train/loss']:.4f}")
            due = [entry for entry in run.evaluators if entry.schedule.runs_at(step, train_config.num_steps)]
            evaluated: dict[str, float] = {}
            if due:
                with throughput.paused():
                    evaluated, perf = _evaluate(due, state, step)
                    run.writer.write(step, evaluated | perf)
                eval_metrics = evaluated
            preempted = preemption.reached(step)
            # Every step the selection metric is computed at is saved, so the best checkpoint is among them all.
            ranked = run.selection_metric in evaluated
            if ranked or preempted or step % train_config.checkpoint_every == 0:
                run.checkpointer.save(step, state, {"train_window": window.state()}, evaluated if ranked else None)
            if preempted:  # even at the last step: the evaluations after training run at the restart
                logging.warning("stopping at step %d after the preemption checkpoint", step)
                stopped = Stopped(step, train_config.num_steps, preemption.cause)
                break
        else:  # training is complete (now or in an earlier start)
            _finish(run, state, train_config.num_steps)
    if stopped is not None:  # the checkpoint is written (run.close waited for it) on every process before any exits
        checkpointing.sync_processes("stopped after the preemption checkpoint")
    return TrainResult(eval_metrics, stopped)


def evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    restore_step: int | None = None,
    restore_fallback: bool = False,
) -> dict[str, float]:
    """Evaluates the workdir's latest checkpoint (--mode=eval) with the evaluators of the test split.

    Those that run during training or after it on the final checkpoint; their files land in the workdir (eval/,
    analysis/) and their scalars in the log and the returned dict.
    """
    if not os.path.isdir(workdir):
        raise workdir_lib.WorkdirError(f"--workdir={workdir}: no such directory; train first")
    with contextlib.ExitStack() as cleanup:
        cleanup.enter_context(workdir_lib.locked(workdir))
        run = _setup(config, workdir)
        cleanup.callback(run.close)
        if run.checkpointer.latest_step is None:
            raise errors.UserError(f"{run.checkpointer.directory} holds no checkpoint to evaluate; train first")
        state, _, step, _ = _restore(run, restore_step, restore_fallback)
        chosen = [
            entry
            for entry in run.evaluators
            if entry.schedule.split == evaluators.TEST
            and entry.schedule.checkpoint == evaluators.CURRENT
            and (entry.schedule.every or entry.schedule.at_end)
        ]
        scalars, _ = _evaluate(chosen, state, step)
        logging.info("step %d: %s", step, scalars)
        return scalars
