"""A recording's sensor files onto the clip's time grid: read, put on one clock, resampled, checked for coverage.

The one place both the recordings builder and prediction from raw recordings align sensors (so a new recording is
prepared exactly as its training data was). For each stream: its timestamps (or its fixed rate) in its own clock,
moved to the clip's clock by its offset (the manifest's sensor_offset_s), then laid on the example's grid by
harjax/data/resampling.py's onto_grid: linear interpolation between samples; duplicates dropped, small steps
back sorted, a file written out of order sorted whole, clock jumps back split (the first part keeps the steps
where parts overlap), gaps longer than max_gap_periods masked; every case counted. The grid runs at rate_hz over
the clip's span (clip_start_s to clip_end_s, or the whole clip); without a clip, over the time every stream
covers. A step is recorded where every stream recorded it; an example whose recorded steps cover less than
min_coverage of its grid is refused. Refused too, naming the row and the file: a stream whose sample period is far
from the grid's (timestamps in another unit than the manifest's time_unit), checked before any grid is laid; a
file that cannot be read (missing, empty, damaged, a CSV header naming a column twice). A CSV may start with a
spreadsheet's byte-order mark.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import itertools
import os
from collections.abc import Sequence

import numpy as np

from harjax import errors
from harjax.data import resampling, tfds_format
from harjax.recordings import manifest
from harjax.video import decoding

DEFAULT_MIN_COVERAGE = 0.9


class AlignmentError(errors.UserError):
    """A recording whose sensors cannot be put on its clip's grid; the message names the row and the file.

    `reason` is what a build report counts it as: missing_file, unreadable_sensors or low_coverage.
    """

    def __init__(self, message: str, reason: str = "unreadable_sensors"):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Aligned:
    """One example's sensors on its grid."""

    sensor: np.ndarray  # [T, C] float32, 0 where not recorded
    mask: np.ndarray  # [T] bool: every stream recorded the step
    channel_names: tuple[str, ...]
    stream_channels: tuple[int, ...]  # how many of the channels each stream gives, in order
    coverage: float  # fraction of the grid's steps recorded
    report: dict[str, int]  # what resampling found, summed over streams


