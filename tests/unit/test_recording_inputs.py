"""What a lab's manifest and sensor files can get wrong is refused where it is read, naming the row, column and file.

Fast and in-process: small CSV, .mat and manifest files written to tmp_path, read by manifest.read and
sensors.align (and one sensors-only build, for the report a skipped row reaches).
"""

import json

import numpy as np
import pytest

from data_builders.recordings import build
from harjax import errors
from harjax.recordings import manifest, sensors


def _wrist_csv(path, time, header="t,x,y,z", encoding="utf-8"):
    """A 3-channel CSV whose values are smooth functions of time (so interpolation is near exact)."""
    values = np.column_stack([np.sin(time), np.cos(time), time / 10])
    lines = [header] + [",".join(f"{cell:.6f}" for cell in row) for row in np.column_stack([time, values])]
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _row(identifier="r0", sensor="w.csv", **columns):
    return {"id": identifier, "sensors": {"wrist": {"path": sensor, "time_column": "t"}}, "label": "sit"} | columns


# --- time unit ---


def test_ms_timestamps_read_as_seconds_are_refused_naming_the_file_and_time_unit(tmp_path):
    _wrist_csv(tmp_path / "w.csv", np.arange(0, 3000, 20.0))  # 50 Hz for 3 s, stamped in ms
    (forgotten,) = manifest.read(_jsonl(tmp_path / "m.jsonl", [_row()]))
    with pytest.raises(errors.UserError) as refused:
        sensors.align(forgotten)
    message = str(refused.value)
    assert "\n" not in message and "row 1 (r0)" in message and "w.csv" in message
    assert "20 s" in message and "50 Hz" in message and "'time_unit'" in message

    (declared,) = manifest.read(_jsonl(tmp_path / "ms.jsonl", [_row(time_unit="ms")]))
    assert len(sensors.align(declared).sensor) == 150  # 3 s at 50 Hz, not 1000x stretched


def test_a_row_in_the_wrong_time_unit_is_skipped_in_the_build_report_naming_time_unit(tmp_path):
    for index in range(4):
        _wrist_csv(tmp_path / f"w{index}.csv", np.arange(0, 3000, 20.0))
    labels, splits = ("sit", "walk", "sit"), ("train", "train", "test")
    rows = [_row(f"r{i}", f"w{i}.csv", time_unit="ms", label=labels[i], split=splits[i]) for i in range(3)]
    rows.append(_row("r3", "w3.csv", split="test"))  # time_unit forgotten
    _, report = build.build(_jsonl(tmp_path / "m.jsonl", rows), str(tmp_path / "data"))
    assert report["examples"] == 3
    ((reason, (skip,)),) = report["skipped"].items()
    assert (
        reason == "unreadable_sensors"
        and skip["row"] == 4
        and "w3.csv" in skip["detail"]
        and "'time_unit'" in skip["detail"]
    )


# --- row order ---


def test_a_shuffled_or_reversed_sensor_file_gives_the_sorted_files_values(tmp_path):
    time = np.arange(0, 3, 0.01)  # 100 Hz
    lines = _wrist_csv(tmp_path / "sorted.csv", time).read_text().splitlines()
    body = lines[1:]
    np.random.default_rng(0).shuffle(body)
    (tmp_path / "shuffled.csv").write_text("\n".join([lines[0], *body]) + "\n")
    (tmp_path / "reversed.csv").write_text("\n".join([lines[0], *lines[:0:-1]]) + "\n")
    rows = [_row(name, f"{name}.csv") for name in ("sorted", "shuffled", "reversed")]
    expected, shuffled, reversed_ = (sensors.align(row) for row in manifest.read(_jsonl(tmp_path / "m.jsonl", rows)))
    for aligned in (shuffled, reversed_):
        np.testing.assert_array_equal(aligned.sensor, expected.sensor)
        np.testing.assert_array_equal(aligned.mask, expected.mask)
        assert aligned.report["clock_jumps_back"] == 0 and aligned.report["gaps"] == 0
    assert expected.report["rows_reordered"] == 0
    assert shuffled.report["rows_reordered"] > 250 and reversed_.report["rows_reordered"] == 300


# --- reading sensor files ---


@pytest.mark.parametrize("size", [0, 100, 1000])
def test_an_empty_or_truncated_mat_file_is_skipped_naming_the_file(tmp_path, size):
    import scipy.io

    scipy.io.savemat(tmp_path / "whole.mat", {"d_iner": np.random.default_rng(0).normal(size=(150, 6))})
    (tmp_path / "cut.mat").write_bytes((tmp_path / "whole.mat").read_bytes()[:size])
    row = {"id": "r0", "sensors": "cut.mat", "sensor_rate_hz": 50, "label": "sit"}
    (recording,) = manifest.read(_jsonl(tmp_path / "m.jsonl", [row]))
    with pytest.raises(sensors.AlignmentError, match=r"^row 1 \(r0\): .*cut\.mat: cannot be read") as refused:
        sensors.align(recording)
    assert refused.value.reason == "unreadable_sensors"


