"""MMAct layout rules and the sensor CSV repairs: one test per quirk of the real release."""

import collections
import datetime

import numpy as np
import pytest

from data_builders.mmact import layout, sensors

START = datetime.datetime(2018, 10, 16, 13, 37, 28)


def _timestamp(offset_seconds, with_fraction=True):
    moment = START + datetime.timedelta(seconds=offset_seconds)
    text = moment.strftime("%Y%m%d_%H:%M:%S")
    return text + (f".{moment.microsecond:06d}" if with_fraction else "")


def _write(path, rows):
    path.write_text("".join(f"{ts},{x},{y},{z}\n" for ts, x, y, z in rows))
    return str(path)


def _sine_rows(rate_hz, seconds, frequency=1.0, phase=0.0, start=0.0):
    times = start + np.arange(int(seconds * rate_hz)) / rate_hz
    return [(_timestamp(t), np.sin(2 * np.pi * frequency * t + phase), 9.8, -t) for t in times], times


def test_the_37_classes_with_case_variants_and_desk_renames():
    assert len(layout.CLASSES) == 37 and len(set(layout.CLASSES)) == 37
    assert layout.action_class("Carrying_light", scene=1) == "carrying_light"
    assert layout.action_class("using_phone", scene=1) == "using_phone"
    assert layout.action_class("using_phone", scene=3) == "using_phone_desk"
    assert layout.action_class("Talking_on_phone", scene=3) == "talking_on_phone_desk"
    assert layout.action_class("juggling", scene=1) is None


def test_protocols_assign_trials_and_views():
    trial = layout.Trial(subject=17, scene=2, session=5, action="walking")
    assert layout.is_test("cross_subject", trial) and layout.is_test("cross_scene", trial)
    assert layout.is_test("cross_session", trial)
    assert not layout.is_test("cross_subject", layout.Trial(16, 1, 1, "walking"))
    assert layout.is_test("cross_view", trial, camera=4) and not layout.is_test("cross_view", trial, camera=1)
    with pytest.raises(ValueError, match="pass camera="):
        layout.is_test("cross_view", trial)
    with pytest.raises(ValueError, match="unknown protocol 'cross_moon'"):
        layout.is_test("cross_moon", trial)


def test_scans_find_trials_in_the_release_layout(tmp_path):
    sensor_dir = tmp_path / "acc_phone_clip" / "subject3" / "scene3" / "session2"
    sensor_dir.mkdir(parents=True)
    for name in ("Using_phone.csv", "walking.csv", "juggling.csv", "notes.txt"):
        (sensor_dir / name).write_text("")
    video_dir = tmp_path / "RGB" / "subject3" / "cam4" / "scene3" / "session2"
    video_dir.mkdir(parents=True)
    (video_dir / "walking.mp4").write_bytes(b"")

    scan = layout.scan_sensor_stream(str(tmp_path), "acc_phone_clip")
    assert sorted(trial.action for trial in scan.files) == ["using_phone_desk", "walking"]
    assert [p.endswith("juggling.csv") for p in scan.unknown_actions] == [True]
    videos = layout.scan_videos(layout.find_video_root(str(tmp_path)))
    (found,) = videos.files[layout.Trial(3, 3, 2, "walking")]
    assert found.camera == 4
    with pytest.raises(FileNotFoundError, match="no video folder"):
        layout.find_video_root(str(tmp_path), "Video_trimmed")


def test_timestamps_without_fraction_mean_a_whole_second(tmp_path):
    counts = collections.Counter()
    rows = [
        (_timestamp(0.0, with_fraction=False), 1, 2, 3),
        (_timestamp(0.5), 4, 5, 6),
        (_timestamp(1.0, with_fraction=False), 7, 8, 9),
    ]
    stream = sensors.read_stream(_write(tmp_path / "a.csv", rows), counts)
    np.testing.assert_allclose(stream.seconds - stream.seconds[0], [0.0, 0.5, 1.0])
    assert counts["timestamp_without_fraction"] == 2


def test_out_of_order_and_duplicate_rows_are_sorted_and_dropped(tmp_path):
    counts = collections.Counter()
    rows = [
        (_timestamp(0.02), 2, 0, 0),
        (_timestamp(0.0), 0, 0, 0),
        (_timestamp(0.01), 1, 0, 0),
        (_timestamp(0.01), 99, 0, 0),
        (_timestamp(0.03), 3, 0, 0),
    ]
    stream = sensors.read_stream(_write(tmp_path / "a.csv", rows), counts)
    assert stream.values[:, 0].tolist() == [0, 1, 2, 3]  # the first of the duplicates is kept
    assert np.all(np.diff(stream.seconds) > 0)
    assert counts["unsorted_file"] == 1 and counts["duplicate_timestamp"] == 1


