"""Predictions on one long recording, window by window, at the bundle's sampling rate.

A recording is a .csv with the header 'time,<channel>,...' (time in seconds, the bundle's channel names) or an
.npz holding 'time' [T] (seconds) and 'sensor' [T, C], optionally 'channel_names'. It is resampled to the bundle's
rate from its own timestamps (harjax/data/resampling.py: out-of-order rows, duplicates, clock jumps and gaps are
counted and logged; a clock jump back splits the recording into segments, a long gap is masked) and cut into windows
of `window_s` every `hop_s` within each segment. The video embedding comes once ([d_v], a fixed context) or per
window ([windows, d_v]). Output per window: its segment, start and end time (s, the recording's own clock), the
steps masked for a gap, the predicted class, its top-5, and the label track smoothed by a majority over the last
`smooth` windows of its segment.
"""

from __future__ import annotations

import collections
import csv
import logging
import os

import numpy as np

from harjax.data import batch as batch_lib, npz, resampling
from harjax.serving import batch as batch_prediction, predictor as predictor_lib

COLUMNS = (*batch_prediction.COLUMNS, "segment", "start_s", "end_s", "gap_steps_masked", "smoothed")


def read_recording(path: str, channel_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(time [T] seconds, values [T, C]) of a .csv or .npz recording, channels in the bundle's order."""
    if path.endswith(".npz"):
        arrays = npz.read_arrays(path)
        for name in ("time", batch_lib.SENSOR):
            if name not in arrays:
                raise predictor_lib.InputError(f"{path}: missing array '{name}' (found: {sorted(arrays)})")
        names = [str(name) for name in arrays.get("channel_names", channel_names)]
        time, values = np.asarray(arrays["time"], np.float64), np.asarray(arrays[batch_lib.SENSOR], np.float64)
    elif path.endswith(".csv"):
        if not os.path.isfile(path):
            raise predictor_lib.InputError(f"{path}: no such file")
        with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's CSV starts with a byte-order mark
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
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise predictor_lib.InputError(f"{path}: the header names {repeated} more than once; name each channel once")
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


def windows(segments: list[resampling.Segment], window_steps: int, hop_steps: int) -> list[tuple[int, int]]:
    """(segment, start step) of every window that fits in a segment and holds a recorded step.

    Windows never cross from one segment to the next (a clock jump separates them).
    """
    return [
        (index, start)
        for index, segment in enumerate(segments)
        for start in range(0, len(segment.time) - window_steps + 1, hop_steps)
        if segment.mask[start : start + window_steps].any()
    ]


def predict_stream(
    predictor: predictor_lib.Predictor,
    path: str,
    window_s: float,
    hop_s: float,
    smooth: int,
    video_path: str | None,
    batch_size: int,
    max_gap_periods: float = resampling.DEFAULT_MAX_GAP_PERIODS,
    on_clock_jump: str = "split",
) -> batch_prediction.PredictionTable:
    """One row per window of a long recording; the resampling's counts are logged."""
    if window_s is None or hop_s is None or window_s <= 0 or hop_s <= 0:
        raise predictor_lib.InputError("a stream needs --window_s and --hop_s, both positive (seconds)")
    if smooth < 1:
        raise predictor_lib.InputError(f"--smooth must be >= 1, got {smooth}")
    bundle = predictor.bundle
    rate = bundle.sampling_rate_hz
    time, values = read_recording(path, bundle.channel_names)
    segments, report = resampling.resample(time, values, rate, path, max_gap_periods, on_clock_jump)
    window_steps, hop_steps = max(1, round(window_s * rate)), max(1, round(hop_s * rate))
    starts = windows(segments, window_steps, hop_steps)
    fitting = sum(max(0, (len(segment.time) - window_steps) // hop_steps + 1) for segment in segments)
    report["windows_in_gaps_skipped"] = fitting - len(starts)
    if not starts:
        longest = max((len(segment.time) / rate for segment in segments), default=0.0)
        raise predictor_lib.InputError(
            f"{path}: no window of {window_s:g} s fits: its longest stretch of recorded time lasts {longest:.2f} s "
            f"({report['segments']} segment(s) between clock jumps)"
        )
    logging.info("%s: %s; %d windows of %d steps at %g Hz", path, report, len(starts), window_steps, rate)
    video = _stream_video(bundle, video_path, len(starts))
    rows, recent, previous_segment = [], collections.deque(maxlen=smooth), 0
    for first in range(0, len(starts), batch_size):
        chosen = starts[first : first + batch_size]
        sensor = np.stack([segments[index].values[start : start + window_steps] for index, start in chosen])
        mask = np.stack([segments[index].mask[start : start + window_steps] for index, start in chosen])
        result = predictor.predict_batch(
            sensor, mask, None if video is None else video[first : first + len(chosen)], origin=path
        )
        for row, (index, start) in zip(batch_prediction.prediction_rows(result, first), chosen, strict=True):
            if index != previous_segment:  # the label track starts again after a clock jump
                recent.clear()
                previous_segment = index
            recent.append(row["predicted"])
            votes = collections.Counter(recent)
            begins = float(segments[index].time[start])
            row |= {
                "segment": index,
                "start_s": round(begins, 4),
                "end_s": round(begins + window_steps / rate, 4),
                "gap_steps_masked": int((~segments[index].mask[start : start + window_steps]).sum()),
                "smoothed": max(votes, key=lambda label: (votes[label], -list(recent)[::-1].index(label))),
            }
            rows.append(row)
    return batch_prediction.PredictionTable(COLUMNS, rows)


def _stream_video(bundle, video_path: str | None, windows_count: int) -> np.ndarray | None:
    """The video embedding of every window: one given once (a fixed context) or one per window."""
    if video_path is None:
        return None
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
        return np.broadcast_to(video, (windows_count, *video.shape))
    if video.shape != (windows_count, *bundle.video_shape):
        raise predictor_lib.InputError(
            f"{video_path}: a stream's video is {list(bundle.video_shape)} (fixed) or "
            f"[{windows_count} windows, {', '.join(map(str, bundle.video_shape))}], got {list(video.shape)}"
        )
    return video
