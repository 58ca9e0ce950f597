"""Classification metrics from a confusion matrix, and the writers of metrics.jsonl and TensorBoard events."""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np
import tensorboardX

METRICS_FILE = "metrics.jsonl"


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """[num_classes, num_classes] counts; rows are true classes, columns predictions."""
    weights = np.ones_like(labels) if weights is None else weights
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), weights.astype(np.int64))
    return matrix


def classification_metrics(confusion: np.ndarray) -> dict[str, float | list[float]]:
    """Top-1 accuracy, macro-F1 and per-class F1.

    Macro-F1 averages over classes that occur in the labels or the predictions (as sklearn does): a class a
    dataset declares but never contains does not pull the average to zero. Its per-class F1 is reported as 0.
    """
    true_positives = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    denominator = support + predicted
    per_class_f1 = np.divide(2 * true_positives, denominator, out=np.zeros_like(true_positives),
                             where=denominator > 0)
    present = denominator > 0
    return {
        "accuracy": float(true_positives.sum() / max(confusion.sum(), 1)),
        "macro_f1": float(per_class_f1[present].mean()) if present.any() else 0.0,
        "per_class_f1": per_class_f1.tolist(),
    }


class MetricWriter:
    """Appends scalars to metrics.jsonl and TensorBoard; writes only on the process given enabled=True."""

    def __init__(self, workdir: str, enabled: bool):
        self._enabled = enabled
        self._path = os.path.join(workdir, METRICS_FILE)
        self._tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard")) if enabled else None

    def truncate_after(self, step: int) -> None:
        """Drops lines logged after `step` by a run that died before its next checkpoint; the resumed run
        logs those steps again, so the file reads as if the run had never stopped."""
        if not self._enabled or not os.path.exists(self._path):
            return
        with open(self._path) as f:
            kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self._path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(self._path + ".tmp", self._path)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self._enabled:
            return
        with open(self._path, "a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        for name, value in scalars.items():
            self._tensorboard.add_scalar(name, float(value), step)
        self._tensorboard.flush()

    def write_evaluation_report(self, step: int, split: str, confusion: np.ndarray, class_names: Sequence[str],
                                metrics: Mapping[str, object]) -> None:
        """The confusion matrix and per-class F1 of one evaluation, as JSON in workdir/eval/."""
        if not self._enabled:
            return
        directory = os.path.join(os.path.dirname(self._path), "eval")
        os.makedirs(directory, exist_ok=True)
        report = {"step": step, "split": split, "class_names": list(class_names), **metrics,
                  "confusion_matrix": confusion.tolist()}
        with open(os.path.join(directory, f"{split}_step_{step}.json"), "w") as f:
            json.dump(report, f)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
