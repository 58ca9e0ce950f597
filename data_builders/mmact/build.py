"""Builds the MMAct TFDS dataset to array_record (no TensorFlow) and prints its build report.

    python -m data_builders.mmact.build --manual_dir=M --embeddings_dir=E --data_dir=D [--config=NAME]

The report (every repair and skip, by reason) is printed and saved as build_report.json next to the dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import tensorflow_datasets as tfds
from absl import flags

from data_builders.mmact import mmact_dataset_builder
from harjax.data import tfds_format

REPORT = "build_report.json"


def build(
    manual_dir: str,
    embeddings_dir: str,
    data_dir: str,
    config: str = mmact_dataset_builder.Builder.DEFAULT_CONFIG_NAME,
    video_root: str | None = None,
    sensor_rate_hz: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """(dataset directory, build report). Another sensor rate builds the config '<config>-<rate>hz'."""
    builder_config: str | mmact_dataset_builder.MMActConfig = config
    if sensor_rate_hz is not None:
        base = mmact_dataset_builder.Builder.builder_configs[config]
        name = tfds_format.at_rate(config, sensor_rate_hz)
        builder_config = dataclasses.replace(base, name=name, sensor_rate_hz=sensor_rate_hz)
    builder = mmact_dataset_builder.Builder(
        config=builder_config,
        data_dir=data_dir,
        embeddings_dir=embeddings_dir,
        video_root=video_root,
        file_format="array_record",
    )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    report = dict(builder.info.metadata["build_report"])
    report["examples"] = {split: info.num_examples for split, info in builder.info.splits.items()}
    with open(os.path.join(builder.data_dir, REPORT), "w") as f:
        json.dump(report, f, indent=1)
    return os.fspath(builder.data_dir), report


@functools.cache
def define_flags() -> None:
    """The command's flags, defined once (cached) when it runs: this module is a library too, never defining flags.

    Its importers (the MMAct demo, which harjax.main runs) have flags of these names, and absl's flags are
    process-wide.
    """
    flags.DEFINE_string("manual_dir", None, "the MMAct release", required=True)
    flags.DEFINE_string("embeddings_dir", None, "--output_dir of extract_embeddings", required=True)
    flags.DEFINE_string("data_dir", None, "TFDS data_dir to build into", required=True)
    flags.DEFINE_enum(
        "config",
        mmact_dataset_builder.Builder.DEFAULT_CONFIG_NAME,
        [config.name for config in mmact_dataset_builder.Builder.BUILDER_CONFIGS],
        "the TFDS config to build (data_builders/mmact/mmact_dataset_builder.py)",
    )
    flags.DEFINE_string("video_root", None, "the clips' folder under manual_dir (auto-detected)")
    flags.DEFINE_float(
        "sensor_rate_hz", None, "resample sensors to this rate instead of 50 Hz (config name gets '-<rate>hz')"
    )


def main(argv: list[str]) -> None:
    """Builds the TFDS dataset from the command line (define_flags first)."""
    del argv
    args = flags.FLAGS  # define_flags' values
    directory, report = build(
        args.manual_dir, args.embeddings_dir, args.data_dir, args.config, args.video_root, args.sensor_rate_hz
    )
    print(f"built {directory}")
    for reason, count in report.items():
        print(f"  {reason}: {count}")


if __name__ == "__main__":
    from harjax import cli

    define_flags()
    cli.run(main)
