"""Evaluators as plug-ins, configured by `config.evals` (big_vision's evaluators/common.py pattern).

`config.evals.<name>` is one evaluator: `type` names a module of harjax/evaluators/ (default: the entry's name) or,
as a dotted path, any importable module, and the generic keys say where and when it runs:

    split        'test' (default) or 'validation' (the part of the training split that config.data.validation_fraction
                 holds out)
    checkpoint   'current' (default) or 'selected': the checkpoint the validation split chose, after training
    every        steps between runs during training, and at the last step (unset: config.train.eval_every, or 0 for
                 the selected checkpoint; 0: not during training)
    at_start     also on the untrained model at step 0 (unset: config.train.eval_at_start for evaluators that run
                 during training, else False)
    at_end       once after the last step
    prefix       what its keys are logged under (default '<name>/')

Every other key is the evaluator's own. A module defines `Evaluator(predict_fn, context, **its keys)`, whose
`run(state, step)` yields (key, value) pairs and writes its own files (`write_file`: atomic, process 0 only), and
`applies(config)`, whether it has anything to evaluate for the run's model; `PREDICT_FN` picks the function it is
given ('predict', every example of its split once, or 'apply', the model on one batch), and `SELECTION_KEY`, if
set, which of its values may rank checkpoints.

Three rules keep model selection honest, applied here and nowhere else:
  - evaluators of the validation split, and of the selected checkpoint, run only when there is a validation split
    (without one, the selected checkpoint was chosen on the test split itself);
  - with a validation split the test split informs no choice: its evaluators run after training only (those with
    `every` at the last step) and not at step 0;
  - an evaluator that does not apply to the model (retrieval without the contrastive term, attention without
    keyless attention) is left out, and the log says so.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np

from harjax import errors
from harjax.data import batch as batch_lib

TEST, VALIDATION = "test", "validation"
SPLITS = (TEST, VALIDATION)
CURRENT, SELECTED = "current", "selected"
CHECKPOINTS = (CURRENT, SELECTED)
_GENERIC_KEYS = ("type", "split", "checkpoint", "every", "at_start", "at_end", "prefix")
# Keys of configs written before evaluators were plug-ins, and where they went.
MOVED_KEYS = {
    "eval.at_start": "train.eval_at_start",
    "eval.robustness": "evals.robustness.at_end",
    "eval.occlusion_fractions": "evals.robustness.occlusion_fractions",
    "eval.attention_examples": "evals.attention.at_end (on) and evals.attention.examples (how many)",
}


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Every example of a split once, as the eval step gave them."""

    rows: dict[str, np.ndarray]  # [N, ...]: 'logits', 'label', 'index', 'trial' and the contrastive embeddings
    losses: dict[str, float]  # mean over examples: 'loss', 'cross_entropy' (and 'contrastive')


PredictFn = Callable[..., Predictions]  # (state, corrupt=None): every example of the split, optionally corrupted


@dataclasses.dataclass(frozen=True)
class Context:
    """What an evaluator may need of its run besides its predict function."""

    config: ml_collections.ConfigDict  # the run's resolved config
    data: batch_lib.Split  # the split it evaluates
    name: str  # its entry in config.evals (names its files)
    workdir: str


class Evaluator(Protocol):
    def run(self, state: Any, step: int) -> Iterator[tuple[str, float]]: ...


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One entry of config.evals, resolved for a run: where and when the evaluator runs."""

    name: str
    type: str
    split: str
    checkpoint: str
    every: int  # 0: not during training
    at_start: bool
    at_end: bool
    prefix: str
    options: dict[str, Any]  # the evaluator's own keys

    def runs_at(self, step: int, last_step: int) -> bool:
        """Whether it runs during training at `step` (the last step included when it has a cadence)."""
        return bool(self.every) and (step % self.every == 0 or step == last_step)


@dataclasses.dataclass(frozen=True)
class Scheduled:
    schedule: Schedule
    evaluator: Evaluator
    selection_key: str | None  # what of its values may rank checkpoints (the module's SELECTION_KEY)


def available_types() -> list[str]:
    """The evaluator modules of this package."""
    package = os.path.dirname(os.path.abspath(__file__))
    return sorted(info.name for info in pkgutil.iter_modules([package]) if info.name != "common")


def _module(name: str, type_name: str) -> Any:
    """The evaluator module `type_name`: one of this package's, or any importable module (a dotted path)."""
    if "." in type_name:
        try:
            return importlib.import_module(type_name)
        except ImportError as error:
            raise errors.ConfigError(f"config.evals.{name}.type={type_name!r}: cannot import it ({error})") from error
    if type_name not in available_types():
        raise errors.ConfigError(
            f"config.evals.{name}.type={type_name!r}: no such evaluator; choose one of {available_types()} "
            "(modules of harjax/evaluators/) or give the dotted path of your own module"
        )
    return importlib.import_module(f"harjax.evaluators.{type_name}")


