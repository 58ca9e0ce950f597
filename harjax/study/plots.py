"""The report's figures, drawn headless (matplotlib's Agg backend) from numbers the report has gathered.

Each function takes plain arrays and labels, writes one PNG and returns its path; none reads a workdir.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_DPI = 120


def _save(figure: plt.Figure, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return path


def confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], title: str, path: str) -> str:
    """Row-normalised confusion (each true class sums to 1), classes on both axes."""
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.28 * len(class_names) + 2.5)
    figure, axes = plt.subplots(figsize=(size + 1.2, size))
    image = axes.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=90, fontsize=8)
    axes.set_yticks(ticks, class_names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if len(class_names) <= 12:
        for (i, j), value in np.ndenumerate(rows):
            if value >= 0.005:
                axes.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > 0.6 else "black",
                )
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class's examples")
    return _save(figure, path)


def per_class_f1(class_names: Sequence[str], scores: Mapping[str, np.ndarray], title: str, path: str) -> str:
    """Horizontal bars of per-class F1 for each named model, classes sorted by the first model's F1."""
    names = list(scores)
    order = np.argsort(scores[names[0]])
    height = max(3.0, 0.32 * len(class_names) * len(names) / 2 + 1.5)
    figure, axes = plt.subplots(figsize=(8, height))
    width = 0.8 / len(names)
    positions = np.arange(len(class_names))
    for offset, name in enumerate(names):
        axes.barh(positions + (offset - (len(names) - 1) / 2) * width, scores[name][order], height=width, label=name)
    axes.set_yticks(positions, [class_names[i] for i in order], fontsize=8)
    axes.set_xlim(0, 1)
    axes.set_xlabel("F1 on the eval split (mean over seeds)")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def curves(
    series: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    metrics: Sequence[tuple[str, str]],
    title: str,
    path: str,
) -> str:
    """One panel per (metric key, axis label); in each, one line per run: series[run][metric] = (steps, values)."""
    # constrained: a panel's long tick labels push its neighbour's axis label aside instead of under it
    figure, panels = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False, layout="constrained")
    for axes, (metric, label) in zip(panels[0], metrics, strict=True):
        for run, by_metric in series.items():
            if metric in by_metric:
                steps, values = by_metric[metric]
                axes.plot(steps, values, marker="o" if len(steps) < 12 else None, markersize=3, label=run)
        axes.set_xlabel("training step")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    panels[0][-1].legend(fontsize=7, loc="best")
    figure.suptitle(title)
    return _save(figure, path)


def attention(examples: Sequence[Mapping[str, np.ndarray | str]], title: str, path: str) -> str:
    """For each example, the sensor magnitude over time and the keyless-attention weight of each encoder step.

    example: 'magnitude' [T] (per input step, recorded steps only), 'alpha' [n] (each encoder step's weight within
    its segment; segments sum to 1 each), 'stride' (input steps per encoder step), 'segments' [n] (segment index of
    each encoder step, -1 on padding), 'title'.
    """
    figure, panels = plt.subplots(len(examples), 1, figsize=(9, 2.1 * len(examples)), squeeze=False)
    for axes, example in zip(panels[:, 0], examples, strict=True):
        magnitude = example["magnitude"]
        axes.plot(np.arange(len(magnitude)), magnitude, color="0.35", linewidth=0.9)
        axes.set_ylabel("|sensor|\n(standardised)", fontsize=8)
        weights = axes.twinx()
        stride = int(example["stride"])
        starts = np.arange(len(example["alpha"])) * stride
        colours = plt.cm.tab10(np.maximum(example["segments"], 0) % 10)
        weights.bar(
            starts,
            example["alpha"],
            width=stride,
            align="edge",
            alpha=0.45,
            color=np.where((example["segments"] >= 0)[:, None], colours, 0),
        )
        weights.set_ylabel("alpha", fontsize=8)
        weights.set_ylim(0, max(float(example["alpha"].max()) * 1.15, 1e-3))
        axes.set_xlim(0, len(magnitude))
        axes.set_zorder(weights.get_zorder() + 1)  # the magnitude line over the bars
        axes.patch.set_visible(False)
        axes.set_title(str(example["title"]), fontsize=9)
    panels[-1, 0].set_xlabel("sensor step (input rate); bar colour = temporal segment k")
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def grouped_bars(
    groups: Sequence[str],
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    ylabel: str,
    title: str,
    path: str,
    reference: float | None = None,
    reference_label: str = "",
) -> str:
    """Bars of mean +- std: series[name] = (means [G], stds [G]) over the x-axis `groups`."""
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * max(len(series), 1) / 1.5 + 2), 4.2))
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(groups))
    for offset, (name, (means, stds)) in enumerate(series.items()):
        axes.bar(
            positions + (offset - (len(series) - 1) / 2) * width, means, width=width, yerr=stds, capsize=3, label=name
        )
    if reference is not None:
        axes.axhline(reference, color="0.3", linestyle="--", linewidth=1, label=reference_label)
    axes.set_xticks(
        positions,
        groups,
        rotation=30 if len(groups) > 4 else 0,
        ha="right" if len(groups) > 4 else "center",
        fontsize=8,
    )
    top = max([float(np.max(means + stds)) for means, stds in series.values()] + [reference or 0.0])
    axes.set_ylabel(ylabel)
    axes.set_ylim(0, min(1.05, max(1.2 * top, 0.02)))  # small values (retrieval among many) stay readable
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)
