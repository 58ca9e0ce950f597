"""Builds the MMAct TFDS dataset to array_record (no TensorFlow) and prints its build report.

    python -m data_builders.mmact.build --manual_dir=M --embeddings_dir=E --data_dir=D [--config=NAME]

The report (every repair and skip, by reason) is printed and saved as build_report.json next to the dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

import tensorflow_datasets as tfds

from data_builders.mmact import mmact_dataset_builder

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
        builder_config = dataclasses.replace(base, name=f"{config}-{sensor_rate_hz:g}hz", sensor_rate_hz=sensor_rate_hz)
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


def main() -> None:
    """Builds the TFDS dataset from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manual_dir", required=True, help="the MMAct release")
    parser.add_argument("--embeddings_dir", required=True, help="--output_dir of extract_embeddings")
    parser.add_argument("--data_dir", required=True, help="TFDS data_dir to build into")
    parser.add_argument(
        "--config",
        default=mmact_dataset_builder.Builder.DEFAULT_CONFIG_NAME,
        choices=[config.name for config in mmact_dataset_builder.Builder.BUILDER_CONFIGS],
    )
    parser.add_argument("--video_root", default=None, help="the clips' folder under manual_dir (auto-detected)")
    parser.add_argument(
        "--sensor_rate_hz",
        type=float,
        default=None,
        help="resample sensors to this rate instead of 50 Hz (config name gets '-<rate>hz')",
    )
    args = parser.parse_args()
    directory, report = build(
        args.manual_dir, args.embeddings_dir, args.data_dir, args.config, args.video_root, args.sensor_rate_hz
    )
    print(f"built {directory}")
    for reason, count in report.items():
        print(f"  {reason}: {count}")


if __name__ == "__main__":
    main()