def check_moved_keys(config: ml_collections.ConfigDict) -> None:
    """A config of the shape before config.evals fails here, naming where each key went."""
    if "eval" in config:
        moved = "; ".join(f"config.{old} -> config.{new}" for old, new in MOVED_KEYS.items())
        raise errors.ConfigError(f"config.eval was replaced by config.evals (evaluators as plug-ins): {moved}")


def moved_key_message(argument: str) -> str | None:
    """For a command-line '--config.eval.KEY=...' of the old shape, a message naming the new key."""
    for old, new in MOVED_KEYS.items():
        if argument.split("=", 1)[0] == f"--config.{old}":
            return f"{argument.split('=', 1)[0]}: this key moved to config.{new}"
    return None


def schedules(config: ml_collections.ConfigDict) -> list[Schedule]:
    """config.evals checked and resolved against the run (the rules above).

    In the order of their names: ml_collections keeps a ConfigDict's keys sorted.
    """
    check_moved_keys(config)
    has_validation = config.data.validation_fraction > 0
    resolved = []
    for name, entry in config.evals.items():
        entry = entry.to_dict() if isinstance(entry, ml_collections.ConfigDict) else dict(entry)
        type_name = entry.get("type", name)
        module = _module(name, type_name)
        split, checkpoint = entry.get("split", TEST), entry.get("checkpoint", CURRENT)
        # Unset cadences follow config.train, except where there is no training to follow (the selected checkpoint).
        every, at_start = entry.get("every"), entry.get("at_start")
        if every is None:
            every = config.train.eval_every if checkpoint == CURRENT else 0
        if at_start is None:  # the untrained model: the chance line of the curves of what runs during training
            at_start = config.train.eval_at_start and checkpoint == CURRENT and bool(every)
        at_end = bool(entry.get("at_end", False))
        if split not in SPLITS:
            raise errors.ConfigError(f"config.evals.{name}.split must be one of {SPLITS}, got {split!r}")
        if checkpoint not in CHECKPOINTS:
            raise errors.ConfigError(f"config.evals.{name}.checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
        if not isinstance(every, int) or every < 0:
            raise errors.ConfigError(f"config.evals.{name}.every must be a number of steps >= 0, got {every!r}")
        if checkpoint == SELECTED and (every or at_start):
            raise errors.ConfigError(
                f"config.evals.{name}: the selected checkpoint exists after training only; set "
                "every=0, at_start=False and at_end=True"
            )
        if not module.applies(config):
            logging.info("config.evals.%s: the model has nothing for the %s evaluator; left out", name, type_name)
            continue
        if not has_validation and (split == VALIDATION or checkpoint == SELECTED):
            continue  # needs a validation split (config.data.validation_fraction)
        if has_validation and split == TEST:  # the test split is scored after training only
            every, at_start, at_end = 0, False, at_end or bool(every)
        if not (every or at_start or at_end):
            continue  # switched off
        resolved.append(
            Schedule(
                name,
                type_name,
                split,
                checkpoint,
                every,
                bool(at_start),
                at_end,
                entry.get("prefix", f"{name}/"),
                {key: value for key, value in entry.items() if key not in _GENERIC_KEYS},
            )
        )
    return resolved


def from_config(
    config: ml_collections.ConfigDict,
    predict_fns: Mapping[str, Mapping[str, Callable]],
    splits: Mapping[str, batch_lib.Split],
    workdir: str,
) -> list[Scheduled]:
    """The run's evaluators, each built as Evaluator(predict_fns[split][PREDICT_FN], context, **its keys)."""
    built = []
    for schedule in schedules(config):
        module = _module(schedule.name, schedule.type)
        context = Context(config, splits[schedule.split], schedule.name, workdir)
        predict_fn = predict_fns[schedule.split][getattr(module, "PREDICT_FN", "predict")]
        try:
            evaluator = module.Evaluator(predict_fn, context, **schedule.options)
        except TypeError as error:
            raise errors.ConfigError(
                f"config.evals.{schedule.name}: {error} (the {schedule.type} evaluator's keys are "
                f"those of harjax/evaluators/{schedule.type}.py's Evaluator)"
            ) from error
        built.append(Scheduled(schedule, evaluator, getattr(module, "SELECTION_KEY", None)))
    return built


def write_file(workdir: str, relative_path: str, payload: bytes) -> str:
    """Writes workdir/relative_path whole or not at all (temporary name, then rename), on process 0 only."""
    path = os.path.join(workdir, relative_path)
    if jax.process_index() != 0:
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".partial")
    with open(temporary, "wb") as f:
        f.write(payload)
    os.replace(temporary, path)  # a killed run never leaves a half-written file
    return path
