"""Builds a recordings manifest's TFDS dataset to array_record (no TensorFlow) and prints its build report.

    python -m data_builders.recordings.build --manifest=M --data_dir=D [--embeddings_dir=E --prompt_set=context
        --embedding=video_mean_last] [--name=recordings] [--leave_subjects_out] [--split_protocol=manifest]
        [--sensor_rate_hz=50 --min_coverage=0.9 --max_gap_periods=5] [--classes=a,b,...]
        [--allow_missing_embeddings] [--replace]

Without --embeddings_dir the dataset has no video (TFDS config 'sensors'). A build records what it read; rerun with
the same inputs it is reused, with others refused naming what changed unless --replace (see `build`). Train on it with
--config.data.source=recordings --config.data.dataset=<name> --config.data.data_dir=D
--config.data.protocol=<one of the report's protocols>. The report (every row skipped, by reason, and what
alignment found per example) is printed and saved as build_report.json next to the dataset.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from absl import flags

from data_builders import extraction
from data_builders.recordings import recordings_dataset_builder
from harjax import cli, errors
from harjax.data import resampling, tfds_format
from harjax.recordings import manifest, sensors
from harjax.video import decoding, extractor as extractor_lib

REPORT = "build_report.json"
# What a TFDS build of this builder writes in its version folder: only such a folder is ever replaced.
_BUILD_FILES = re.compile(
    r"(dataset_info|features|metadata|build_report)\.json|.+\.labels\.txt|.+\.array_record-\d+-of-\d+"
)


def build(
    manifest_path: str,
    data_dir: str,
    embeddings_dir: str | None = None,
    prompt_set: str = "context",
    embedding: str = "video_mean_last",
    name: str = recordings_dataset_builder.Builder.name,
    leave_subjects_out: bool = False,
    split_protocol: str = "manifest",
    sensor_rate_hz: float = tfds_format.DEFAULT_RATE_HZ,
    min_coverage: float = sensors.DEFAULT_MIN_COVERAGE,
    max_gap_periods: float = resampling.DEFAULT_MAX_GAP_PERIODS,
    class_names: Sequence[str] | None = None,
    allow_missing_embeddings: bool = False,
    replace: bool = False,
) -> tuple[str, dict[str, Any]]:
    """(dataset directory, build report): an earlier build of the same inputs is reused, of others refused.

    What a build reads (the manifest's bytes, every sensor file and clip it names, the embeddings, its settings) is
    recorded in its metadata. The same inputs reuse the folder; other inputs are refused, naming what changed,
    unless `replace` (the folder is rebuilt, and the other configs of this name built from other dataset inputs are
    deleted). So one data_dir and name hold builds of one manifest, its files and settings, whatever the configs.
    Rows whose clip has no current embedding are refused unless `allow_missing_embeddings` (built without video).
    """
    _check_settings(embedding, prompt_set, embeddings_dir, sensor_rate_hz, min_coverage, max_gap_periods)
    recordings = manifest.read(manifest_path)
    extraction_dir = os.path.join(embeddings_dir, prompt_set) if embeddings_dir else None
    states = embedding_states(recordings, extraction_dir) if extraction_dir else {}
    settings = {
        "classes": list(class_names) if class_names else None,
        "split_protocol": split_protocol,
        "leave_subjects_out": leave_subjects_out,
        "min_coverage": min_coverage,
        "max_gap_periods": max_gap_periods,
        "builder_version": str(recordings_dataset_builder.Builder.VERSION),
    }
    name_of_config = tfds_format.config_name(prompt_set if embeddings_dir else None, embedding, sensor_rate_hz)
    base = recordings_dataset_builder.Builder.named(name)
    target = os.path.join(data_dir, name, name_of_config, str(base.VERSION))
    stale = _stale_builds(
        os.path.join(data_dir, name), target, manifest_path, recordings, settings, extraction_dir, states
    )
    if stale and not replace:
        raise errors.UserError(
            "; ".join(f"{path} was built from other inputs ({', '.join(changes)})" for path, changes in stale.items())
            + ": pass --replace to rebuild, deleting the builds listed (one data_dir and --name hold builds of one "
            "manifest, its files and settings), or build into another --name or --data_dir"
        )
    for path in stale:
        _check_only_build_files(path)
    config: str | recordings_dataset_builder.RecordingsConfig = name_of_config
    if name_of_config not in base.builder_configs:  # another rate: the predefined config at that rate
        config = recordings_dataset_builder.RecordingsConfig(
            name=name_of_config,
            prompt_set=prompt_set if embeddings_dir else "",
            embedding=embedding,
            sensor_rate_hz=sensor_rate_hz,
        )
    with _replacing(target if target in stale else None):
        builder = base(
            config=config,
            data_dir=data_dir,
            manifest_path=manifest_path,
            embeddings_dir=embeddings_dir,
            class_names=class_names,
            split_protocol=split_protocol,
            leave_subjects_out=leave_subjects_out,
            min_coverage=min_coverage,
            max_gap_periods=max_gap_periods,
            embedding_states=states,
            allow_missing_embeddings=allow_missing_embeddings,
            inputs=None
            if os.path.isdir(target)
            else _inputs(manifest_path, recordings, settings, extraction_dir, states),
            file_format="array_record",
        )
        builder.download_and_prepare()  # an existing build of the same inputs is reused
    for path in stale:
        if path != target:
            shutil.rmtree(path)  # a build of the old inputs beside the new one
    report = dict(builder.info.metadata["build_report"])
    report["protocols"] = list(builder.info.metadata["protocols"])
    report["examples_per_split"] = {split: info.num_examples for split, info in builder.info.splits.items()}
    with open(os.path.join(builder.data_dir, REPORT), "w") as f:
        json.dump(report, f, indent=1)
    return os.fspath(builder.data_dir), report


def _check_settings(
    embedding: str,
    prompt_set: str,
    embeddings_dir: str | None,
    sensor_rate_hz: float,
    min_coverage: float,
    max_gap_periods: float,
) -> None:
    """The flags, checked before any row is read."""
    if not 0 < min_coverage <= 1:
        raise errors.ConfigError(f"--min_coverage must be in (0, 1], got {min_coverage}")
    if not sensor_rate_hz > 0:
        raise errors.ConfigError(f"--sensor_rate_hz must be positive, got {sensor_rate_hz}")
    if not max_gap_periods > 1:
        raise errors.ConfigError(f"--max_gap_periods must be > 1 (sample periods), got {max_gap_periods}")
    if embedding not in extractor_lib.EMBEDDING_KINDS:
        raise errors.ConfigError(f"--embedding must be one of {extractor_lib.EMBEDDING_KINDS}, got {embedding!r}")
    learned = prompt_set.startswith(tfds_format.LEARNED_PREFIX)
    if embeddings_dir and prompt_set not in manifest.PROMPT_SETS and not learned:
        raise errors.ConfigError(
            f"--prompt_set must be one of {manifest.PROMPT_SETS} or {tfds_format.LEARNED_PREFIX}<protocol> "
            f"(a learned prompt's extraction), got {prompt_set!r}"
        )


def embedding_states(recordings: Sequence[manifest.Recording], extraction_dir: str) -> dict[str, tuple[str, str]]:
    """Row id -> (state, detail) of each clip's embedding: extraction.stored_state, or 'undecodable'.

    'undecodable': the extraction recorded that the clip, as it is now, cannot be decoded (a clip changed since it
    failed is 'missing').
    """
    jobs = manifest.clip_jobs(recordings, extraction.base_prompt_set(extraction.read_metadata(extraction_dir)))
    failed = extraction.undecodable(extraction_dir, jobs)
    states = {}
    for job in jobs:
        state, detail = extraction.stored_state(extraction_dir, job)
        states[job.name] = (
            ("undecodable", "recorded as undecodable") if state == "missing" and job.name in failed else (state, detail)
        )
    return states


def _files(recordings: Sequence[manifest.Recording]) -> list[str]:
    """Every sensor file and clip the rows name (a clip's length sets the grid of a row without clip_end_s)."""
    paths = {sensor.path for recording in recordings for sensor in recording.sensors}
    return sorted(paths | {recording.clip for recording in recordings if recording.clip is not None})


def _identity(path: str) -> dict[str, Any] | None:
    return decoding.file_identity(path) if os.path.isfile(path) else None


def _manifest_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _inputs(
    manifest_path: str,
    recordings: Sequence[manifest.Recording],
    settings: dict[str, Any],
    extraction_dir: str | None,
    states: dict[str, tuple[str, str]],
) -> dict[str, Any]:
    """Everything a build reads, recorded in its metadata: what a later build compares (_changes)."""
    inputs = {
        "manifest": {"path": os.path.abspath(manifest_path), "sha256": _manifest_sha256(manifest_path)},
        "settings": settings,
        "files": {path: _identity(path) for path in _files(recordings)},
        "embeddings": None,
    }
    if extraction_dir is not None:
        inputs["embeddings"] = {
            "metadata": extraction.read_metadata(extraction_dir),
            "rows": {
                identifier: {"state": state, "file": _identity(os.path.join(extraction_dir, identifier + ".npz"))}
                for identifier, (state, _) in states.items()
            },
        }
    return inputs


def _changes(
    recorded: dict[str, Any] | None,
    manifest_path: str,
    recordings: Sequence[manifest.Recording],
    settings: dict[str, Any],
    extraction_dir: str | None,
    states: dict[str, tuple[str, str]] | None,
) -> list[str]:
    """What differs between a build's recorded inputs and the current ones (with `states`, the embeddings too).

    Files are compared as decoding.same_file does, so an untouched file costs a stat.
    """
    if recorded is None:
        return ["it was built before builds recorded their inputs"]
    changes = []
    sha256 = _manifest_sha256(manifest_path)
    if recorded["manifest"]["sha256"] != sha256:
        changes.append(f"the manifest (sha256 {recorded['manifest']['sha256'][:16]}, now {sha256[:16]})")
    changes += [
        f"{key} {recorded['settings'].get(key)!r} -> {value!r}"
        for key, value in settings.items()
        if recorded["settings"].get(key) != value
    ]
    files = {path: _unchanged(path, recorded["files"].get(path, False)) for path in _files(recordings)}
    different = sorted(path for path, same in files.items() if not same) + sorted(set(recorded["files"]) - set(files))
    if different:
        changes.append(f"{len(different)} sensor files or clips ({_first(different)})")
    if states is None:
        return changes
    embeddings = recorded["embeddings"]
    if embeddings is None or extraction_dir is None:
        return changes + ([] if embeddings is None and extraction_dir is None else ["the embeddings folder"])
    if embeddings["metadata"] != extraction.read_metadata(extraction_dir):
        changes.append(f"{os.path.join(extraction_dir, extraction.METADATA)}")
    rows = embeddings["rows"]
    different = sorted(
        identifier
        for identifier, (state, _) in states.items()
        if identifier not in rows
        or rows[identifier]["state"] != state
        or not _unchanged(os.path.join(extraction_dir, identifier + ".npz"), rows[identifier]["file"])
    ) + sorted(set(rows) - set(states))
    if different:
        changes.append(f"the embeddings of {len(different)} rows ({_first(different)})")
    return changes


def _first(names: Sequence[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _unchanged(path: str, recorded: dict[str, Any] | None | bool) -> bool:
    """Whether `path` is as recorded (None: it did not exist; False: it was not recorded)."""
    if recorded is False:
        return False
    if recorded is None:
        return not os.path.isfile(path)
    return decoding.same_file(path, recorded)


def _stale_builds(
    dataset_dir: str,
    target: str,
    manifest_path: str,
    recordings: Sequence[manifest.Recording],
    settings: dict[str, Any],
    extraction_dir: str | None,
    states: dict[str, tuple[str, str]],
) -> dict[str, list[str]]:
    """{version folder: what changed} of the builds under data_dir/name that these inputs may not reuse or sit beside.

    The target itself when any input differs; every other config's build whose dataset inputs (manifest, files,
    settings) differ.
    """
    stale = {}
    for config in sorted(os.listdir(dataset_dir)) if os.path.isdir(dataset_dir) else []:
        config_dir = os.path.join(dataset_dir, config)
        if config.startswith(".") or not os.path.isdir(config_dir):
            continue
        for version in sorted(os.listdir(config_dir)):
            path = os.path.join(config_dir, version)
            metadata_path = os.path.join(path, "metadata.json")
            if not version[:1].isdigit() or not os.path.exists(metadata_path):
                continue
            with open(metadata_path) as f:
                recorded = json.load(f).get("inputs")
            own = path == target
            changes = _changes(
                recorded, manifest_path, recordings, settings, extraction_dir if own else None, states if own else None
            )
            if changes:
                stale[path] = changes
    return stale


def _check_only_build_files(path: str) -> None:
    """A build folder about to be replaced holds only what a build writes: a user's file in it is refused by name."""
    foreign = sorted(entry for entry in os.listdir(path) if not _BUILD_FILES.fullmatch(entry))
    if foreign:
        raise errors.UserError(f"{path} holds files no build wrote ({', '.join(foreign[:5])}): move them first")


class _replacing:
    """Moves an earlier build aside while its replacement is built: deleted after success, put back after failure."""

    def __init__(self, path: str | None):
        self.path, self.aside = path, None

    def __enter__(self) -> None:
        if self.path is None:
            return
        self.aside = tempfile.mkdtemp(dir=os.path.dirname(self.path), prefix=".replaced-")
        os.replace(self.path, os.path.join(self.aside, "build"))

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if self.aside is None:
            return
        if kind is not None and not os.path.exists(self.path):
            os.replace(os.path.join(self.aside, "build"), self.path)
        shutil.rmtree(self.aside)


def print_report(directory: str, report: dict[str, Any]) -> None:
    """The counts, the protocols, and every skipped row with its reason."""
    print(f"built {directory}")
    for key, value in report.items():
        if not isinstance(value, dict | list):
            print(f"  {key}: {value}")
    print(f"  protocols: {', '.join(report['protocols'])}")
    print(f"  alignment (all examples): {report['alignment_totals'] or 'nothing to repair'}")
    for reason, rows in report["skipped"].items():
        for row in rows:
            print(f"  skipped row {row['row']} ({row['id']}), {reason}: {row['detail']}")
    for row in report.get("without_embedding", []):
        print(f"  without video: row {row['row']} ({row['id']}), {row['reason']}: {row['detail']}")
    for protocol, channels in report.get("constant_channels", {}).items():
        floor = tfds_format.STD_FLOOR
        print(f"  constant over {protocol}'s training split (standardised with std {floor}): {', '.join(channels)}")


@functools.cache
def define_flags() -> None:
    """The command's flags, defined once (cached) when it runs: this module is a library too, never defining flags.

    Its importers (the UTD-MHAD build, its demo, which harjax.main runs, the benchmarks) have flags of these names,
    and absl's flags are process-wide.
    """
    flags.DEFINE_string("manifest", None, "a recordings manifest (.csv or .jsonl)", required=True)
    flags.DEFINE_string("data_dir", None, "TFDS data_dir to build into", required=True)
    flags.DEFINE_string("embeddings_dir", None, "--output_dir of extract_embeddings (none: no video)")
    flags.DEFINE_string("prompt_set", "context", "plain, context, or learned_<protocol>")
    flags.DEFINE_enum("embedding", "video_mean_last", extractor_lib.EMBEDDING_KINDS, "which stored embedding")
    flags.DEFINE_string("name", recordings_dataset_builder.Builder.name, "the dataset's name")
    flags.DEFINE_bool("leave_subjects_out", False, "add one fold per subject: loso_s<N>")
    flags.DEFINE_string("split_protocol", "manifest", "the name of the 'split' column's protocol")
    flags.DEFINE_float(
        "sensor_rate_hz", tfds_format.DEFAULT_RATE_HZ, "the rate every example's sensors are resampled to (Hz)"
    )
    flags.DEFINE_float(
        "min_coverage",
        sensors.DEFAULT_MIN_COVERAGE,
        "an example whose recorded steps cover less of its grid is refused",
    )
    flags.DEFINE_float(
        "max_gap_periods",
        resampling.DEFAULT_MAX_GAP_PERIODS,
        "a longer gap (in sample periods) is masked, a shorter one interpolated",
    )
    flags.DEFINE_list("classes", None, "class names in label order (default: the labels, sorted)")
    flags.DEFINE_bool(
        "allow_missing_embeddings",
        False,
        "build rows whose clip has no current embedding (never extracted, or from other inputs) without video",
    )
    flags.DEFINE_bool(
        "replace",
        False,
        "rebuild a build of other inputs, deleting the builds of this name made from other dataset inputs",
    )


def main(argv: list[str]) -> None:
    """Builds the TFDS dataset from the command line (define_flags first)."""
    del argv
    args = flags.FLAGS  # define_flags' values
    directory, report = build(
        args.manifest,
        args.data_dir,
        args.embeddings_dir,
        args.prompt_set,
        args.embedding,
        args.name,
        args.leave_subjects_out,
        args.split_protocol,
        args.sensor_rate_hz,
        args.min_coverage,
        args.max_gap_periods,
        args.classes or None,
        args.allow_missing_embeddings,
        args.replace,
    )
    print_report(directory, report)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
