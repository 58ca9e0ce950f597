"""Predictions on one long recording, window by window, at the bundle's sampling rate.

A recording is a .csv with the header 'time,<channel>,...' (time in seconds, the bundle's channel names) or an
.npz holding 'time' [T] (seconds) and 'sensor' [T, C], optionally 'channel_names'. It is resampled to the bundle's
rate from its own timestamps (linear interpolation) and cut into windows of `window_s` every `hop_s`. The video
embedding comes once ([d_v], a fixed context) or per window ([windows, d_v]). Output per window: start and end time
(s), the predicted class, its top-5, and the label track smoothed by a majority over the last `smooth` windows.
"""

from __future__ import annotations

import collections
import csv
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from harjax.data import batch as batch_lib
from harjax.serving import batch as batch_prediction, predictor as predictor_lib


def read_recording(path: str, channel_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(time [T] seconds, values [T, C]) of a .csv or .npz recording, channels in the bundle's order."""
    if path.endswith(".npz"):
        arrays = batch_prediction.load_npz(path)
        for name in ("time", batch_lib.SENSOR):
            if name not in arrays:
                raise predictor_lib.InputError(f"{path}: missing array '{name}' (found: {sorted(arrays)})")
        names = [str(name) for name in arrays.get("channel_names", channel_names)]
        time, values = np.asarray(arrays["time"], np.float64), np.asarray(arrays[batch_lib.SENSOR], np.float64)
    elif path.endswith(".csv"):
        if not os.path.isfile(path):
            raise predictor_lib.InputError(f"{path}: no such file")
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or header[0].strip() != "time":
                raise predictor_lib.InputError(f"{path}: the first row must be the header 'time,<channel>,...'")
            try:
                table = np.asarray(
                    [[float(cell) if cell.strip() else np.nan for cell in row] for row in reader if row], np.float64
                )
            except ValueError as error:
                raise predictor_lib.InputError(f"{path}: a value is not a number ({error})") from error
        names = [name.strip() for name in header[1:]]
        if table.ndim != 2 or table.shape[1] != len(header):
            raise predictor_lib.InputError(f"{path}: every row needs {len(header)} values, as the header has")
        time, values = table[:, 0], table[:, 1:]
    else:
        raise predictor_lib.InputError(f"{path}: a stream is a .csv or .npz recording")
    missing = [name for name in channel_names if name not in names]
    if missing or len(names) != values.shape[-1]:
        raise predictor_lib.InputError(
            f"{path}: channels {names} do not give the bundle's {list(channel_names)}"
            + (f" (missing: {missing})" if missing else "")
        )
    values = values[:, [names.index(name) for name in channel_names]]
    if time.ndim != 1 or len(time) != len(values):
        raise predictor_lib.InputError(f"{path}: 'time' must be [T] with T = {len(values)} rows of sensor values")
    return time, values


def resample(
    time: np.ndarray, values: np.ndarray, rate_hz: float, path: str
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(values on a regular grid at rate_hz [S, C], the grid's times [S], what was dropped).

    Timestamps are sorted, duplicates and rows with NaN dropped (counted), each channel interpolated linearly.
    """
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
        raise predictor_lib.InputError(f"{path}: fewer than two usable rows; nothing to resample")
    grid = time[0] + np.arange(int(np.floor((time[-1] - time[0]) * rate_hz)) + 1) / rate_hz
    resampled = np.stack([np.interp(grid, time, values[:, channel]) for channel in range(values.shape[1])], axis=1)
    return resampled.astype(np.float32), grid, report


def windows(grid: np.ndarray, window_steps: int, hop_steps: int, path: str, window_s: float) -> Iterator[int]:
    """The start step of every window that fits in the recording; a recording shorter than one fails."""
    if len(grid) < window_steps:
        raise predictor_lib.InputError(
            f"{path}: the recording lasts {len(grid) / (window_steps / window_s):.2f} s, "
            f"shorter than one window of {window_s:g} s"
        )
    return iter(range(0, len(grid) - window_steps + 1, hop_steps))


def predict_stream(
    predictor: predictor_lib.Predictor,
    path: str,
    window_s: float,
    hop_s: float,
    smooth: int,
    video_path: str | None,
    batch_size: int,
) -> list[dict[str, Any]]:
    """One row per window of a long recording."""
    if window_s is None or hop_s is None or window_s <= 0 or hop_s <= 0:
        raise predictor_lib.InputError("a stream needs --window_s and --hop_s, both positive (seconds)")
    if smooth < 1:
        raise predictor_lib.InputError(f"--smooth must be >= 1, got {smooth}")
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
            raise predictor_lib.InputError(
                f"{video_path}: the bundle's model reads no video (modalities "
                f"{bundle.meta['config']['model']['modalities']}); leave out --video"
            )
        try:
            video = np.load(video_path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise predictor_lib.InputError(f"{video_path}: not a readable .npy array ({error})") from error
        if video.shape == bundle.video_shape:  # one embedding: a fixed context for every window
            video = np.broadcast_to(video, (len(starts), *video.shape))
        elif video.shape != (len(starts), *bundle.video_shape):
            raise predictor_lib.InputError(
                f"{video_path}: a stream's video is {list(bundle.video_shape)} (fixed) or "
                f"[{len(starts)} windows, {', '.join(map(str, bundle.video_shape))}], got "
                f"{list(video.shape)}"
            )
    rows, recent = [], collections.deque(maxlen=smooth)
    for first in range(0, len(starts), batch_size):
        chosen = starts[first : first + batch_size]
        batch = np.stack([recording[start : start + window_steps] for start in chosen])
        result = predictor.predict_batch(
            batch, None, None if video is None else video[first : first + len(chosen)], origin=path
        )
        for row, start in zip(batch_prediction.prediction_rows(result, first), chosen, strict=True):
            recent.append(row["predicted"])
            votes = collections.Counter(recent)
            row |= {
                "start_s": round(float(grid[start] - grid[0]), 4),
                "end_s": round(float(grid[start] - grid[0] + window_steps / rate), 4),
                "smoothed": max(votes, key=lambda label: (votes[label], -list(recent)[::-1].index(label))),
            }
            rows.append(row)
    return rows