def test_a_sensor_csv_with_a_byte_order_mark_reads_as_without(tmp_path):
    time = np.arange(0, 2, 0.02)
    _wrist_csv(tmp_path / "plain.csv", time)
    _wrist_csv(tmp_path / "bom.csv", time, encoding="utf-8-sig")
    assert (tmp_path / "bom.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    rows = [_row("plain", "plain.csv"), _row("bom", "bom.csv")]
    plain, bom = (sensors.align(row) for row in manifest.read(_jsonl(tmp_path / "m.jsonl", rows)))
    np.testing.assert_array_equal(bom.sensor, plain.sensor)


def test_a_sensor_csv_cell_that_is_no_number_drops_its_row_and_counts_it(tmp_path):
    time = np.arange(0, 2, 0.02)
    _wrist_csv(tmp_path / "w.csv", time)
    lines = (tmp_path / "w.csv").read_text().splitlines()
    cells = lines[50].split(",")
    lines[50] = ",".join([*cells[:2], "n/a", *cells[3:]])  # the 50th sample's y
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    (clean, damaged) = (
        sensors.align(row) for row in manifest.read(_jsonl(tmp_path / "m.jsonl", [_row("a"), _row("b", "bad.csv")]))
    )
    assert damaged.report["rows_with_nan_dropped"] == 1 and clean.report["rows_with_nan_dropped"] == 0
    assert damaged.mask.all() and np.isfinite(damaged.sensor).all()  # the grid interpolated across the row
    np.testing.assert_allclose(damaged.sensor, clean.sensor, atol=1e-3)


def test_a_sensor_csv_naming_a_column_twice_is_refused_naming_the_column(tmp_path):
    _wrist_csv(tmp_path / "w.csv", np.arange(0, 2, 0.02), header="t,x,x,z")
    (recording,) = manifest.read(_jsonl(tmp_path / "m.jsonl", [_row()]))
    with pytest.raises(sensors.AlignmentError, match=r"^row 1 \(r0\): .*w\.csv: the header repeats 'x'"):
        sensors.align(recording)


# --- manifest rows ---


def test_a_csv_manifest_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,sensors,label\nr0,w.csv,sit\n", encoding="utf-8-sig")
    (recording,) = manifest.read(str(path))
    assert recording.id == "r0" and recording.label == "sit"


def test_the_same_stream_twice_in_a_row_is_refused_naming_it(tmp_path):
    ok = json.dumps({"id": "ok", "sensors": "x.csv"})
    path = tmp_path / "m.jsonl"
    path.write_text(ok + '\n{"id": "r", "sensors": {"wrist": "a.csv", "phone": "p.csv", "wrist": "b.csv"}}\n')
    with pytest.raises(manifest.ManifestError, match=r"row 2, column 'sensors': stream 'wrist' is given twice"):
        manifest.read(str(path))
    path = tmp_path / "m.csv"
    path.write_text("id,sensors\nok,x.csv\nr,wrist=a.csv;wrist=b.csv\n")
    with pytest.raises(manifest.ManifestError, match=r"row 2, column 'sensors': stream 'wrist' is given twice"):
        manifest.read(str(path))


def test_a_column_twice_in_a_json_row_is_refused_naming_it(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "r", "sensors": "x.csv", "label": "sit", "label": "walk"}\n')
    with pytest.raises(manifest.ManifestError, match=r"row 1, column 'label': given twice"):
        manifest.read(str(path))


def test_an_id_too_long_for_a_file_name_is_refused_naming_the_limit(tmp_path):
    limit = manifest.MAX_ID_LENGTH
    assert len(f"tmpXXXXXXXX{'a' * limit}.npz.tmp".encode()) <= 255  # the embedding's temporary name fits
    (recording,) = manifest.read(_jsonl(tmp_path / "ok.jsonl", [{"id": "a" * limit, "sensors": "x.csv"}]))
    assert recording.id == "a" * limit
    path = _jsonl(tmp_path / "m.jsonl", [{"id": "a" * 300, "sensors": "x.csv"}])
    with pytest.raises(manifest.ManifestError, match=rf"row 1, column 'id': 300 characters, over the limit of {limit}"):
        manifest.read(path)


@pytest.mark.parametrize("value", [1, "1", 1.0, " 1 "])
def test_an_integral_subject_is_read(tmp_path, value):
    (recording,) = manifest.read(_jsonl(tmp_path / "m.jsonl", [{"id": "r", "sensors": "x.csv", "subject": value}]))
    assert recording.subject == 1 and isinstance(recording.subject, int)


@pytest.mark.parametrize("column", ["subject", "session"])
def test_a_fractional_subject_or_session_is_refused_not_truncated(tmp_path, column):
    path = _jsonl(tmp_path / "m.jsonl", [{"id": "r", "sensors": "x.csv", column: 1.5}])
    with pytest.raises(manifest.ManifestError, match=rf"row 1, column '{column}': expected int, got 1\.5"):
        manifest.read(path)


def test_the_id_rule_says_ascii(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"id": "s3_trinken_ü", "sensors": "x.csv"}])
    with pytest.raises(manifest.ManifestError, match=r"row 1, column 'id': expected ASCII letters, digits"):
        manifest.read(path)


def test_a_stream_csv_with_a_byte_order_mark_reads_as_without_and_a_repeated_channel_is_refused(tmp_path):
    from harjax.serving import predictor, streaming

    time = np.arange(0, 3, 0.02)
    plain = streaming.read_recording(str(_wrist_csv(tmp_path / "a.csv", time, "time,x,y,z")), ("x", "y", "z"))
    marked = _wrist_csv(tmp_path / "b.csv", time, "time,x,y,z", encoding="utf-8-sig")
    np.testing.assert_array_equal(streaming.read_recording(str(marked), ("x", "y", "z"))[1], plain[1])
    repeated = _wrist_csv(tmp_path / "c.csv", time, "time,x,x,z")
    with pytest.raises(predictor.InputError, match=r"c\.csv: the header names \['x'\] more than once"):
        streaming.read_recording(str(repeated), ("x", "z"))
