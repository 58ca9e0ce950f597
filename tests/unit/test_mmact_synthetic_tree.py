"""The synthetic MMAct tree: real layout, real defects, and the layout/sensor modules handle every one."""

import collections
import json
import os

import av
import numpy as np
import pytest

from data_builders.mmact import layout, sensors, synthetic_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mmact"))
    return root, synthetic_tree.write_tree(root)


def test_layout_and_manifest(tree):
    root, manifest = tree
    assert json.load(open(os.path.join(root, synthetic_tree.MANIFEST))) == manifest
    scans = [layout.scan_sensor_stream(root, stream) for stream in layout.SENSOR_STREAMS]
    trials = list(layout.iter_trials(scans))
    assert len(trials) == len(manifest["trials"]) == 3 * 3 * 2 * 3
    assert sorted(trial.key for trial in trials) == sorted(manifest["trials"])
    assert {trial.action for trial in trials if trial.scene == 3} >= {"using_phone_desk", "talking_on_phone_desk"}
    assert all(not scan.unknown_actions for scan in scans)
    case_variant = manifest["quirks"]["case_variant"][0]
    (found,) = [files for trial, files in scans[0].files.items() if trial.key == case_variant]
    assert os.path.basename(found[0].path)[0].isupper()
    videos = layout.scan_videos(layout.find_video_root(root))
    assert sum(len(files) for files in videos.files.values()) == len(trials) * 4 - 1  # one view missing


def test_sensor_defects_are_repaired_and_counted(tree):
    root, manifest = tree
    scans = {stream: layout.scan_sensor_stream(root, stream) for stream in layout.SENSOR_STREAMS}
    counts = collections.Counter()
    shapes = []
    for trial in layout.iter_trials(list(scans.values())):
        paths = [
            scans[stream].files[trial][0].path if trial in scans[stream].files else None
            for stream in layout.SENSOR_STREAMS
        ]
        values, present = sensors.read_trial(paths, rate_hz=50, counts=counts)
        shapes.append(values.shape)
        assert present.sum() >= 3 and np.isfinite(values).all()
    quirks = manifest["quirks"]
    assert counts["missing_file"] == len(quirks["missing_sensor_file"]) == 1
    assert counts["empty_file"] == len(quirks["empty_sensor_file"]) == 1
    assert counts["unsorted_file"] >= len(quirks["unsorted_file"])  # orientation jitter may reorder too
    assert counts["duplicate_timestamp"] == quirks["duplicate_rows"] == 3
    assert counts["timestamp_without_fraction"] > 0
    assert all(shape[1] == 12 and 90 <= shape[0] <= 200 for shape in shapes)  # 2-4 s at 50 Hz


def test_rates_match_the_release(tree):
    root, _ = tree
    for stream, rate in synthetic_tree.SENSOR_RATES_HZ.items():
        scan = layout.scan_sensor_stream(root, stream)
        path = next(files[0].path for files in scan.files.values() if os.path.getsize(files[0].path))
        stream_data = sensors.read_stream(path, collections.Counter())
        assert 1 / np.median(np.diff(stream_data.seconds)) == pytest.approx(rate, rel=0.05)


def test_clips_decode_and_show_class_dependent_motion(tree):
    root, manifest = tree
    videos = layout.scan_videos(layout.find_video_root(root))
    undecodable = manifest["quirks"]["undecodable_clip"][0]
    with pytest.raises(av.error.FFmpegError):
        with av.open(undecodable) as container:
            list(container.decode(video=0))

    def square_path(action):
        trial = next(t for t in videos.files if t.action == action and t.subject == 1)
        with av.open(videos.files[trial][0].path) as container:
            frames = [frame.to_ndarray(format="rgb24").mean(-1) for frame in container.decode(video=0)]
        return [np.argwhere(frame > 150)[:, 1].mean() for frame in frames[:4]]  # the square's column

    slow, fast = np.diff(square_path("walking")).mean(), np.diff(square_path("fall")).mean()
    assert len(square_path("walking")) == 4 and fast != pytest.approx(slow, abs=0.5)


def test_the_demo_and_the_dummy_data_never_write_over_files_they_did_not_write(tmp_path):
    from data_builders.mmact import demo, make_dummy_data
    from harjax import errors

    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "my_release.txt").write_text("a real recording session")
    with pytest.raises(errors.UserError, match=r"manual holds files the demo did not write"):
        demo.prepare(str(tmp_path), tree="tiny")
    with pytest.raises(errors.UserError, match=r"manual exists and is not a synthetic tree harjax wrote"):
        make_dummy_data.make_dummy_data(str(tmp_path / "manual"))
    assert os.listdir(tmp_path / "manual") == ["my_release.txt"]
    assert (tmp_path / "manual" / "my_release.txt").read_text() == "a real recording session"