def read_file(sensor: manifest.SensorFile, where: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(time [T] seconds in the sensor's clock, values [T, C] float64, channel names) of one sensor file."""
    origin = f"{where}: {sensor.path}"
    if not os.path.isfile(sensor.path):
        raise AlignmentError(f"{origin}: no such sensor file", "missing_file")
    suffix = os.path.splitext(sensor.path)[1].lower()
    try:
        return _read(sensor, suffix, origin)
    except AlignmentError:
        raise
    except (OSError, ValueError, KeyError, NotImplementedError, TypeError) as error:  # a damaged or odd file
        raise AlignmentError(f"{origin}: cannot be read: {type(error).__name__}: {error}") from None


def _read(sensor: manifest.SensorFile, suffix: str, origin: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if suffix in (".npy", ".mat"):
        values = np.load(sensor.path) if suffix == ".npy" else _mat_array(sensor.path, origin)
        if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
            raise AlignmentError(f"{origin}: expected a numeric [T, C] array, got {values.dtype} {list(values.shape)}")
        names = sensor.channels or tuple(f"c{index}" for index in range(values.shape[1]))
        columns = dict(zip(names, values.T.astype(np.float64), strict=False))
        if len(names) != values.shape[1]:
            raise AlignmentError(f"{origin}: {values.shape[1]} columns, but 'channels' names {len(names)}")
    else:
        columns = _table(sensor.path, suffix, origin)
        names = tuple(name for name in columns if name != sensor.time_column)
        if sensor.channels:
            missing = [name for name in sensor.channels if name not in columns]
            if missing:
                raise AlignmentError(f"{origin}: no column {missing} (it has {sorted(columns)})")
            names = sensor.channels
    if sensor.time_column in columns:
        time = columns[sensor.time_column] / manifest.TIME_UNITS[sensor.time_unit]
    elif sensor.rate_hz is not None:
        time = np.arange(len(next(iter(columns.values())))) / sensor.rate_hz
    else:
        raise AlignmentError(
            f"{origin}: no time column {sensor.time_column!r} and no 'sensor_rate_hz' for a fixed rate"
        )
    if not names:
        raise AlignmentError(f"{origin}: no channel besides the time column")
    values = np.stack([columns[name] for name in names], axis=1)
    return np.asarray(time, np.float64), values, tuple(names)


def _mat_array(path: str, origin: str) -> np.ndarray:
    import scipy.io

    try:
        variables = scipy.io.loadmat(path)
    except Exception as error:  # noqa: BLE001  a damaged .mat raises MatReadError, IndexError, ...; the file is named
        raise AlignmentError(f"{origin}: cannot be read: {type(error).__name__}: {error}") from None
    arrays = {
        name: value
        for name, value in variables.items()
        if not name.startswith("__") and isinstance(value, np.ndarray) and value.ndim == 2
    }
    if len(arrays) != 1:
        raise AlignmentError(f"{origin}: expected one 2-D array variable, found {sorted(arrays) or 'none'}")
    return next(iter(arrays.values()))


def _table(path: str, suffix: str, origin: str) -> dict[str, np.ndarray]:
    """Named float64 columns of a .csv (header row) or .parquet file; a cell that is no number is NaN (dropped)."""
    if suffix == ".parquet":
        try:
            import pyarrow.parquet
        except ImportError:
            raise AlignmentError(f"{origin}: reading parquet needs pyarrow (pip install pyarrow)") from None
        table = pyarrow.parquet.read_table(path)
        _refuse_repeated(table.column_names, origin)
        return {name: np.asarray(table[name].to_numpy(zero_copy_only=False), np.float64) for name in table.column_names}
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is no name
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise AlignmentError(f"{origin}: empty file (expected a header row naming the columns)")
        rows = [row for row in reader if row]
    header = [name.strip() for name in header]
    _refuse_repeated(header, origin)
    cells = np.full((len(rows), len(header)), np.nan)
    for index, row in enumerate(rows):
        for column, cell in enumerate(row[: len(header)]):
            with contextlib.suppress(ValueError):  # an unparsable cell stays NaN: resampling drops the row, counted
                cells[index, column] = float(cell)
    return dict(zip(header, cells.T, strict=True))


def _refuse_repeated(names: list[str], origin: str) -> None:
    """Refuses a header naming a column twice (a dict of columns would silently keep only the last)."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise AlignmentError(f"{origin}: the header repeats {', '.join(map(repr, repeated))}; name each column once")


def clip_span(recording: manifest.Recording) -> tuple[float, float] | None:
    """(start, end) seconds of the example in its clip's clock; None without a clip."""
    if recording.clip is None:
        return None
    start = recording.clip_start_s or 0.0
    if recording.clip_end_s is not None:
        return start, recording.clip_end_s
    if not os.path.isfile(recording.clip):
        raise AlignmentError(f"row {recording.row} ({recording.id}): no such clip {recording.clip}", "missing_file")
    try:
        return start, decoding.clip_duration(recording.clip)
    except Exception as error:  # noqa: BLE001  PyAV raises many types; the row and the file are named
        where = f"row {recording.row} ({recording.id})"
        raise AlignmentError(f"{where}: {recording.clip} cannot be read: {error}") from None


def align(
    recording: manifest.Recording,
    rate_hz: float = tfds_format.DEFAULT_RATE_HZ,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    max_gap_periods: float = resampling.DEFAULT_MAX_GAP_PERIODS,
) -> Aligned:
    """The recording's streams on its grid; raises AlignmentError (naming the row) when coverage is too low."""
    where = f"row {recording.row} ({recording.id})"
    streams = []
    for sensor in recording.sensors:
        time, values, names = read_file(sensor, where)
        resampling.sample_period(time, rate_hz, f"{where}: {sensor.path}")  # a unit error before any grid is laid
        streams.append((sensor, time - sensor.offset_s, values, names))
    span = clip_span(recording)
    if span is None:  # no clip: the time every stream covers
        finite = [time[np.isfinite(time)] for _, time, _, _ in streams]
        if not all(len(time) for time in finite):
            raise AlignmentError(f"{where}: a sensor file has no finite timestamp")
        span = max(time.min() for time in finite), min(time.max() for time in finite)
        span = span[0], span[1] + 1.0 / rate_hz  # the last common sample is a step of the grid
    steps = int(np.floor((span[1] - span[0]) * rate_hz + 1e-9))
    if steps < 1:
        raise AlignmentError(f"{where}: the span {span[0]:.3f}-{span[1]:.3f} s holds no step at {rate_hz} Hz")
    grid = span[0] + np.arange(steps) / rate_hz  # [T]
    report: collections.Counter = collections.Counter()
    columns, recorded, channel_names = [], np.ones(steps, bool), []
    for sensor, time, values, names in streams:
        origin = f"{where}: {sensor.path}"
        laid, stream_recorded, found = resampling.onto_grid(time, values, grid, origin, max_gap_periods, rate_hz)
        report.update(found)
        columns.append(laid)
        recorded &= stream_recorded
        channel_names += [f"{sensor.stream}_{name}" for name in names]
    coverage = float(recorded.mean())
    if coverage < min_coverage:
        raise AlignmentError(
            f"{where}: the sensors cover {coverage:.0%} of the clip's {span[1] - span[0]:.2f} s, under "
            f"min_coverage={min_coverage:.0%} (check sensor_offset_s and the clip span)",
            "low_coverage",
        )
    sensor = np.where(recorded[:, None], np.concatenate(columns, axis=1), 0.0).astype(np.float32)
    widths = tuple(column.shape[1] for column in columns)
    return Aligned(sensor, recorded, tuple(channel_names), widths, coverage, dict(report))


def in_channel_order(aligned: Aligned, channel_names: Sequence[str]) -> Aligned:
    """The example with its channels in the order `channel_names` gives (the same set, streams listed otherwise).

    A manifest row (a JSON object, a CSV cell) may list an example's streams in any order; the model reads them in
    one. The caller has checked that the names are this example's.
    """
    columns = [aligned.channel_names.index(name) for name in channel_names]
    stream_of = np.searchsorted(np.cumsum(aligned.stream_channels), columns, side="right")  # [C]: original stream
    widths = tuple(len(list(group)) for _, group in itertools.groupby(stream_of))
    return dataclasses.replace(
        aligned, sensor=aligned.sensor[:, columns], channel_names=tuple(channel_names), stream_channels=widths
    )
