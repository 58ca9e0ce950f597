"""What a run logs: the train metrics between log lines, and the writers of its files and TensorBoard events.

metrics.jsonl holds what a run computes (losses, scores, counts): on CPU a function of the config, seed and data,
so a resumed or multi-process run writes it line for line as one uninterrupted run would. perf.jsonl, beside it,
holds wall-clock figures (keys 'perf/...': throughput, time per evaluator), which differ between any two runs;
TensorBoard gets both.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import jax

METRICS_FILE = "metrics.jsonl"
PERF_FILE = "perf.jsonl"
PERF_PREFIX = "perf/"


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
    """tensorboardX's SummaryWriter, imported without PyTorch.

    tensorboardX imports PyTorch whenever it is installed, only to accept torch tensors, which costs every harjax
    process 2-3 s at start where the extractor's extra is installed; harjax logs floats, so torch is hidden from that
    import (a later `import torch` is unaffected).
    """
    hidden = "torch" not in sys.modules
    if hidden:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX expects
    try:
        import tensorboardX
    finally:
        if hidden:
            del sys.modules["torch"]
    return tensorboardX.SummaryWriter(directory)


def read_metrics(workdir: str, name: str = METRICS_FILE) -> list[dict[str, Any]]:
    """The records of workdir/metrics.jsonl (or `name`; [] before the first).

    A line being written, or left half-written by a killed run whose resume logs that step again, is not a record
    yet.
    """
    path = os.path.join(workdir, name)
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
    """Appends scalars to metrics.jsonl or perf.jsonl (by their key) and to TensorBoard, on process 0 only."""

    def __init__(self, workdir: str, enabled: bool):
        self._workdir = workdir
        self._enabled = enabled
        self._tensorboard = _summary_writer(os.path.join(workdir, "tensorboard")) if enabled else None

    def truncate_after(self, step: int) -> None:
        """Drops lines logged after `step` by a run that died before its next checkpoint.

        The resumed run logs those steps again, so each file reads as if the run had never stopped.
        """
        if not self._enabled:
            return
        for name in (METRICS_FILE, PERF_FILE):
            path = os.path.join(self._workdir, name)
            if not os.path.exists(path):
                continue
            kept = [record for record in read_metrics(self._workdir, name) if record["step"] <= step]
            with open(path + ".tmp", "w") as f:
                f.writelines(json.dumps(record) + "\n" for record in kept)
            os.replace(path + ".tmp", path)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self._enabled or not scalars:
            return
        perf = {key: float(value) for key, value in scalars.items() if key.startswith(PERF_PREFIX)}
        computed = {key: float(value) for key, value in scalars.items() if not key.startswith(PERF_PREFIX)}
        for name, values in ((METRICS_FILE, computed), (PERF_FILE, perf)):
            if values:
                with open(os.path.join(self._workdir, name), "a") as f:
                    f.write(json.dumps({"step": step, **values}) + "\n")
        for name, value in (computed | perf).items():
            self._tensorboard.add_scalar(name, value, step)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
