"""Nothing stale, nothing lost: extractions and builds keyed by everything they read (generated own recordings).

A row whose clip, span or context changes is extracted again, and a build never uses its old embedding; a build
is reused only for the same manifest, files, embeddings and settings, and one data_dir and name never hold builds
of two; a killed extraction leaves no decode worker behind; its input errors are one line.
"""

import json
import os
import re

import numpy as np
import pytest

from data_builders import extraction
from data_builders.recordings import build
from harjax import errors
from harjax.video import decoding


def test_writing_an_embedding_that_fails_leaves_no_temporary_file(tmp_path):
    with pytest.raises(OSError):
        extraction.write_atomic(str(tmp_path / ("a" * 300 + ".npz")), {"x": np.zeros(3)})
    assert os.listdir(tmp_path) == []


def _sensor_manifest(root, rows=8, order=("wrist", "thigh")):
    """A CSV manifest of `rows` examples with a 3-channel CSV stream and a 2-channel .npy stream at a fixed rate."""
    rng = np.random.default_rng(0)
    lines = ["id,sensors,sensor_rate_hz,channels,label,subject,split"]
    for index in range(rows):
        wrist = np.column_stack([np.arange(0, 3, 0.02), rng.normal(size=(150, 3))])  # 3 s at 50 Hz
        np.savetxt(root / f"w{index}.csv", wrist, delimiter=",", header="time,x,y,z", comments="")
        np.save(root / f"t{index}.npy", rng.normal(size=(150, 2)))
        files = {"wrist": f"w{index}.csv", "thigh": f"t{index}.npy"}
        streams = ";".join(f"{stream}={files[stream]}" for stream in order)
        label, split = ("sit", "walk")[index % 2], "train" if index < rows // 2 else "test"
        lines.append(f'r{index},{streams},50,"a,b",{label},{index},{split}')
    path = root / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _first_example(directory):
    import tensorflow_datasets as tfds

    return tfds.builder_from_directory(directory).as_data_source("manifest_train")[0]


def _built_files(directory):
    return {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in os.listdir(directory)}


def test_a_build_is_reused_only_while_nothing_it_reads_changes(tmp_path):
    manifest_path = _sensor_manifest(tmp_path)
    broken = tmp_path / "w2.csv"
    broken.write_text(broken.read_text().replace("time,", "tme,", 1))  # row 3's file: skipped until fixed
    data = str(tmp_path / "data")
    directory, report = build.build(manifest_path, data)
    assert [row["id"] for rows in report["skipped"].values() for row in rows] == ["r2"]
    written = _built_files(directory)
    assert build.build(manifest_path, data)[0] == directory
    assert {name: time for name, time in _built_files(directory).items() if name != "build_report.json"} == {
        name: time for name, time in written.items() if name != "build_report.json"
    }
    for options, named in [
        ({"min_coverage": 0.5}, "min_coverage 0.9 -> 0.5"),
        ({"class_names": ["walk", "sit"]}, "classes None -> ['walk', 'sit']"),
        ({"leave_subjects_out": True}, "leave_subjects_out False -> True"),
        ({"max_gap_periods": 3.0}, "max_gap_periods 5.0 -> 3.0"),
    ]:
        with pytest.raises(
            errors.UserError, match=f"{directory} was built from other inputs .*{re.escape(named)}.*--replace"
        ):
            build.build(manifest_path, data, **options)

    broken.write_text(broken.read_text().replace("tme,", "time,", 1))  # the skipped row's file fixed
    with pytest.raises(errors.UserError, match=r"1 sensor files or clips \(.*w2\.csv\)"):
        build.build(manifest_path, data)
    directory, report = build.build(manifest_path, data, replace=True)
    assert report["examples"] == 8 and not report["skipped"]
    metadata = json.load(open(os.path.join(directory, "metadata.json")))
    assert metadata["inputs"]["files"][str(broken)]["sha256"] == decoding.file_identity(str(broken))["sha256"]
    assert not [entry for entry in os.listdir(os.path.dirname(directory)) if entry.startswith(".replaced")]

    (tmp_path / "data" / "notes.txt").write_text("a user's file beside the builds is none of their business")
    with open(os.path.join(directory, "my_notes.txt"), "w") as f:
        f.write("mine")
    with pytest.raises(errors.UserError, match="holds files no build wrote \\(my_notes.txt\\)"):
        build.build(manifest_path, data, min_coverage=0.5, replace=True)
    assert open(os.path.join(directory, "my_notes.txt")).read() == "mine"


