"""Timestamped recordings onto a grid: every irregularity counted, a clock jump never merged, a long gap masked."""

import numpy as np
import pytest

from harjax import errors
from harjax.data import resampling


def _ramp(time):
    """Values a linear function of time, so linear interpolation is exact: [T, 2]."""
    time = np.asarray(time, np.float64)
    return np.stack([time, -2 * time], axis=1)


def test_a_regular_recording_resamples_exactly():
    time = np.arange(0, 2, 0.01)  # 100 Hz
    segments, report = resampling.resample(time, _ramp(time), 50.0, "r.csv")
    assert len(segments) == 1 and report["segments"] == 1
    segment = segments[0]
    np.testing.assert_allclose(segment.time, np.arange(0, 1.99 + 1e-9, 0.02))
    np.testing.assert_allclose(segment.values, _ramp(segment.time), atol=1e-5)
    assert segment.mask.all()
    assert {key: value for key, value in report.items() if key not in ("rows", "segments")} == dict.fromkeys(
        (
            "rows_with_nan_dropped",
            "rows_reordered",
            "duplicate_timestamps_dropped",
            "out_of_order_timestamps",
            "clock_jumps_back",
            "gaps",
            "gap_steps_masked",
            "segments_too_short_dropped",
        ),
        0,
    )


def test_small_steps_back_are_sorted_and_duplicates_dropped_and_counted():
    time = np.array([0.0, 0.1, 0.3, 0.2, 0.4, 0.4, 0.5])  # 0.3 and 0.2 swapped (less than a period back)
    values = _ramp(time)
    values[5] = 99.0  # the second row at 0.4 s: dropped, the first kept
    segments, report = resampling.resample(time, values, 10.0, "r.csv")
    assert report["out_of_order_timestamps"] == 1 and report["duplicate_timestamps_dropped"] == 1
    assert report["clock_jumps_back"] == 0 and len(segments) == 1
    np.testing.assert_allclose(segments[0].values, _ramp(segments[0].time), atol=1e-5)


def test_a_clock_jump_back_splits_the_recording_into_segments_never_merged():
    first, second = np.arange(10) / 10, 0.2 + np.arange(6) / 10  # the clock restarts at 0.2 s
    time = np.concatenate([first, second])
    values = np.concatenate([np.zeros((10, 2)), np.ones((6, 2))])
    segments, report = resampling.resample(time, values, 10.0, "r.csv")
    assert report["clock_jumps_back"] == 1 and report["segments"] == 2
    np.testing.assert_allclose(segments[0].values, 0.0)  # neither part's values reach the other
    np.testing.assert_allclose(segments[1].values, 1.0)
    np.testing.assert_allclose(segments[1].time, second, atol=1e-9)
    with pytest.raises(errors.UserError, match=r"r\.csv: the clock jumps back at row 10 \(0\.9 s -> 0\.2 s\)"):
        resampling.resample(time, values, 10.0, "r.csv", on_clock_jump="stop")


def test_a_few_clock_jumps_back_in_a_long_recording_still_split_it():
    parts = [start + np.arange(200) / 50 for start in (0.0, 2.0, 1.0, 3.0)]  # set back three times, 800 rows
    time = np.concatenate(parts)
    values = np.repeat(np.arange(4.0), 200)[:, None] * np.ones((1, 2))
    segments, report = resampling.resample(time, values, 50.0, "r.csv")
    assert report["clock_jumps_back"] == 3 and report["rows_reordered"] == 0
    assert [float(segment.values[0, 0]) for segment in segments] == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("order", ["shuffled", "reversed"])
def test_rows_written_out_of_order_are_sorted_whole_and_counted(order):
    time = np.arange(0, 3, 0.01)  # 100 Hz
    values = np.stack([np.sin(3 * time), np.cos(5 * time)], axis=1)
    moved = np.random.default_rng(0).permutation(len(time)) if order == "shuffled" else np.arange(len(time))[::-1]
    (expected,), _ = resampling.resample(time, values, 50.0, "r.csv")
    (segment,), report = resampling.resample(time[moved], values[moved], 50.0, "r.csv")
    np.testing.assert_array_equal(segment.time, expected.time)
    np.testing.assert_array_equal(segment.values, expected.values)
    assert segment.mask.all() and report["gaps"] == 0 and report["clock_jumps_back"] == 0
    assert report["rows_reordered"] == int((moved != np.arange(len(time))).sum())
    grid = np.arange(0.5, 2.5, 0.02)  # a clip's span: the same values through onto_grid
    laid, recorded, report = resampling.onto_grid(time[moved], values[moved], grid, "r.csv")
    np.testing.assert_array_equal(laid, resampling.onto_grid(time, values, grid, "r.csv")[0])
    assert recorded.all() and report["steps_hidden_by_clock_jump"] == 0 and report["rows_reordered"] > 0


