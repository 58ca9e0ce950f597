"""What a workdir records about each run: config.json (the resolved config, code and data versions) and runs.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import time

import jax
import ml_collections

import harjax
from harjax.data import batch as batch_lib

CONFIG_FILE = "config.json"
RUNS_FILE = "runs.jsonl"


def code_version() -> str:
    """The git commit of the harjax checkout (with '+dirty' for uncommitted changes), or 'unknown'."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def write_run_config(
    workdir: str,
    config: ml_collections.ConfigDict,
    splits: dict[str, batch_lib.Split],
    start_step: int,
    data_cache: str,
    selection_metric: str,
) -> None:
    """config.json: what reproduces the run; every start (first or resumed) is also appended to runs.jsonl.

    `splits` maps 'train', 'eval' and, when held out, 'validation' to their data.
    """
    train = splits["train"]
    record = {
        "config": config.to_dict(),
        "seed": config.seed,
        "data_cache": data_cache,
        "selection_metric": selection_metric,  # what the best checkpoint is ranked by
        "harjax_version": harjax.__version__,
        "git_commit": code_version(),
        "jax_version": jax.__version__,
        "start_step": start_step,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "data": {
            split: {
                "origin": data.origin,
                "fingerprint": data.fingerprint,
                "examples": len(data),
                "num_classes": data.num_classes,
                "shapes": {name: shape for name, (shape, _) in data.example_spec.items()},
                "report": dict(data.report),
            }
            for split, data in splits.items()
        },
        # What using the trained model on new data needs (harjax.export puts it in the bundle):
        "inputs": {
            "class_names": list(train.class_names),
            "channel_names": list(train.channel_names),
            "sampling_rate_hz": train.sampling_rate_hz,
            "normalization": dict(train.normalization),
            "video_source": dict(train.video_source),
        },
    }
    text = json.dumps(record, default=str)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        json.dump(json.loads(text), f, indent=2)
    with open(os.path.join(workdir, RUNS_FILE), "a") as f:
        f.write(text + "\n")
