"""MMAct sensor CSVs: parse, repair the release's known defects, and align the four streams on one time grid.

Each CSV has no header and four columns: timestamp (20181016_13:37:28.612000), then three axes. Defects seen in
the real release, each repaired and counted here: timestamps without a fraction (the writer drops ".000000"),
rows out of order or duplicated, malformed rows, empty files. Streams come at different rates (100, 100, 50,
about 50 Hz) with no shared index, so they are aligned on their timestamps and resampled to one rate.
Orientation (azimuth, pitch, roll, probably degrees) is resampled as angles.
"""

from __future__ import annotations

import calendar
import collections
import dataclasses
import datetime
import os
from collections.abc import Sequence

import numpy as np

_TIMESTAMP_FORMAT = "%Y%m%d_%H:%M:%S"
AXES = 3


@dataclasses.dataclass(frozen=True)
class SensorStream:
    seconds: np.ndarray  # [n] float64, strictly increasing
    values: np.ndarray  # [n, 3] float32


def parse_timestamp(text: str) -> tuple[float, bool]:
    """(seconds, had_fraction) of 'YYYYmmdd_HH:MM:SS[.ffffff]'; naive times, so no time-zone shifts apply."""
    whole, _, fraction = text.strip().partition(".")
    moment = datetime.datetime.strptime(whole, _TIMESTAMP_FORMAT)
    if fraction and not fraction.isdigit():
        raise ValueError(f"bad fraction in timestamp {text!r}")
    return calendar.timegm(moment.timetuple()) + (float("0." + fraction) if fraction else 0.0), bool(fraction)


def read_stream(path: str, counts: collections.Counter) -> SensorStream | None:
    """The file's samples, sorted and without duplicate timestamps; None when no row is usable.

    `counts` gains one entry per repair: 'timestamp_without_fraction' and 'malformed_row' (rows),
    'duplicate_timestamp' (rows dropped, the first kept), 'unsorted_file' and 'empty_file' (files).
    """
    seconds, values = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            fields = line.strip().split(",")
            try:
                if len(fields) != 1 + AXES:
                    raise ValueError(f"{len(fields)} fields")
                moment, had_fraction = parse_timestamp(fields[0])
                row = [float(field) for field in fields[1:]]
            except ValueError:
                counts["malformed_row"] += 1
                continue
            if not np.isfinite(row).all():
                counts["malformed_row"] += 1
                continue
            counts["timestamp_without_fraction"] += not had_fraction
            seconds.append(moment)
            values.append(row)
    if not seconds:
        counts["empty_file"] += 1
        return None
    seconds, values = np.asarray(seconds, np.float64), np.asarray(values, np.float32)
    if np.any(np.diff(seconds) < 0):
        counts["unsorted_file"] += 1
        order = np.argsort(seconds, kind="stable")
        seconds, values = seconds[order], values[order]
    unique_seconds, first = np.unique(seconds, return_index=True)
    counts["duplicate_timestamp"] += len(seconds) - len(unique_seconds)
    return SensorStream(unique_seconds, values[first])


def _low_pass(stream: SensorStream, rate_hz: float) -> np.ndarray:
    """Box-filters a stream sampled faster than the target rate, so resampling does not alias."""
    if len(stream.seconds) < 2:
        return stream.values
    source_rate = 1.0 / np.median(np.diff(stream.seconds))
    width = int(round(source_rate / rate_hz))
    if width < 2:
        return stream.values
    kernel = np.ones(width + 1 - width % 2)  # odd length, ends halved when width is even: symmetric, no delay
    if width % 2 == 0:
        kernel[[0, -1]] = 0.5
    kernel /= kernel.sum()
    half = len(kernel) // 2
    padded = np.pad(stream.values, ((half, half), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, axis], kernel, mode="valid") for axis in range(AXES)], axis=1)


def align(
    streams: Sequence[SensorStream | None],
    rate_hz: float,
    counts: collections.Counter,
    angular: Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Resamples the streams onto one grid at `rate_hz` over the time all present streams cover.

    Returns (values [T, 3 * len(streams)] float32 with zeros for absent streams, present [len(streams)] bool), or
    None when no stream is present. A stream that shares no time with the longest one is dropped (counted as
    'stream_without_overlap'), and a trial whose common span is under 80% of its longest stream is counted as
    'streams_partly_overlap'. Streams flagged `angular` (degrees) are unwrapped before filtering and
    interpolation, so 359 -> 1 does not pass through 180, and wrapped back afterwards.
    """
    angular = angular or [False] * len(streams)
    longest = max(
        (stream for stream in streams if stream is not None),
        key=lambda stream: stream.seconds[-1] - stream.seconds[0],
        default=None,
    )
    if longest is None:
        return None
    streams = list(streams)
    for index, stream in enumerate(streams):
        if stream is not None and (stream.seconds[-1] < longest.seconds[0] or stream.seconds[0] > longest.seconds[-1]):
            counts["stream_without_overlap"] += 1
            streams[index] = None
    present = np.array([stream is not None for stream in streams])
    start = max(stream.seconds[0] for stream in streams if stream is not None)
    end = min(stream.seconds[-1] for stream in streams if stream is not None)
    if end - start < 0.8 * (longest.seconds[-1] - longest.seconds[0]):
        counts["streams_partly_overlap"] += 1
    grid = start + np.arange(int(np.floor((end - start) * rate_hz + 1e-9)) + 1) / rate_hz  # [T]
    values = np.zeros((len(grid), AXES * len(streams)), np.float32)
    for index, stream in enumerate(streams):
        if stream is None:
            continue
        samples = np.unwrap(stream.values, period=360.0, axis=0) if angular[index] else stream.values
        smoothed = _low_pass(SensorStream(stream.seconds, samples), rate_hz)
        columns = np.stack([np.interp(grid, stream.seconds, smoothed[:, axis]) for axis in range(AXES)], axis=1)
        if angular[index]:  # back into the range the stream was recorded in
            low = np.where(stream.values.min(axis=0) < 0, -180.0, 0.0)
            columns = (columns - low) % 360.0 + low
        values[:, AXES * index : AXES * (index + 1)] = columns
    return values, present


def read_trial(
    paths: Sequence[str | None], rate_hz: float, counts: collections.Counter, angular: Sequence[bool] | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Reads and aligns one trial's streams (None or a missing path: that stream is absent, counted)."""
    streams = []
    for path in paths:
        if path is None or not os.path.exists(path):
            counts["missing_file"] += 1
            streams.append(None)
        else:
            streams.append(read_stream(path, counts))
    return align(streams, rate_hz, counts, angular)
