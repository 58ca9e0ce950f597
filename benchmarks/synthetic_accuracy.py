"""Times the main job on the synthetic source and tabulates eval accuracy / macro-F1 per baseline and ablation.

    python benchmarks/synthetic_accuracy.py                      # the README's main job (configs/full.py)
    python benchmarks/synthetic_accuracy.py --configs=all        # every baseline and ablation

Each config runs as the user would run it, `python -m harjax.main --config=configs/NAME.py:synthetic`, in a fresh
workdir. Prints a table and, last, one JSON line. Target (issue 2): full reaches eval accuracy >= 0.95 in under
5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import flags  # noqa: E402

from harjax import cli  # noqa: E402

ALL = [
    "full",
    "video_only",
    "sensor_only",
    "concat_fusion",
    "late_fusion",
    "no_attention",
    "no_transformer",
    "no_contrastive",
]

_CONFIGS = flags.DEFINE_list("configs", "full", "comma-separated config names, or 'all'")
flags.register_validator(
    "configs",
    lambda names: names == ["all"] or all(os.path.isfile(f"{REPO}/configs/{name}.py") for name in names),
    "--configs: expected 'all' or comma-separated names of configs/<name>.py",
)


def run(name: str, workdir: str) -> dict:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "harjax.main", f"--config=configs/{name}.py:synthetic", f"--workdir={workdir}"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        final = [json.loads(line) for line in f if "eval/accuracy" in line][-1]
    return {
        "config": name,
        "seconds": round(seconds, 1),
        "step": final["step"],
        "eval_accuracy": round(final["eval/accuracy"], 4),
        "eval_macro_f1": round(final["eval/macro_f1"], 4),
    }


def main(argv: list[str]) -> None:
    del argv
    names = ALL if _CONFIGS.value == ["all"] else _CONFIGS.value
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name in names:
            rows.append(run(name, os.path.join(root, name)))
            row = rows[-1]
            print(
                f"{row['config']:<16} {row['eval_accuracy']:>8.4f} {row['eval_macro_f1']:>9.4f} "
                f"{row['seconds']:>8.1f}s",
                flush=True,
            )
    print(json.dumps({"benchmark": "synthetic_accuracy", "cpu_count": os.cpu_count(), "results": rows}))


if __name__ == "__main__":
    cli.run(main)
