"""Builds a recordings manifest's TFDS dataset to array_record (no TensorFlow) and prints its build report.

    python -m data_builders.recordings.build --manifest=M --data_dir=D [--embeddings_dir=E --prompt_set=context
        --embedding=video_mean_last] [--name=recordings] [--leave_subjects_out] [--split_protocol=manifest]
        [--sensor_rate_hz=50 --min_coverage=0.9 --max_gap_periods=5] [--classes=a,b,...]

Without --embeddings_dir the dataset has no video (TFDS config 'sensors'). Train on it with
--config.data.source=recordings --config.data.dataset=<name> --config.data.data_dir=D
--config.data.protocol=<one of the report's protocols>. The report (every row skipped, by reason, and what
alignment found per example) is printed and saved as build_report.json next to the dataset.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from data_builders import extraction, soft_prompt
from data_builders.recordings import extract_embeddings, recordings_dataset_builder, sensors
from harjax import cli, errors
from harjax.data import resampling

REPORT = "build_report.json"


def build(
    manifest_path: str,
    data_dir: str,
    embeddings_dir: str | None = None,
    prompt_set: str = "context",
    embedding: str = "video_mean_last",
    name: str = recordings_dataset_builder.Builder.name,
    leave_subjects_out: bool = False,
    split_protocol: str = "manifest",
    sensor_rate_hz: float = sensors.DEFAULT_RATE_HZ,
    min_coverage: float = sensors.DEFAULT_MIN_COVERAGE,
    max_gap_periods: float = resampling.DEFAULT_MAX_GAP_PERIODS,
    class_names: Sequence[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """(dataset directory, build report)."""
    if not 0 < min_coverage <= 1:
        raise errors.ConfigError(f"--min_coverage must be in (0, 1], got {min_coverage}")
    if embedding not in extraction.EMBEDDING_KINDS:
        raise errors.ConfigError(f"--embedding must be one of {extraction.EMBEDDING_KINDS}, got {embedding!r}")
    learned = prompt_set.startswith(soft_prompt.PREFIX)
    if embeddings_dir and prompt_set not in extract_embeddings.PROMPT_SETS and not learned:
        raise errors.ConfigError(
            f"--prompt_set must be one of {extract_embeddings.PROMPT_SETS} or {soft_prompt.PREFIX}<protocol> "
            f"(a learned prompt's extraction), got {prompt_set!r}"
        )
    base = recordings_dataset_builder.Builder
    name_of_config = recordings_dataset_builder.config_name(
        prompt_set if embeddings_dir else None, embedding, sensor_rate_hz
    )
    config: str | recordings_dataset_builder.RecordingsConfig = name_of_config
    if name_of_config not in base.builder_configs:  # another rate: the predefined config at that rate
        config = recordings_dataset_builder.RecordingsConfig(
            name=name_of_config,
            prompt_set=prompt_set if embeddings_dir else "",
            embedding=embedding,
            sensor_rate_hz=sensor_rate_hz,
        )
    builder = base.named(name)(
        config=config,
        data_dir=data_dir,
        manifest_path=manifest_path,
        embeddings_dir=embeddings_dir,
        class_names=class_names,
        split_protocol=split_protocol,
        leave_subjects_out=leave_subjects_out,
        min_coverage=min_coverage,
        max_gap_periods=max_gap_periods,
        file_format="array_record",
    )
    _refuse_another_manifest(os.fspath(builder.data_dir), manifest_path)
    builder.download_and_prepare()  # an existing build of this manifest is reused
    report = dict(builder.info.metadata["build_report"])
    report["protocols"] = list(builder.info.metadata["protocols"])
    report["examples_per_split"] = {split: info.num_examples for split, info in builder.info.splits.items()}
    with open(os.path.join(builder.data_dir, REPORT), "w") as f:
        json.dump(report, f, indent=1)
    return os.fspath(builder.data_dir), report


def _refuse_another_manifest(directory: str, manifest_path: str) -> None:
    """A dataset already built from another version of the manifest is neither reused nor replaced."""
    path = os.path.join(directory, "metadata.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        built = json.load(f).get("manifest", {}).get("sha256")
    with open(manifest_path, "rb") as f:
        current = hashlib.sha256(f.read()).hexdigest()[:16]
    if built != current:
        raise errors.UserError(
            f"{directory} was built from another version of {manifest_path} (sha256 {built}, now {current}); build "
            "into another --data_dir or --name, or delete that folder yourself"
        )


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


def main(argv: list[str]) -> None:
    """Builds the TFDS dataset from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="a recordings manifest (.csv or .jsonl)")
    parser.add_argument("--data_dir", required=True, help="TFDS data_dir to build into")
    parser.add_argument("--embeddings_dir", default=None, help="--output_dir of extract_embeddings (none: no video)")
    parser.add_argument("--prompt_set", default="context", help="plain, context, or learned_<protocol>")
    parser.add_argument("--embedding", default="video_mean_last", choices=extraction.EMBEDDING_KINDS)
    parser.add_argument("--name", default=recordings_dataset_builder.Builder.name, help="the dataset's name")
    parser.add_argument("--leave_subjects_out", action="store_true", help="add one fold per subject: loso_s<N>")
    parser.add_argument("--split_protocol", default="manifest", help="the name of the 'split' column's protocol")
    parser.add_argument("--sensor_rate_hz", type=float, default=sensors.DEFAULT_RATE_HZ)
    parser.add_argument("--min_coverage", type=float, default=sensors.DEFAULT_MIN_COVERAGE)
    parser.add_argument("--max_gap_periods", type=float, default=resampling.DEFAULT_MAX_GAP_PERIODS)
    parser.add_argument("--classes", default=None, help="class names in label order (default: the labels, sorted)")
    args = parser.parse_args(argv[1:])
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
        args.classes.split(",") if args.classes else None,
    )
    print_report(directory, report)


if __name__ == "__main__":
    cli.run(main, parser=cli.own_arguments)
