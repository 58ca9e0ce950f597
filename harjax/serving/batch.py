"""Predictions on a file of examples, and the prediction files (.csv, .jsonl) every kind of prediction writes.

An input .npz is like the npz source's: 'sensor' [N, T, C] raw values (any T), optional 'sensor_mask' [N, T],
'video' [N, d_v] or [N, F, d_v], 'channel_names' [C] (checked against the bundle's) and 'label' [N] (then the
output names the true class and accuracy is logged). Output per example: the predicted class, the top-5
probabilities, NaN steps masked, whether the video was given; .jsonl adds the keyless-attention weights.
Nothing is written unless every prediction succeeds (the output appears whole, by rename).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from typing import Any

import numpy as np

from harjax.data import batch as batch_lib
from harjax.serving import predictor as predictor_lib

FORMATS = (".csv", ".jsonl")


def load_npz(path: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz file; an unreadable file fails naming it."""
    if not os.path.isfile(path):
        raise predictor_lib.InputError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError) as error:
        raise predictor_lib.InputError(f"{path}: not a readable .npz archive of plain arrays ({error})") from error


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


def predict_file(predictor: predictor_lib.Predictor, path: str, batch_size: int) -> list[dict[str, Any]]:
    """One row per example of an npz input."""
    arrays = load_npz(path)
    if batch_lib.SENSOR not in arrays:
        raise predictor_lib.InputError(f"{path}: missing array 'sensor' [N, T, C] (found: {sorted(arrays)})")
    sensor = arrays[batch_lib.SENSOR]
    count = len(sensor)
    labels = _labels(arrays, count, predictor.bundle.class_names, path)
    channel_names = arrays.get("channel_names")
    rows = []
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
        accuracy = np.mean([row["label"] == row["predicted"] for row in rows])
        logging.info("%s: accuracy %.4f on %d labelled examples", path, accuracy, count)
    return rows


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


def write_rows(rows: list[dict[str, Any]], path: str) -> None:
    """.jsonl (every field, alpha included) or .csv (top-5 as columns, no alpha), atomically."""
    if not path.endswith(FORMATS):
        raise predictor_lib.InputError(f"{path}: predictions are written to a {' or '.join(FORMATS)} file")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".partial", delete=False, newline="") as f:
        try:
            _write(rows, path, f)
        except BaseException:
            f.close()
            os.remove(f.name)
            raise
    os.replace(f.name, path)


def _write(rows: list[dict[str, Any]], path: str, f: Any) -> None:
    if path.endswith(".jsonl"):
        for row in rows:
            record = {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in row.items()}
            record["top"] = [{"class": name, "probability": probability} for name, probability in row["top"]]
            f.write(json.dumps(record) + "\n")
    else:
        fields = [key for key in rows[0] if key not in ("top", "alpha")] if rows else ["index"]
        top = [f"top{i}_{part}" for i in range(1, predictor_lib.TOP_K + 1) for part in ("class", "probability")]
        writer = csv.DictWriter(f, fieldnames=fields + top)
        writer.writeheader()
        for row in rows:
            flat = {key: row[key] for key in fields}
            for i, (name, probability) in enumerate(row["top"], 1):
                flat |= {f"top{i}_class": name, f"top{i}_probability": round(probability, 6)}
            writer.writerow(flat)