@pytest.mark.parametrize(
    "scale, period",
    [(1e3, "20 s"), (1e-3, "2e-05 s")],  # 50 Hz stamped in ms but read as s; in s but read as ms
)
def test_a_sample_period_far_from_the_grids_is_refused_as_a_time_unit_error(scale, period):
    time = np.arange(0, 3, 0.02) * scale
    message = rf"^r\.csv: the median sample period is {period}, .* the step of the 50 Hz grid: check the time unit"
    with pytest.raises(errors.UserError, match=message) as refused:
        resampling.resample(time, _ramp(time), 50.0, "r.csv")
    assert "'time_unit'" in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(errors.UserError, match=message):
        resampling.onto_grid(time, _ramp(time), np.arange(0, 2, 0.02), "r.csv")


@pytest.mark.parametrize("sensor_hz", [1.0, 5.0, 500.0, 2000.0])
def test_real_sensor_rates_are_not_taken_for_a_time_unit_error(sensor_hz):
    time = np.arange(0, 20, 1 / sensor_hz)
    (segment,), _ = resampling.resample(time, _ramp(time), 50.0, "r.csv")
    np.testing.assert_allclose(segment.values, _ramp(segment.time), atol=1e-4)


def test_a_long_gap_is_masked_not_interpolated():
    time = np.concatenate([np.arange(0, 1, 0.1), np.arange(2.0, 3.0, 0.1)])  # nothing between 0.9 and 2.0 s
    segments, report = resampling.resample(time, _ramp(time) + 5, 10.0, "r.csv", max_gap_periods=5)
    (segment,) = segments
    hidden = (segment.time > 0.9 + 1e-9) & (segment.time < 2.0 - 1e-9)
    assert report["gaps"] == 1 and report["gap_steps_masked"] == hidden.sum() == 10
    np.testing.assert_array_equal(segment.mask, ~hidden)
    assert not segment.values[hidden].any()  # zero, as padding
    np.testing.assert_allclose(segment.values[~hidden], _ramp(segment.time[~hidden]) + 5, atol=1e-5)
    # A short gap (two missing samples, under max_gap_periods) is interpolated.
    short = np.delete(np.arange(0, 2, 0.1), [5, 6])
    segments, report = resampling.resample(short, _ramp(short), 10.0, "r.csv", max_gap_periods=5)
    assert report["gaps"] == 0 and segments[0].mask.all()


def test_rows_with_nan_and_too_short_segments_are_dropped_and_counted():
    time = np.array([0.0, 0.1, 0.2, 0.3, 0.0])  # the last row alone after a jump back: too short to resample
    values = _ramp(time)
    values[1, 0] = np.nan
    segments, report = resampling.resample(time, values, 10.0, "r.csv")
    assert report["rows_with_nan_dropped"] == 1 and report["segments_too_short_dropped"] == 1
    assert len(segments) == 1


@pytest.mark.parametrize(
    "time, message",
    [
        (np.zeros(5), r"r\.csv: fewer than two distinct timestamps"),
        (np.array([0.0]), r"r\.csv: fewer than two distinct timestamps"),
    ],
)
def test_a_recording_without_a_clock_is_refused(time, message):
    with pytest.raises(errors.UserError, match=message):
        resampling.resample(time, _ramp(time), 10.0, "r.csv")


def test_bad_settings_name_the_flag():
    time = np.arange(0, 1, 0.1)
    with pytest.raises(errors.ConfigError, match="--on_clock_jump must be one of"):
        resampling.resample(time, _ramp(time), 10.0, "r.csv", on_clock_jump="merge")
    with pytest.raises(errors.ConfigError, match="--max_gap_periods must be > 1"):
        resampling.resample(time, _ramp(time), 10.0, "r.csv", max_gap_periods=0.5)