def test_one_data_dir_and_name_never_hold_builds_of_two_manifests(tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    data = str(tmp_path / "data")
    sensors_50hz, _ = build.build(_sensor_manifest(first), data)
    other = tmp_path / "other"
    other.mkdir()
    other_manifest = _sensor_manifest(other, rows=6)
    with pytest.raises(errors.UserError, match=f"{sensors_50hz} was built from other inputs \\(the manifest"):
        build.build(other_manifest, data, sensor_rate_hz=25.0)  # another config of the same name
    assert not os.path.exists(os.path.join(data, "recordings", "sensors-25hz"))
    sensors_25hz, report = build.build(other_manifest, data, sensor_rate_hz=25.0, replace=True)
    assert report["examples"] == 6 and not os.path.exists(sensors_50hz) and os.path.isdir(sensors_25hz)

    with open(os.path.join(sensors_25hz, "metadata.json")) as f:  # a build made before builds recorded inputs
        metadata = json.load(f)
    del metadata["inputs"]
    with open(os.path.join(sensors_25hz, "metadata.json"), "w") as f:
        json.dump(metadata, f)
    with pytest.raises(errors.UserError, match="built before builds recorded their inputs"):
        build.build(other_manifest, data, sensor_rate_hz=25.0)


def test_streams_listed_in_another_order_are_reordered_and_one_odd_row_disqualifies_only_itself(tmp_path):
    manifest_path = _sensor_manifest(tmp_path)
    directory, report = build.build(manifest_path, str(tmp_path / "data"))
    lines = open(manifest_path).read().splitlines()
    lines[1] = lines[1].replace("wrist=w0.csv;thigh=t0.npy", "thigh=t0.npy;wrist=w0.csv")  # row 1: another order
    extra = np.loadtxt(tmp_path / "w3.csv", delimiter=",", skiprows=1)
    np.savetxt(
        tmp_path / "w3x.csv", np.column_stack([extra, extra[:, 1]]), delimiter=",", header="time,x,y,z,q", comments=""
    )
    lines[4] = lines[4].replace("w3.csv", "w3x.csv")  # row 4: a fourth wrist channel
    reordered = tmp_path / "reordered.csv"
    reordered.write_text("\n".join(lines) + "\n")
    other, other_report = build.build(str(reordered), str(tmp_path / "data2"))
    assert other_report["streams_reordered"] == 1 and list(other_report["skipped"]) == ["different_channels"]
    (skipped,) = other_report["skipped"]["different_channels"]
    assert skipped["id"] == "r3" and "wrist_q" in skipped["detail"] and "7 of 8 rows" in skipped["detail"]
    built = json.load(open(os.path.join(other, "metadata.json")))
    assert built["sensor_channels"] == ["wrist_x", "wrist_y", "wrist_z", "thigh_a", "thigh_b"]
    assert built["stream_channels"] == [3, 2]
    np.testing.assert_array_equal(_first_example(other)["sensor"], _first_example(directory)["sensor"])

    lines[4] = lines[4].replace("w3x.csv", "w3.csv")
    lines[1] = lines[1].replace("thigh=t0.npy;wrist=w0.csv", "thigh=t0.npy")  # row 1 lacks a stream: odd, not the rule
    first_odd = tmp_path / "first_odd.csv"
    first_odd.write_text("\n".join(lines) + "\n")
    _, odd_report = build.build(str(first_odd), str(tmp_path / "data3"))
    assert odd_report["examples"] == 7 and [row["id"] for row in odd_report["skipped"]["different_channels"]] == ["r0"]


def test_a_channel_constant_over_a_training_split_is_reported(tmp_path, capsys):
    manifest_path = _sensor_manifest(tmp_path)
    for index in range(8):
        values = np.load(tmp_path / f"t{index}.npy")
        values[:, 1] = 9.81  # thigh_b never moves
        np.save(tmp_path / f"t{index}.npy", values)
    directory, report = build.build(manifest_path, str(tmp_path / "data"))
    assert report["constant_channels"] == {"manifest": ["thigh_b"]}
    build.print_report(directory, report)
    assert "constant over manifest's training split" in capsys.readouterr().out
