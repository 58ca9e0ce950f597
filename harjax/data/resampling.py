"""Sensor streams onto a regular grid from their own timestamps, with every irregularity counted, never hidden.

One definition for every place a timestamped recording enters harjax (a stream to predict on; the recordings a
dataset is built from). The sample period of a recording is the median step between its distinct timestamps in
time order. Walking its rows in the order written:

  a row with NaN or Inf        dropped, counted (the grid is interpolated across it like any missing sample)
  a period far from the grid's more than MAX_PERIOD_RATIO (100) times the grid's step, or under 1/100 of it:
                               refused as a time-unit error (ms timestamps read as seconds), naming the file
  rows out of order throughout more than MAX_CLOCK_JUMPS (3) steps back by half a period or more, in more than
                               UNORDERED_FRACTION (1%) of the rows (a shuffled or reversed file, not a clock set
                               back): the whole file is sorted by time, counted as rows_reordered (the rows moved)
  duplicate timestamp          dropped (the first row of that time is kept), counted
  a step back <= one period    out of order: sorted back into place within its segment, counted
  a step back > one period     a clock jump back: the recording is split there, and each segment is resampled (and
                               predicted) on its own, never merged with another; counted. on_clock_jump='stop'
                               refuses the recording instead, naming the row
  a step forward > max_gap     a gap: the grid steps inside it are masked (mask False, values 0), not interpolated;
                               the gaps and their steps are counted

Between samples every channel is interpolated linearly. A segment of fewer than two rows cannot be put on a grid:
it is dropped and counted. `resample` puts each segment on its own grid (streaming prediction); `onto_grid` lays
the whole recording on a given grid, another clock's span (a recordings build aligning sensors to a video clip).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harjax import errors

CLOCK_JUMP_ACTIONS = ("split", "stop")
DEFAULT_MAX_GAP_PERIODS = 5.0  # a gap of a few missing samples is interpolated; a longer one is masked
# A sample period this many times the grid's step (or this fraction of it) is a time-unit error. Real sensors lie
# within 50x of a 50 Hz grid (1 Hz to 2 kHz), while ms read as s is 1000x: at 100, a x1000 error is caught for any
# sensor within 10x of the grid's rate (5-500 Hz at 50 Hz), and us or ns errors (1e6x, 1e9x) for every one.
MAX_PERIOD_RATIO = 100.0
# A few steps back are a clock set back (split into segments); more, in a larger share of the rows, are rows
# written out of order (a shuffled or reversed file), which sorting by time puts right.
MAX_CLOCK_JUMPS = 3
UNORDERED_FRACTION = 0.01


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of a recording whose clock ran forward, on a regular grid."""

    time: np.ndarray  # [S] seconds, in the recording's own clock
    values: np.ndarray  # [S, C] float32; 0 where masked
    mask: np.ndarray  # [S] bool: False inside a gap longer than max_gap_periods


def sample_period(time: np.ndarray, rate_hz: float, origin: str) -> float:
    """The median step of a recording's distinct finite timestamps in time order, refused if unusable on the grid.

    Refused (errors.UserError naming `origin`): a rate that is not positive, fewer than two distinct timestamps,
    or a period more than MAX_PERIOD_RATIO times longer or shorter than the grid's step at rate_hz (a time-unit
    error).
    """
    if not rate_hz > 0:
        raise errors.ConfigError(f"{origin}: the sampling rate must be positive, got {rate_hz}")
    time = np.asarray(time, np.float64)
    steps = np.diff(np.unique(time[np.isfinite(time)]))
    if not len(steps):
        raise errors.UserError(f"{origin}: fewer than two distinct timestamps; nothing to resample")
    period = float(np.median(steps))
    ratio = period * rate_hz
    if not 1 / MAX_PERIOD_RATIO <= ratio <= MAX_PERIOD_RATIO:
        times = f"{ratio:,.0f} times" if ratio > 1 else f"1/{1 / ratio:,.0f} of"
        raise errors.UserError(
            f"{origin}: the median sample period is {period:.6g} s, {times} the step of the {rate_hz:g} Hz grid: "
            "check the time unit (the manifest's 'time_unit' column, or 'sensor_rate_hz'; for a stream, that its "
            "time column is in seconds)"
        )
    return period


