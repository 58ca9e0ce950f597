"""Classification metrics from a confusion matrix, and the writers of metrics.jsonl and TensorBoard events."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping, Sequence

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"


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
    per_class_f1 = np.divide(2 * true_positives, denominator, out=np.zeros_like(true_positives),
                             where=denominator > 0)
    present = denominator > 0
    return {
        "accuracy": float(true_positives.sum() / max(confusion.sum(), 1)),
        "macro_f1": float(per_class_f1[present].mean()) if present.any() else 0.0,
        "per_class_f1": per_class_f1.tolist(),
    }


RECALL_AT = (1, 5, 10)


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def retrieval_recalls(video: np.ndarray, sensor: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """Cross-modal Recall@1/5/10 by cosine similarity, video-to-sensor (v2s) and sensor-to-video (s2v).

    video, sensor [N, D]: example i pairs video i with sensor i. Where examples are views of one recording
    (`groups`: equal ids share their sensor data, e.g. the cameras of an MMAct trial), each recording is one sensor
    candidate: a view's query hits when its recording is in the top k, and a recording's query hits when any of
    its views is (as image-text retrieval counts any caption of an image). Ties count against the query, so a
    collapsed embedding scores chance, not 1.
    """
    video, sensor = _unit(video), _unit(sensor)
    groups = np.arange(len(video)) if groups is None else groups
    _, first, owner = np.unique(groups, return_index=True, return_inverse=True)  # owner [N]: each view's recording
    recordings = len(first)
    similarity = video @ sensor[first].T  # [N videos, G recordings]
    correct = similarity[np.arange(len(video)), owner]  # [N]
    wrong = np.arange(recordings)[None, :] != owner[:, None]  # [N, G]
    v2s_rank = ((similarity >= correct[:, None]) & wrong).sum(axis=1)
    best = np.full(recordings, -np.inf)
    np.maximum.at(best, owner, correct)  # each recording's most similar own view
    s2v_rank = ((similarity.T >= best[:, None]) & wrong.T).sum(axis=1)  # [G]
    return {f"retrieval_{direction}_r{k}": float(np.mean(rank < k))
            for direction, rank in (("v2s", v2s_rank), ("s2v", s2v_rank)) for k in RECALL_AT}


class TrainMetricWindow:
    """Running sums of per-step train metrics between two log lines.

    Device values are fetched only when folded in, so steps stay asynchronous. Skipped (non-finite) steps are
    kept out of the averages. The state is checkpointed, so a run resumed mid-window logs the same averages.
    """

    def __init__(self):
        self._pending: list[dict[str, jax.Array]] = []
        self._sums: dict[str, float] = {}
        self._count = 0

    def add(self, step_metrics: Mapping[str, jax.Array]) -> None:
        self._pending.append(dict(step_metrics))

    def _fold(self) -> None:
        for step_metrics in jax.device_get(self._pending):
            if step_metrics.pop("finite"):
                for name, value in step_metrics.items():
                    self._sums[name] = self._sums.get(name, 0.0) + float(value)
                self._count += 1
        self._pending.clear()

    def pop_means(self) -> dict[str, float]:
        """The window's averages (empty if every step in it was skipped); starts a new window."""
        self._fold()
        means = {name: total / self._count for name, total in self._sums.items()}
        self._sums, self._count = {}, 0
        return means

    def state(self) -> dict[str, Any]:
        self._fold()
        return {"sums": dict(self._sums), "count": self._count}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._pending, self._sums, self._count = [], dict(state["sums"]), int(state["count"])


def _summary_writer(directory: str) -> Any:
    """tensorboardX's SummaryWriter. tensorboardX imports PyTorch whenever it is installed, only to accept torch
    tensors, which costs every harjax process 2-3 s at start where the extractor's extra is installed; harjax logs
    floats, so torch is hidden from that import (a later `import torch` is unaffected)."""
    hidden = "torch" not in sys.modules
    if hidden:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX expects
    try:
        import tensorboardX
    finally:
        if hidden:
            del sys.modules["torch"]
    return tensorboardX.SummaryWriter(directory)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The records of workdir/metrics.jsonl ([] before the first); a line being written (or left half-written by a
    killed run, whose resume logs that step again) is not a record yet."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class MetricWriter:
    """Appends scalars to metrics.jsonl and TensorBoard; writes only on the process given enabled=True."""

    def __init__(self, workdir: str, enabled: bool):
        self._enabled = enabled
        self._path = os.path.join(workdir, METRICS_FILE)
        self._tensorboard = _summary_writer(os.path.join(workdir, "tensorboard")) if enabled else None

    def truncate_after(self, step: int) -> None:
        """Drops lines logged after `step` by a run that died before its next checkpoint; the resumed run
        logs those steps again, so the file reads as if the run had never stopped."""
        if not self._enabled or not os.path.exists(self._path):
            return
        kept = [record for record in read_metrics(os.path.dirname(self._path)) if record["step"] <= step]
        with open(self._path + ".tmp", "w") as f:
            f.writelines(json.dumps(record) + "\n" for record in kept)
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
