"""Experiment suites: groups of runs, each a config file plus overrides, trained over several seeds.

A suite file is a plain ml_collections config (configs/suites/paper.py is the paper's study). load_suite checks it,
and resolves every run's config exactly as harjax.main would, before anything trains; a Trial is one (run, seed)
with its workdir and harjax.main command. harjax.experiments runs them, harjax.report reads what they left. A run
with `folds` (e.g. leave-one-subject-out protocols) is cross-validated: it trains once per fold and seed, each fold
its own RunSpec with data.protocol set, and the report's row is the mean ± std over folds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from harjax import errors

SUITE_KEYS = {"title", "base_config", "config_variant", "seeds", "shared_data_dir", "reference", "overrides", "groups"}
REQUIRED_SUITE_KEYS = {"base_config", "config_variant", "seeds", "reference", "groups"}
GROUP_KEYS = {"name", "title", "runs", "shown", "skipped", "excluded"}
RUN_KEYS = {"name", "config", "overrides", "reference", "folds", "teacher"}
STATUS_FILE = "suite_status.json"
LOG_FILE = "suite.log"
CONFIG_OVERRIDE_PREFIX = "--config."


class SuiteError(errors.UserError):
    """A suite that cannot run as written; the message names the file, group, run or flag."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    group: str
    name: str
    config: str  # a configs/*.py file
    overrides: tuple[str, ...]  # 'key=value', as harjax.main takes them after --config.
    reference: str  # 'group/run' this run is compared with (fold by fold when both are cross-validated)
    fold: str = ""  # one fold of a cross-validated run: its data.protocol ('' = the run is not cross-validated)
    teacher: str = ""  # 'group/run' whose workdir of the same seed (and fold) distils into this run (config.distill)

    @property
    def row(self) -> str:
        """'group/run': the report's row, which the folds of a cross-validated run share."""
        return f"{self.group}/{self.name}"

    @property
    def key(self) -> str:
        """'group/run', or 'group/run/fold' for one fold of a cross-validated run."""
        return f"{self.row}/{self.fold}" if self.fold else self.row


@dataclasses.dataclass(frozen=True)
class Group:
    name: str
    title: str
    runs: tuple[RunSpec, ...]
    shown: tuple[str, ...]  # runs of other groups repeated in this group's table
    skipped: str  # why the whole group does not run in this variant ('' = it runs)
    excluded: dict[str, str]  # runs left out of the group, and why

    def rows(self) -> dict[str, tuple[RunSpec, ...]]:
        """Each row ('group/run') and its runs: the run itself, or one per fold."""
        rows: dict[str, list[RunSpec]] = {}
        for run in self.runs:
            rows.setdefault(run.row, []).append(run)
        return {row: tuple(runs) for row, runs in rows.items()}


@dataclasses.dataclass(frozen=True)
class Suite:
    path: str
    title: str
    base_config: str
    config_variant: str
    seeds: int
    reference: str
    overrides: tuple[str, ...]  # the suite's, its shared data dir and the command line's, in that order
    groups: tuple[Group, ...]
    base: ml_collections.ConfigDict = dataclasses.field(compare=False)  # what each run's difference is from
    configs: dict[str, ml_collections.ConfigDict] = dataclasses.field(compare=False)  # each run's, resolved

    def runs(self) -> dict[str, RunSpec]:
        """Every run by key; a cross-validated run's folds each by their own."""
        return {run.key: run for group in self.groups for run in group.runs}

    def rows(self) -> dict[str, tuple[RunSpec, ...]]:
        """Every row ('group/run') of every group and its runs (Group.rows)."""
        return {row: runs for group in self.groups for row, runs in group.rows().items()}


@dataclasses.dataclass(frozen=True)
class Trial:
    """One (run, seed): what --list prints and --run_index selects."""

    index: int
    run: RunSpec
    seed: int

    def workdir(self, root: str) -> str:
        return os.path.join(root, "runs", *self.run.key.split("/"), f"seed{self.seed}")

    def teacher_workdir(self, root: str) -> str | None:
        """The workdir of this trial's teacher: the teacher run's trial of the same seed and fold."""
        if not self.run.teacher:
            return None
        key = f"{self.run.teacher}/{self.run.fold}" if self.run.fold else self.run.teacher
        return os.path.join(root, "runs", *key.split("/"), f"seed{self.seed}")

    def command(self, suite: Suite, root: str) -> list[str]:
        teacher = self.teacher_workdir(root)
        overrides = merge_overrides(
            [
                *suite.overrides,
                *self.run.overrides,
                f"seed={self.seed}",
                *([f"distill.teacher={os.path.abspath(teacher)}"] if teacher else []),
            ]
        )
        return [
            "python",
            "-m",
            "harjax.main",
            f"--config={self.run.config}:{suite.config_variant}",
            f"--workdir={self.workdir(root)}",
            *(CONFIG_OVERRIDE_PREFIX + override for override in overrides),
        ]


