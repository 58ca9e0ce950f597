"""Predictions of a model bundle on new recordings: a file of examples, or one long recording as a stream.

    python -m harjax.predict --bundle=B --input=X.npz --output=P.csv|P.jsonl [--batch_size=256]
        [--allow_missing_video]
    python -m harjax.predict --bundle=B --stream=recording.csv|npz --window_s=5 --hop_s=1 --output=P.csv|P.jsonl
        [--smooth=5] [--video=embedding.npy] [--allow_missing_video]

--input: an .npz like the npz source's: 'sensor' [N, T, C] raw values (any T), optional 'sensor_mask' [N, T],
'video' [N, d_v] or [N, F, d_v], 'channel_names' [C] (checked against the bundle's) and 'label' [N] (then the
output names the true class and accuracy is printed). Output per example: the predicted class, the top-5
probabilities, NaN steps masked, whether the video was given; .jsonl adds the keyless-attention weights.

--stream: one recording, resampled to the bundle's rate from its own timestamps (linear interpolation), cut into
windows of --window_s every --hop_s. A .csv has a header 'time,<channel>,...' (time in seconds, the bundle's
channel names); an .npz holds 'time' [T] (seconds) and 'sensor' [T, C], optionally 'channel_names'. --video gives
the embedding once ([d_v], a fixed context) or per window ([windows, d_v]). Output per window: start and end
time (s), the predicted class, its top-5, and the label track smoothed by a majority over the last --smooth windows.

Nothing is written unless every prediction succeeds (the output appears whole, by rename).
"""

from __future__ import annotations

import collections
import csv
import json
import os
import tempfile
from typing import Any, Iterator

import numpy as np
from absl import app, flags, logging

from harjax import inference
from harjax.data import batch as batch_lib


def _define_flags() -> None:
    """The command line (defined when run as a program, so the module imports beside other CLIs)."""
    flags.DEFINE_string("bundle", None, "A model bundle (python -m harjax.export).")
    flags.DEFINE_string("input", None, "An .npz of examples to predict.")
    flags.DEFINE_string("stream", None, "One long recording (.csv or .npz) to predict window by window.")
    flags.DEFINE_string("output", None, "Where predictions go: .csv or .jsonl.")
    flags.DEFINE_integer("batch_size", 256, "Examples per forward pass.")
    flags.DEFINE_bool("allow_missing_video", False, "Predict with the video removed (the "
                      "robustness evaluation's convention) when the input has none.")
    flags.DEFINE_float("window_s", None, "Stream: window length in seconds.")
    flags.DEFINE_float("hop_s", None, "Stream: seconds between window starts.")
    flags.DEFINE_integer("smooth", 1, "Stream: majority vote over this many last windows (1: none).")
    flags.DEFINE_string("video", None, "Stream: a .npy video embedding, [d_v] or one per window.")
    flags.mark_flags_as_required(["bundle", "output"])


FORMATS = (".csv", ".jsonl")


def _load_npz(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise inference.InputError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError) as error:
        raise inference.InputError(f"{path}: not a readable .npz archive of plain arrays ({error})") from error


def _labels(arrays: dict[str, np.ndarray], count: int, classes: tuple[str, ...], path: str) -> np.ndarray | None:
    if "label" not in arrays:
        return None
    labels = np.asarray(arrays["label"])
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise inference.InputError(f"{path}: 'label' must be int [N] with N = {count}, got {labels.dtype} "
                                   f"{list(labels.shape)}")
    unknown = sorted({int(label) for label in labels if not 0 <= label < len(classes)})
    if unknown:
        raise inference.InputError(f"{path}: 'label' holds class indices {unknown[:10]} the bundle does not have "
                                   f"(it has {len(classes)} classes, 0..{len(classes) - 1})")
    return labels


def predict_file(predictor: inference.Predictor, path: str, batch_size: int) -> list[dict[str, Any]]:
    """One row per example of an npz input."""
    arrays = _load_npz(path)
    if batch_lib.SENSOR not in arrays:
        raise inference.InputError(f"{path}: missing array 'sensor' [N, T, C] (found: {sorted(arrays)})")
    sensor = arrays[batch_lib.SENSOR]
    count = len(sensor)
    labels = _labels(arrays, count, predictor.bundle.class_names, path)
    channel_names = arrays.get("channel_names")
    rows = []
    for start in range(0, count, batch_size):
        part = slice(start, start + batch_size)
        mask = arrays.get(batch_lib.SENSOR_MASK)
        video = arrays.get(batch_lib.VIDEO)
        result = predictor.predict_batch(sensor[part], None if mask is None else mask[part],
                                         None if video is None else video[part],
                                         None if channel_names is None else [str(name) for name in channel_names],
                                         origin=path)
        rows += _rows(result, start)
    if labels is not None:
        for row, label in zip(rows, labels):
            row["label"] = predictor.bundle.class_names[label]
        accuracy = np.mean([row["label"] == row["predicted"] for row in rows])
        logging.info("%s: accuracy %.4f on %d labelled examples", path, accuracy, count)
    return rows


