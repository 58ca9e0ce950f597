"""Classification scores of a split, the mean losses, and the confusion matrices as JSON reports.

Accuracy, macro-F1 and per-class F1 per example and, where examples are camera views of trials, per trial by the
views' mean logits.

Yields 'loss', 'cross_entropy' (and 'contrastive'), 'accuracy', 'macro_f1' (and 'trial_accuracy',
'trial_macro_f1'); for an ensemble these are its own (the members' mean probabilities), and each member's scores
follow as 'member_<m>/accuracy', 'member_<m>/macro_f1', ... (with a ridge beside a trained model, each family's
as 'trained/...' and 'ridge/...'); writes eval/<name>_step_<step>.json (and
eval/<name>_trial_step_<step>.json): class names, accuracy, macro-F1, per-class F1 and the confusion matrix. Its
macro-F1 is what selects checkpoints (SELECTION_KEY).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import ml_collections
import numpy as np

from harjax.data import batch as batch_lib
from harjax.evaluators import common

SELECTION_KEY = "macro_f1"  # the best checkpoint has the highest macro-F1 of the split that selects
REPORT_DIR = "eval"
_TRIAL = "trial_"  # the per-trial level's key prefix


def applies(config: ml_collections.ConfigDict) -> bool:
    """Every model classifies."""
    return True


def report_path(name: str, step: int, level: str = "") -> str:
    """Where the evaluator `name` writes its report of `step`, relative to the workdir (level 'trial_': per trial)."""
    return os.path.join(REPORT_DIR, f"{name}_{level}step_{step}.json")


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] counts; rows are true classes, columns predictions."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def mean_by_group(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean logits [G, K] and the label [G] of each group (e.g. the camera views of one trial)."""
    unique, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(unique), logits.shape[-1]), np.float64)
    np.add.at(sums, inverse, logits)
    counts = np.bincount(inverse, minlength=len(unique))[:, None]
    group_labels = np.zeros(len(unique), labels.dtype)
    group_labels[inverse] = labels
    return sums / counts, group_labels


def classification_metrics(confusion: np.ndarray) -> dict[str, float | list[float]]:
    """Top-1 accuracy, macro-F1 and per-class F1.

    Macro-F1 averages over classes that occur in the labels or the predictions (as sklearn does): a class a
    dataset declares but never contains does not pull the average to zero. Its per-class F1 is reported as 0.
    """
    true_positives = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    denominator = support + predicted
    per_class_f1 = np.divide(2 * true_positives, denominator, out=np.zeros_like(true_positives), where=denominator > 0)
    present = denominator > 0
    return {
        "accuracy": float(true_positives.sum() / max(confusion.sum(), 1)),
        "macro_f1": float(per_class_f1[present].mean()) if present.any() else 0.0,
        "per_class_f1": per_class_f1.tolist(),
    }


def scores(rows: dict[str, np.ndarray], num_classes: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Accuracy and macro-F1: (scalars, confusion matrix per level: '' and 'trial_').

    Per example and, where examples are views of trials, per trial by the views' mean logits.
    """
    levels = {"": (rows["logits"], rows[batch_lib.LABEL])}
    trials = rows.get(batch_lib.TRIAL)
    if trials is not None and len(np.unique(trials)) < len(trials):  # several camera views per trial
        levels[_TRIAL] = mean_by_group(rows["logits"], rows[batch_lib.LABEL], trials)
    scalars, confusions = {}, {}
    for level, (logits, labels) in levels.items():
        confusions[level] = confusion_matrix(labels, logits.argmax(-1), num_classes)
        report = classification_metrics(confusions[level])
        scalars |= {f"{level}accuracy": report["accuracy"], f"{level}macro_f1": report["macro_f1"]}
    return scalars, confusions


class Evaluator:
    """Scores every example of its split once."""

    def __init__(self, predict_fn: common.PredictFn, context: common.Context):
        self._predict_fn = predict_fn
        self._context = context

    def run(self, state, step: int) -> Iterator[tuple[str, float]]:
        predictions = self._predict_fn(state)
        yield from predictions.losses.items()
        data = self._context.data
        values, confusions = scores(predictions.rows, data.num_classes)
        for level, confusion in confusions.items():
            report = {
                "step": step,
                "split": f"{self._context.name}_{level}".rstrip("_"),
                "class_names": list(data.class_names),
                **classification_metrics(confusion),
                "confusion_matrix": confusion.tolist(),
            }
            common.write_file(
                self._context.workdir, report_path(self._context.name, step, level), json.dumps(report).encode()
            )
        logging.info(
            "step %d: %s accuracy %.4f, macro-F1 %.4f on %d examples",
            step,
            self._context.name,
            values["accuracy"],
            values["macro_f1"],
            len(predictions.rows[batch_lib.LABEL]),
        )
        yield from values.items()
        member_logits = predictions.rows.get("member_logits")  # [N, members, classes]: an ensemble's
        for member in range(0 if member_logits is None else member_logits.shape[1]):
            own, _ = scores({**predictions.rows, "logits": member_logits[:, member]}, data.num_classes)
            yield from ((f"member_{member}/{key}", value) for key, value in own.items())
        family_logits = predictions.rows.get("family_logits")  # [N, 2, classes]: the trained part's, the ridge's
        for index, family in enumerate(() if family_logits is None else ("trained", "ridge")):
            own, _ = scores({**predictions.rows, "logits": family_logits[:, index]}, data.num_classes)
            yield from ((f"{family}/{key}", value) for key, value in own.items())