@pytest.mark.parametrize("content", ["", "\n\n", "garbage\nmore,garbage\n"])
def test_empty_and_unusable_files_give_no_stream(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    counts = collections.Counter()
    assert sensors.read_stream(str(path), counts) is None
    assert counts["empty_file"] == 1


def test_malformed_rows_are_skipped_and_counted(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(
        f"{_timestamp(0)},1,2,3\n{_timestamp(0.01)},1,2\nnot-a-time,1,2,3\n{_timestamp(0.02)},x,2,3\n"
        f"{_timestamp(0.03)},nan,2,3\n{_timestamp(0.04)},4,5,6\n"
    )
    counts = collections.Counter()
    stream = sensors.read_stream(str(path), counts)
    assert stream.values[:, 0].tolist() == [1, 4] and counts["malformed_row"] == 4


def test_streams_at_different_rates_align_on_time(tmp_path):
    fast_rows, _ = _sine_rows(100, 4.0, frequency=0.5)
    slow_rows, _ = _sine_rows(50, 3.0, frequency=0.5, start=0.5)  # starts later, ends earlier
    counts = collections.Counter()
    values, present = sensors.read_trial(
        [
            _write(tmp_path / "fast.csv", fast_rows),
            None,
            _write(tmp_path / "slow.csv", slow_rows),
            str(tmp_path / "gone.csv"),
        ],
        rate_hz=50,
        counts=counts,
    )
    assert present.tolist() == [True, False, True, False] and counts["missing_file"] == 2
    assert values.shape == (int(round((3.48 - 0.5) * 50)) + 1, 12)  # the span both present streams cover
    grid = 0.5 + np.arange(len(values)) / 50
    expected = np.sin(2 * np.pi * 0.5 * grid)
    np.testing.assert_allclose(values[:, 0], expected, atol=0.01)  # 100 Hz stream, low-passed and resampled
    np.testing.assert_allclose(values[:, 6], expected, atol=1e-3)  # 50 Hz stream, same phase on the same clock
    np.testing.assert_allclose(values[:, 2], -grid, atol=0.01)
    assert not values[:, 3:6].any() and not values[:, 9:].any()  # absent streams stay zero


def test_resampling_does_not_alias_fast_vibration(tmp_path):
    """A 45 Hz component in a 100 Hz stream would fold to 5 Hz at 50 Hz without the low-pass."""
    times = np.arange(400) / 100
    rows = [(_timestamp(t), np.sin(2 * np.pi * 45 * t), 0, 0) for t in times]
    values, _ = sensors.read_trial([_write(tmp_path / "a.csv", rows)], rate_hz=50, counts=collections.Counter())
    assert np.abs(values[:, 0]).max() < 0.2


def test_a_stream_that_never_overlaps_is_dropped_and_counted(tmp_path):
    first, _ = _sine_rows(50, 2.0)
    second, _ = _sine_rows(50, 1.0, start=10.0)
    counts = collections.Counter()
    values, present = sensors.read_trial(
        [_write(tmp_path / "a.csv", first), _write(tmp_path / "b.csv", second)], rate_hz=50, counts=counts
    )
    assert present.tolist() == [True, False] and counts["stream_without_overlap"] == 1 and len(values) == 100
    assert not values[:, 3:].any()
    assert sensors.read_trial([None, None], 50, collections.Counter()) is None


def test_partial_overlap_is_counted(tmp_path):
    long_rows, _ = _sine_rows(50, 4.0)
    short_rows, _ = _sine_rows(50, 1.0, start=1.0)
    counts = collections.Counter()
    values, _ = sensors.read_trial(
        [_write(tmp_path / "a.csv", long_rows), _write(tmp_path / "b.csv", short_rows)], rate_hz=50, counts=counts
    )
    assert counts["streams_partly_overlap"] == 1 and len(values) == 50


def test_angles_are_resampled_across_the_wrap_around(tmp_path):
    """Azimuth going 350 -> 10 degrees must pass through 0, not 180."""
    times = np.arange(100) / 100
    azimuth = (350 + 20 * times) % 360
    rows = [(_timestamp(t), a, -179.5 + 359 * (i % 2), 0) for i, (t, a) in enumerate(zip(times, azimuth, strict=True))]
    values, _ = sensors.read_trial(
        [_write(tmp_path / "o.csv", rows)], rate_hz=50, counts=collections.Counter(), angular=[True]
    )
    distance_from_north = np.minimum(values[:, 0], 360 - values[:, 0])
    assert distance_from_north.max() <= 10.5 and values[:, 0].min() >= 0  # stays in [0, 360)
    roll = values[:, 1]  # alternating -179.5 / 179.5 is one angle, +-180: never averaged to 0
    assert np.all(np.abs(roll) > 170) and roll.min() >= -180