def merge_overrides(overrides: Sequence[str]) -> list[str]:
    """One 'key=value' per key, the last given winning, in the order keys first appear.

    The suite's, a run's and the command line's overrides are layered; harjax.main refuses a key given twice (and
    ml_collections would concatenate a repeated tuple).
    """
    merged: dict[str, str] = {}
    for override in overrides:
        key, _, value = override.partition("=")
        merged[key] = value
    return [f"{key}={value}" for key, value in merged.items()]


def merged_command(command: Sequence[str]) -> list[str]:
    """A harjax.main command with its --config.KEY=VALUE overrides merged (merge_overrides)."""
    plain = [argument for argument in command if not argument.startswith(CONFIG_OVERRIDE_PREFIX)]
    overrides = [
        argument[len(CONFIG_OVERRIDE_PREFIX) :] for argument in command if argument.startswith(CONFIG_OVERRIDE_PREFIX)
    ]
    return plain + [CONFIG_OVERRIDE_PREFIX + override for override in merge_overrides(overrides)]


def format_value(value: Any) -> str:
    """A config value as harjax.main's --config.KEY=VALUE parses it back."""
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(format_value(item) for item in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value) if isinstance(value, float) else str(value)


def _overrides(mapping: Any, where: str) -> tuple[str, ...]:
    if not isinstance(mapping, (dict, ml_collections.ConfigDict)):
        raise SuiteError(f"{where}: 'overrides' must map config keys to values, got {mapping!r}")
    items = mapping.items() if isinstance(mapping, dict) else mapping.to_dict().items()
    return tuple(f"{key}={format_value(value)}" for key, value in items)


def _check_keys(found: Any, allowed: set[str], required: set[str], where: str) -> None:
    unknown, missing = sorted(set(found) - allowed), sorted(required - set(found))
    if unknown:
        raise SuiteError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    if missing:
        raise SuiteError(f"{where}: missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")