def _segments(
    time: np.ndarray, values: np.ndarray, rate_hz: float, origin: str, max_gap_periods: float, on_clock_jump: str
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float, dict[str, int]]:
    """(the recording's forward-running parts, sorted with distinct timestamps; its period; what was found)."""
    if on_clock_jump not in CLOCK_JUMP_ACTIONS:
        raise errors.ConfigError(f"--on_clock_jump must be one of {CLOCK_JUMP_ACTIONS}, got {on_clock_jump!r}")
    if not max_gap_periods > 1:
        raise errors.ConfigError(f"--max_gap_periods must be > 1 (sample periods), got {max_gap_periods}")
    time = np.asarray(time, np.float64)
    values = np.asarray(values, np.float64)
    if time.ndim != 1 or values.ndim != 2 or len(time) != len(values):
        raise errors.UserError(
            f"{origin}: timestamps must be [T] and values [T, C], got {list(time.shape)} and {list(values.shape)}"
        )
    rows = np.arange(len(time))
    usable = np.isfinite(time) & np.isfinite(values).all(axis=1)
    report = {"rows": len(time), "rows_with_nan_dropped": int((~usable).sum()), "rows_reordered": 0}
    time, values, rows = time[usable], values[usable], rows[usable]
    period = sample_period(time, rate_hz, origin)
    back = int((np.diff(time) <= -period / 2).sum())
    if back > MAX_CLOCK_JUMPS and back > UNORDERED_FRACTION * len(time):  # written out of order, not a clock reset
        order = np.argsort(time, kind="stable")
        report["rows_reordered"] = int((order != np.arange(len(time))).sum())
        time, values, rows = time[order], values[order], rows[order]
    steps = np.diff(time)
    jumps = np.flatnonzero(steps < -period) + 1  # rows where the clock went back by more than a sample period
    report |= {
        "duplicate_timestamps_dropped": 0,
        "out_of_order_timestamps": int(((steps < 0) & (steps >= -period)).sum()),
        "clock_jumps_back": len(jumps),
        "gaps": 0,
        "gap_steps_masked": 0,
        "segments_too_short_dropped": 0,
    }
    if len(jumps) and on_clock_jump == "stop":
        row = int(rows[jumps[0]])
        raise errors.UserError(
            f"{origin}: the clock jumps back at row {row} ({time[jumps[0] - 1]:.6g} s -> {time[jumps[0]]:.6g} s); "
            "fix the timestamps, or predict each part on its own (--on_clock_jump=split)"
        )
    parts = []
    for part_time, part_values in zip(np.split(time, jumps), np.split(values, jumps), strict=True):
        order = np.argsort(part_time, kind="stable")
        part_time, part_values = part_time[order], part_values[order]
        distinct = np.concatenate([[True], np.diff(part_time) > 0])
        report["duplicate_timestamps_dropped"] += int((~distinct).sum())
        part_time, part_values = part_time[distinct], part_values[distinct]
        if len(part_time) < 2:
            report["segments_too_short_dropped"] += 1
            continue
        report["gaps"] += int((np.diff(part_time) > max_gap_periods * period).sum())
        parts.append((part_time, part_values))
    report["segments"] = len(parts)
    return parts, period, report


def resample(
    time: np.ndarray,
    values: np.ndarray,
    rate_hz: float,
    origin: str,
    max_gap_periods: float = DEFAULT_MAX_GAP_PERIODS,
    on_clock_jump: str = "split",
) -> tuple[list[Segment], dict[str, int]]:
    """(segments on a grid at rate_hz, what was found: counts by kind) of time [T] seconds, values [T, C]."""
    parts, period, report = _segments(time, values, rate_hz, origin, max_gap_periods, on_clock_jump)
    segments = []
    for part_time, part_values in parts:
        grid = part_time[0] + np.arange(int(np.floor((part_time[-1] - part_time[0]) * rate_hz + 1e-9)) + 1) / rate_hz
        resampled, recorded = _interpolate(part_time, part_values, grid, max_gap_periods * period)  # [S, C], [S]
        report["gap_steps_masked"] += int((~recorded).sum())
        segments.append(Segment(grid, resampled, recorded))
    return segments, report


def onto_grid(
    time: np.ndarray,
    values: np.ndarray,
    grid: np.ndarray,
    origin: str,
    max_gap_periods: float = DEFAULT_MAX_GAP_PERIODS,
    rate_hz: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(values [G, C] float32, recorded [G] bool, what was found) of a recording on a given grid [G] of seconds.

    For aligning a recording with another clock's span (a video clip's): grid steps outside the recording, or
    inside a gap longer than max_gap_periods, are not recorded (values 0). After a clock jump back the parts
    overlap in time; a grid step keeps the first part's value, and the later part's steps there are counted as
    'steps_hidden_by_clock_jump'. rate_hz is the grid's (by default from its steps; give it for a one-step grid).
    """
    grid = np.asarray(grid, np.float64)
    if rate_hz is None:
        rate_hz = 1.0 / float(np.median(np.diff(grid))) if len(grid) > 1 else 1.0
    parts, period, report = _segments(time, values, rate_hz, origin, max_gap_periods, "split")
    channels = np.shape(values)[1]
    laid = np.zeros((len(grid), channels), np.float32)
    recorded = np.zeros(len(grid), bool)
    report |= {"steps_hidden_by_clock_jump": 0}
    for part_time, part_values in parts:
        inside = (grid >= part_time[0]) & (grid <= part_time[-1])  # [G]
        resampled, part_recorded = _interpolate(part_time, part_values, grid[inside], max_gap_periods * period)
        report["gap_steps_masked"] += int((~part_recorded).sum())
        fresh = part_recorded & ~recorded[inside]
        report["steps_hidden_by_clock_jump"] += int((part_recorded & recorded[inside]).sum())
        target = np.flatnonzero(inside)[fresh]
        laid[target], recorded[target] = resampled[fresh], True
    return laid, recorded, report


def _interpolate(
    time: np.ndarray, values: np.ndarray, grid: np.ndarray, max_gap_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """(values [S, C] float32 at grid [S], recorded [S]) of one part (sorted, distinct timestamps covering grid).

    Grid steps inside a gap longer than max_gap_s are not recorded and hold 0.
    """
    resampled = np.stack([np.interp(grid, time, values[:, channel]) for channel in range(values.shape[1])], axis=1)
    after = np.searchsorted(time, grid, side="right")  # [S]: the first sample after each grid step
    before = np.maximum(after - 1, 0)
    spans = time[np.minimum(after, len(time) - 1)] - time[before]  # the step between the samples around each point
    inside = (spans > max_gap_s) & (grid > time[before]) & (after < len(time))
    resampled[inside] = 0.0
    return resampled.astype(np.float32), ~inside
