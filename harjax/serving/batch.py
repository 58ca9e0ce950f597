"""Predictions on a file of examples, and the prediction files (.csv, .jsonl) every kind of prediction writes.

An input .npz is like the npz source's: 'sensor' [N, T, C] raw values (any T), optional 'sensor_mask' [N, T],
'video' [N, d_v] or [N, F, d_v], 'channel_names' [C] (checked against the bundle's) and 'label' [N] (then the
output names the true class and accuracy is logged). Output per example: the predicted class, the top-5
probabilities, NaN steps masked, whether the video was given; .jsonl adds the keyless-attention weights.
Nothing is written unless every prediction succeeds (the output appears whole, by rename).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import tempfile
from typing import Any

import numpy as np

from harjax.data import batch as batch_lib, npz
from harjax.serving import predictor as predictor_lib

FORMATS = (".csv", ".jsonl")
COLUMNS = ("index", "predicted", "nan_steps_masked", "video")  # then 'label' where given, and the top-k
_TOP_COLUMNS = tuple(f"top{i}_{part}" for i in range(1, predictor_lib.TOP_K + 1) for part in ("class", "probability"))


@dataclasses.dataclass(frozen=True)
class PredictionTable:
    """Prediction rows and the columns of their kind: an input with no rows gets the same header as any other."""

    columns: tuple[str, ...]  # besides 'top' (written as top-k columns) and 'alpha' (.jsonl only)
    rows: list[dict[str, Any]]


def _labels(arrays: dict[str, np.ndarray], count: int, classes: tuple[str, ...], path: str) -> np.ndarray | None:
    if "label" not in arrays:
        return None
    labels = np.asarray(arrays["label"])
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise predictor_lib.InputError(
            f"{path}: 'label' must be int [N] with N = {count}, got {labels.dtype} {list(labels.shape)}"
        )
    unknown = sorted({int(label) for label in labels if not 0 <= label < len(classes)})
    if unknown:
        raise predictor_lib.InputError(
            f"{path}: 'label' holds class indices {unknown[:10]} the bundle does not have "
            f"(it has {len(classes)} classes, 0..{len(classes) - 1})"
        )
    return labels


def predict_file(predictor: predictor_lib.Predictor, path: str, batch_size: int) -> PredictionTable:
    """One row per example of an npz input."""
    arrays = npz.read_arrays(path)
    if batch_lib.SENSOR not in arrays:
        raise predictor_lib.InputError(f"{path}: missing array 'sensor' [N, T, C] (found: {sorted(arrays)})")
    sensor = arrays[batch_lib.SENSOR]
    count = len(sensor)
    labels = _labels(arrays, count, predictor.bundle.class_names, path)
    channel_names = arrays.get("channel_names")
    rows = []
    if not count:  # nothing to predict, but the arrays must still be what the bundle reads
        predictor.prepare(
            sensor,
            arrays.get(batch_lib.SENSOR_MASK),
            arrays.get(batch_lib.VIDEO),
            None if channel_names is None else [str(name) for name in channel_names],
            origin=path,
        )
    for start in range(0, count, batch_size):
        part = slice(start, start + batch_size)
        mask = arrays.get(batch_lib.SENSOR_MASK)
        video = arrays.get(batch_lib.VIDEO)
        result = predictor.predict_batch(
            sensor[part],
            None if mask is None else mask[part],
            None if video is None else video[part],
            None if channel_names is None else [str(name) for name in channel_names],
            origin=path,
        )
        rows += prediction_rows(result, start)
    if labels is not None:
        for row, label in zip(rows, labels, strict=True):
            row["label"] = predictor.bundle.class_names[label]
        if rows:
            accuracy = np.mean([row["label"] == row["predicted"] for row in rows])
            logging.info("%s: accuracy %.4f on %d labelled examples", path, accuracy, count)
    return PredictionTable(COLUMNS + (("label",) if labels is not None else ()), rows)


def prediction_rows(result: predictor_lib.Predictions, first_index: int) -> list[dict[str, Any]]:
    """Output rows of a batch's predictions, indexed from `first_index`."""
    rows = []
    for i, (label, top) in enumerate(zip(result.labels(), result.top(), strict=True)):
        video = "not used" if result.video_given is None else "given" if result.video_given[i] else "removed"
        row = {
            "index": first_index + i,
            "predicted": label,
            "top": top,
            "nan_steps_masked": int(result.nan_steps[i]),
            "video": video,
        }
        if result.alpha is not None:
            row["alpha"] = result.alpha[i]
        rows.append(row)
    return rows


def write_rows(table: PredictionTable, path: str) -> None:
    """.jsonl (every field, alpha included) or .csv (top-5 as columns, no alpha), whole or not at all.

    An existing file is replaced only if it is a prediction file of harjax's (its header or first record says so).
    """
    if not path.endswith(FORMATS):
        raise predictor_lib.InputError(f"{path}: predictions are written to a {' or '.join(FORMATS)} file")
    if os.path.isdir(path):
        raise predictor_lib.InputError(f"--output={path} is a folder; give a {' or '.join(FORMATS)} file")
    if os.path.exists(path) and not _is_prediction_file(path):
        raise predictor_lib.InputError(
            f"--output={path} exists and is not a prediction file of harjax's; choose "
            "another name (only an earlier prediction file is replaced)"
        )
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".partial", delete=False, newline="") as f:
        try:
            _write(table, path, f)
        except BaseException:
            f.close()
            os.remove(f.name)
            raise
    os.replace(f.name, path)


def _is_prediction_file(path: str) -> bool:
    try:
        with open(path, newline="") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    if path.endswith(".jsonl"):
        try:
            return first == "" or "predicted" in json.loads(first)
        except ValueError:
            return False
    return first.startswith("index,") and "predicted" in first.split(",")


def _write(table: PredictionTable, path: str, f: Any) -> None:
    if path.endswith(".jsonl"):
        for row in table.rows:
            record = {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in row.items()}
            record["top"] = [{"class": name, "probability": probability} for name, probability in row["top"]]
            f.write(json.dumps(record) + "\n")
        return
    writer = csv.DictWriter(f, fieldnames=[*table.columns, *_TOP_COLUMNS])
    writer.writeheader()
    for row in table.rows:
        flat = {key: row[key] for key in table.columns}
        for i, (name, probability) in enumerate(row["top"], 1):
            flat |= {f"top{i}_class": name, f"top{i}_probability": round(probability, 6)}
        writer.writerow(flat)