def resolve_config(config_arg: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """The config harjax.main would build from --config=config_arg and --config.<override> flags."""
    argv = [
        "harjax.main",
        f"--config={config_arg}",
        *(CONFIG_OVERRIDE_PREFIX + override for override in merge_overrides(overrides)),
    ]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def load_suite(config: ml_collections.ConfigDict, path: str, root: str, command_line: Sequence[str]) -> Suite:
    """Checks a suite file, and the command line's overrides against every run's config, before anything runs."""
    raw = config.to_dict()
    _check_keys(raw, SUITE_KEYS, REQUIRED_SUITE_KEYS, path)
    groups, keys = [], set()
    base_overrides = [*_overrides(raw.get("overrides", {}), f"{path}: overrides")]
    if raw.get("shared_data_dir"):
        base_overrides.append(f"data.data_dir={os.path.join(os.path.abspath(root), raw['shared_data_dir'])}")
    base_overrides += list(command_line)
    for entry in raw["groups"]:
        where = f"{path}: group {entry.get('name', '?')!r}"
        _check_keys(entry, GROUP_KEYS, {"name", "runs"}, where)
        runs = []
        for run in entry["runs"]:
            _check_keys(run, RUN_KEYS, {"name"}, f"{where}, run {run.get('name', '?')!r}")
            key = f"{entry['name']}/{run['name']}"  # a run's workdir and report row: one per key
            if key in keys:
                raise SuiteError(f"{path}: run {key!r} is given twice (run names are unique within a group)")
            keys.add(key)
            spec = RunSpec(
                entry["name"],
                run["name"],
                run.get("config", raw["base_config"]),
                _overrides(run.get("overrides", {}), f"{where}, run {run['name']!r}"),
                run.get("reference", raw["reference"]),
                teacher=run.get("teacher", ""),
            )
            runs += _folds(spec, run.get("folds"), f"{where}, run {run['name']!r}")
        groups.append(
            Group(
                entry["name"],
                entry.get("title", entry["name"]),
                tuple(runs),
                tuple(entry.get("shown", ())),
                entry.get("skipped", ""),
                dict(entry.get("excluded", {})),
            )
        )
    base = _resolve(path, "the base config", f"{raw['base_config']}:{raw['config_variant']}", base_overrides)
    configs = {}
    for group in groups:
        for run in group.runs:
            if not group.skipped:
                configs[run.key] = _resolve(
                    path, f"run {run.key}", f"{run.config}:{raw['config_variant']}", [*base_overrides, *run.overrides]
                )
    suite = Suite(
        path,
        raw.get("title", path),
        raw["base_config"],
        raw["config_variant"],
        raw["seeds"],
        raw["reference"],
        tuple(base_overrides),
        tuple(groups),
        base,
        configs,
    )
    known = suite.rows()
    for group in groups:
        for key in [*group.shown, *(run.reference for run in group.runs)]:
            if key not in known:
                raise SuiteError(f"{path}: group {group.name!r} refers to run {key!r}, which the suite does not have")
        for run in group.runs:
            if run.teacher and [teacher.fold for teacher in known.get(run.teacher, ())] != (
                [run.fold for run in group.rows()[run.row]]
            ):
                raise SuiteError(
                    f"{path}: run {run.row!r} names teacher {run.teacher!r}, which the suite does not have with "
                    "the same folds; a teacher is a run of the suite, trained on each fold the student is"
                )
        for row, runs in group.rows().items():
            reference = known[runs[0].reference]
            if runs[0].reference != row and [run.fold for run in reference] != [run.fold for run in runs]:
                raise SuiteError(
                    f"{path}: run {row!r} is compared with {runs[0].reference!r}, which has other folds "
                    f"({[run.fold for run in runs]} against {[run.fold for run in reference]}); a run is compared "
                    "fold by fold or seed by seed"
                )
    return suite


def _folds(spec: RunSpec, folds: Any, where: str) -> list[RunSpec]:
    """The run, or one RunSpec per fold (data.protocol set to the fold) when it is cross-validated."""
    if folds is None:
        return [spec]
    if isinstance(folds, str) or not folds or len(set(folds)) != len(folds):
        raise SuiteError(f"{where}: 'folds' must be a list of distinct data.protocol names, got {folds!r}")
    if any(override.startswith("data.protocol=") for override in spec.overrides):
        raise SuiteError(f"{where}: a cross-validated run sets data.protocol by its 'folds', not in 'overrides'")
    return [
        dataclasses.replace(spec, overrides=(*spec.overrides, f"data.protocol={fold}"), fold=str(fold))
        for fold in folds
    ]


def _resolve(path: str, what: str, config_arg: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    try:
        return resolve_config(config_arg, overrides)
    except Exception as error:  # absl and ml_collections raise several types; each message names the key
        flags_given = " ".join(CONFIG_OVERRIDE_PREFIX + override for override in overrides)
        raise SuiteError(
            f"{path}: {what} (--config={config_arg} {flags_given}): {type(error).__name__}: {error}"
        ) from error


def trials(suite: Suite, seeds: int, only: Sequence[str] | None = None) -> list[Trial]:
    """Every (run, seed) of the groups that run in this variant (those of `only`), in --list order."""
    if seeds < 1:
        raise SuiteError(f"--seeds must be >= 1, got {seeds}")
    if only:
        unknown = sorted(set(only) - {group.name for group in suite.groups})
        if unknown:
            raise SuiteError(
                f"--only names groups {unknown} that {suite.path} does not have "
                f"({', '.join(group.name for group in suite.groups)})"
            )
    runnable = [
        run for group in suite.groups if not group.skipped and (not only or group.name in only) for run in group.runs
    ]
    return [
        Trial(index, run, seed)
        for index, (run, seed) in enumerate((run, seed) for run in runnable for seed in range(seeds))
    ]


def read_status(workdir: str) -> dict[str, Any]:
    """The suite runner's record of a run's workdir, or {'status': 'missing'}."""
    try:
        with open(os.path.join(workdir, STATUS_FILE)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {"status": "missing"}