def _rows(result: inference.Predictions, first_index: int) -> list[dict[str, Any]]:
    rows = []
    for i, (label, top) in enumerate(zip(result.labels(), result.top())):
        video = "not used" if result.video_given is None else "given" if result.video_given[i] else "removed"
        row = {"index": first_index + i, "predicted": label, "top": top, "nan_steps_masked": int(result.nan_steps[i]),
               "video": video}
        if result.alpha is not None:
            row["alpha"] = result.alpha[i]
        rows.append(row)
    return rows


def read_recording(path: str, channel_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(time [T] seconds, values [T, C]) of a .csv or .npz recording, channels in the bundle's order."""
    if path.endswith(".npz"):
        arrays = _load_npz(path)
        for name in ("time", batch_lib.SENSOR):
            if name not in arrays:
                raise inference.InputError(f"{path}: missing array '{name}' (found: {sorted(arrays)})")
        names = [str(name) for name in arrays.get("channel_names", channel_names)]
        time, values = np.asarray(arrays["time"], np.float64), np.asarray(arrays[batch_lib.SENSOR], np.float64)
    elif path.endswith(".csv"):
        if not os.path.isfile(path):
            raise inference.InputError(f"{path}: no such file")
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or header[0].strip() != "time":
                raise inference.InputError(f"{path}: the first row must be the header 'time,<channel>,...'")
            try:
                table = np.asarray([[float(cell) if cell.strip() else np.nan for cell in row] for row in reader
                                    if row], np.float64)
            except ValueError as error:
                raise inference.InputError(f"{path}: a value is not a number ({error})") from error
        names = [name.strip() for name in header[1:]]
        if table.ndim != 2 or table.shape[1] != len(header):
            raise inference.InputError(f"{path}: every row needs {len(header)} values, as the header has")
        time, values = table[:, 0], table[:, 1:]
    else:
        raise inference.InputError(f"{path}: a stream is a .csv or .npz recording")
    missing = [name for name in channel_names if name not in names]
    if missing or len(names) != values.shape[-1]:
        raise inference.InputError(f"{path}: channels {names} do not give the bundle's {list(channel_names)}"
                                   + (f" (missing: {missing})" if missing else ""))
    values = values[:, [names.index(name) for name in channel_names]]
    if time.ndim != 1 or len(time) != len(values):
        raise inference.InputError(f"{path}: 'time' must be [T] with T = {len(values)} rows of sensor values")
    return time, values


def resample(time: np.ndarray, values: np.ndarray, rate_hz: float, path: str) -> tuple[np.ndarray, np.ndarray,
                                                                                          dict[str, int]]:
    """(values on a regular grid at rate_hz [S, C], the grid's times [S], what was dropped): timestamps sorted,
    duplicates and rows with NaN dropped (counted), each channel interpolated linearly."""
    report = {"rows": len(time)}
    usable = np.isfinite(time) & np.isfinite(values).all(axis=1)
    report["rows_with_nan_dropped"] = int((~usable).sum())
    time, values = time[usable], values[usable]
    order = np.argsort(time, kind="stable")
    time, values = time[order], values[order]
    unique = np.concatenate([[True], np.diff(time) > 0])
    report["duplicate_timestamps_dropped"] = int((~unique).sum())
    time, values = time[unique], values[unique]
    if len(time) < 2:
        raise inference.InputError(f"{path}: fewer than two usable rows; nothing to resample")
    grid = time[0] + np.arange(int(np.floor((time[-1] - time[0]) * rate_hz)) + 1) / rate_hz
    resampled = np.stack([np.interp(grid, time, values[:, channel]) for channel in range(values.shape[1])], axis=1)
    return resampled.astype(np.float32), grid, report


def windows(grid: np.ndarray, window_steps: int, hop_steps: int, path: str, window_s: float) -> Iterator[int]:
    if len(grid) < window_steps:
        raise inference.InputError(f"{path}: the recording lasts {len(grid) / (window_steps / window_s):.2f} s, "
                                   f"shorter than one window of {window_s:g} s")
    return iter(range(0, len(grid) - window_steps + 1, hop_steps))


def predict_stream(predictor: inference.Predictor, path: str, window_s: float, hop_s: float, smooth: int,
                   video_path: str | None, batch_size: int) -> list[dict[str, Any]]:
    """One row per window of a long recording."""
    if window_s is None or hop_s is None or window_s <= 0 or hop_s <= 0:
        raise app.UsageError("--stream needs --window_s and --hop_s, both positive (seconds)")
    if smooth < 1:
        raise app.UsageError(f"--smooth must be >= 1, got {smooth}")
    bundle = predictor.bundle
    rate = bundle.sampling_rate_hz
    time, values = read_recording(path, bundle.channel_names)
    recording, grid, report = resample(time, values, rate, path)
    window_steps, hop_steps = max(1, round(window_s * rate)), max(1, round(hop_s * rate))
    starts = list(windows(grid, window_steps, hop_steps, path, window_s))
    logging.info("%s: %s; %d windows of %d steps at %g Hz", path, report, len(starts), window_steps, rate)
    video = None
    if video_path is not None:
        if not bundle.uses_video:
            raise inference.InputError(f"{video_path}: the bundle's model reads no video (modalities "
                                       f"{bundle.meta['config']['model']['modalities']}); leave out --video")
        try:
            video = np.load(video_path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise inference.InputError(f"{video_path}: not a readable .npy array ({error})") from error
        if video.shape == bundle.video_shape:  # one embedding: a fixed context for every window
            video = np.broadcast_to(video, (len(starts), *video.shape))
        elif video.shape != (len(starts), *bundle.video_shape):
            raise inference.InputError(f"{video_path}: a stream's video is {list(bundle.video_shape)} (fixed) or "
                                       f"[{len(starts)} windows, {', '.join(map(str, bundle.video_shape))}], got "
                                       f"{list(video.shape)}")
    rows, recent = [], collections.deque(maxlen=smooth)
    for first in range(0, len(starts), batch_size):
        chosen = starts[first:first + batch_size]
        batch = np.stack([recording[start:start + window_steps] for start in chosen])
        result = predictor.predict_batch(batch, None, None if video is None else video[first:first + len(chosen)],
                                         origin=path)
        for row, start in zip(_rows(result, first), chosen):
            recent.append(row["predicted"])
            votes = collections.Counter(recent)
            row |= {"start_s": round(float(grid[start] - grid[0]), 4),
                    "end_s": round(float(grid[start] - grid[0] + window_steps / rate), 4),
                    "smoothed": max(votes, key=lambda label: (votes[label], -list(recent)[::-1].index(label)))}
            rows.append(row)
    return rows


def write_rows(rows: list[dict[str, Any]], path: str) -> None:
    """.jsonl (every field, alpha included) or .csv (top-5 as columns, no alpha), atomically."""
    if not path.endswith(FORMATS):
        raise app.UsageError(f"--output={path}: choose a {' or '.join(FORMATS)} file")
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
        top = [f"top{i}_{part}" for i in range(1, inference.TOP_K + 1) for part in ("class", "probability")]
        writer = csv.DictWriter(f, fieldnames=fields + top)
        writer.writeheader()
        for row in rows:
            flat = {key: row[key] for key in fields}
            for i, (name, probability) in enumerate(row["top"], 1):
                flat |= {f"top{i}_class": name, f"top{i}_probability": round(probability, 6)}
            writer.writerow(flat)


def main(argv: list[str]) -> None:
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if bool(FLAGS.input) == bool(FLAGS.stream):
        raise app.UsageError("give --input (an .npz of examples) or --stream (one long recording), not both")
    if not FLAGS.output.endswith(FORMATS):
        raise app.UsageError(f"--output={FLAGS.output}: choose a {' or '.join(FORMATS)} file")
    try:
        predictor = inference.Predictor.load(FLAGS.bundle, FLAGS.allow_missing_video)
        if FLAGS.input:
            rows = predict_file(predictor, FLAGS.input, FLAGS.batch_size)
        else:
            rows = predict_stream(predictor, FLAGS.stream, FLAGS.window_s, FLAGS.hop_s, FLAGS.smooth,
                                  FLAGS.video, FLAGS.batch_size)
    except (inference.BundleError, inference.InputError) as error:
        raise app.UsageError(str(error)) from error
    if any(row["video"] == "removed" for row in rows):
        logging.warning("the model reads video but none was given: predictions are with the video removed "
                        "(the robustness evaluation's convention); the output's 'video' column says so")
    write_rows(rows, FLAGS.output)
    logging.info("wrote %d predictions to %s", len(rows), FLAGS.output)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
