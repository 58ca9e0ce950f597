"""Nothing stale, nothing lost: extractions and builds keyed by everything they read (generated own recordings).

A row whose clip, span or context changes is extracted again, and a build never uses its old embedding; a build
is reused only for the same manifest, files, embeddings and settings, and one data_dir and name never hold builds
of two; a killed extraction leaves no decode worker behind; its input errors are one line.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from data_builders import extraction
from data_builders.recordings import build, extract_embeddings, synthetic
from harjax import errors
from harjax.video import decoding, extractor as extractor_lib, families, tiny_models
from tests.cli_runs import REPO, run_module

SPEC = synthetic.RecordingsSpec(subjects=2, trials=1, defects=False)  # 8 rows: subject 1 trains, subject 2 tests


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    return tiny_models.save_tiny_model(str(root / "tiny"), extra_words=families.words(synthetic.CONTEXTS))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, model):
    """The generated recordings, extracted once (embeddings/context)."""
    root = tmp_path_factory.mktemp("stale")
    written = synthetic.write_recordings(str(root / "tree"), SPEC)
    extract_embeddings.extract(written["manifest"], str(root / "embeddings"), model, "context", decode_workers=0)
    return root, written["manifest"]


def _rows(path):
    return [json.loads(line) for line in open(path)]


def _write(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def _changed_manifest(manifest_path, name):
    """Three rows changed after the extraction: another clip, a shorter span, another context (beside the first)."""
    output = os.path.join(os.path.dirname(manifest_path), f"changed_{name}.jsonl")
    rows = _rows(manifest_path)
    rows[0]["clip"] = rows[1]["clip"]
    rows[2]["clip_start_s"], rows[2]["clip_end_s"] = 0.5, 1.5
    rows[3]["context"] = "The person is in a garage. "
    return _write(output, rows), {rows[0]["id"]: "clip", rows[2]["id"]: "start_s", rows[3]["id"]: "context"}


def _camera_masks(directory, split):
    metadata = json.load(open(os.path.join(directory, "metadata.json")))
    return [mask for (mask,) in metadata["index"][split]["camera_mask"]]


@pytest.mark.slow
def test_a_rerun_extracts_again_exactly_the_rows_whose_clip_span_or_context_changed(extracted, model, tmp_path):
    root, manifest_path = extracted
    stored = root / "embeddings" / "context"
    first = _rows(manifest_path)[0]
    source = extraction.read_source(str(stored / f"{first['id']}.npz"))
    clip = os.path.join(os.path.dirname(manifest_path), first["clip"])
    assert source["clip"]["sha256"] == decoding.file_identity(clip)["sha256"]
    assert (source["start_s"], source["end_s"], source["context"]) == (None, None, first["context"])
    assert source["model"] == model and source["family"] == "video_llava" and source["prompt_set"] == "context"
    assert first["context"] in source["prompt"] and len(source["frame_indices"]) == families.NUM_FRAMES

    copy = tmp_path / "embeddings"
    shutil.copytree(root / "embeddings", copy)
    times = {name: os.stat(copy / "context" / name).st_mtime_ns for name in os.listdir(copy / "context")}
    changed_path, changed = _changed_manifest(manifest_path, tmp_path.name)
    summary = extract_embeddings.extract(changed_path, str(copy), model, "context", decode_workers=0)
    assert summary["extracted"] == 3 and summary["skipped_done"] == sum(name.endswith(".npz") for name in times) - 3
    assert {entry["clip"]: entry["changed"].split()[0] for entry in summary["changed"]} == changed
    untouched = [name for name in times if name.endswith(".npz") and name[: -len(".npz")] not in changed]
    assert all(os.stat(copy / "context" / name).st_mtime_ns == times[name] for name in untouched)

    fresh = extract_embeddings.extract(changed_path, str(tmp_path / "fresh"), model, "context", decode_workers=0)
    assert fresh["extracted"] == len(untouched) + 3
    for identifier in changed:
        with (
            np.load(copy / "context" / f"{identifier}.npz") as again,
            np.load(tmp_path / "fresh" / "context" / f"{identifier}.npz") as new,
        ):
            for kind in extractor_lib.EMBEDDING_KINDS:
                np.testing.assert_array_equal(again[kind], new[kind], err_msg=f"{identifier} {kind}")
    again = extract_embeddings.extract(changed_path, str(copy), model, "context", decode_workers=0)
    assert again["extracted"] == 0 and not again["changed"]


@pytest.mark.slow
def test_a_build_never_uses_an_embedding_made_from_other_inputs(extracted, tmp_path):
    root, manifest_path = extracted
    changed_path, changed = _changed_manifest(manifest_path, tmp_path.name)
    embeddings = str(root / "embeddings")
    with pytest.raises(errors.UserError, match=r"3 rows name a clip .* \(3 stale_embedding; row 1 .*clip"):
        build.build(changed_path, str(tmp_path / "data"), embeddings)
    directory, report = build.build(changed_path, str(tmp_path / "data"), embeddings, allow_missing_embeddings=True)
    assert {row["id"]: row["reason"] for row in report["without_embedding"]} == dict.fromkeys(
        changed, "stale_embedding"
    )
    rows = _rows(changed_path)
    test_ids = [row["id"] for row in rows if row["split"] == "test"]
    train_ids = [row["id"] for row in rows if row["split"] == "train"]
    assert _camera_masks(directory, "manifest_train") == [identifier not in changed for identifier in train_ids]
    assert all(_camera_masks(directory, "manifest_test")) and len(test_ids) == 4


@pytest.mark.slow
def test_a_half_extracted_build_needs_a_flag_and_is_not_reused_once_the_extraction_is_done(extracted, tmp_path):
    root, manifest_path = extracted
    partial = tmp_path / "partial" / "context"
    partial.mkdir(parents=True)
    stored = sorted(name for name in os.listdir(root / "embeddings" / "context") if name.endswith(".npz"))
    for name in stored[:4] + ["metadata.json"]:
        shutil.copy2(root / "embeddings" / "context" / name, partial / name)
    data = str(tmp_path / "data")
    with pytest.raises(errors.UserError, match="4 missing_embedding.*--allow_missing_embeddings"):
        build.build(manifest_path, data, str(tmp_path / "partial"))
    _, report = build.build(manifest_path, data, str(tmp_path / "partial"), allow_missing_embeddings=True)
    assert report["missing_embedding"] == 4

    for name in stored[4:]:  # the extraction finishes
        shutil.copy2(root / "embeddings" / "context" / name, partial / name)
    with pytest.raises(errors.UserError, match=r"other inputs \(the embeddings of 4 rows.*--replace"):
        build.build(manifest_path, data, str(tmp_path / "partial"))
    directory, report = build.build(manifest_path, data, str(tmp_path / "partial"), replace=True)
    assert "missing_embedding" not in report and report["examples"] == 8
    assert all(_camera_masks(directory, "manifest_train")) and all(_camera_masks(directory, "manifest_test"))
    assert build.build(manifest_path, data, str(tmp_path / "partial"))[0] == directory  # the same inputs: reused


@pytest.mark.slow
def test_a_clip_whose_span_was_fixed_after_it_failed_is_extracted(extracted, model, tmp_path):
    root, manifest_path = extracted
    rows = _rows(manifest_path)[:2]
    rows[1]["clip_start_s"], rows[1]["clip_end_s"] = 3.0, 4.0  # after the 2 s clip: no frame in it
    path = os.path.join(os.path.dirname(manifest_path), f"span_{tmp_path.name}.jsonl")
    first = extract_embeddings.extract(_write(path, rows), str(tmp_path / "e"), model, "context")
    assert [failure["clip"] for failure in first["failed"]] == [rows[1]["id"]]
    rows[1]["clip_start_s"], rows[1]["clip_end_s"] = 0.0, 1.0
    fixed = extract_embeddings.extract(_write(path, rows), str(tmp_path / "e"), model, "context")
    assert fixed["extracted"] == 1 and not fixed["failed"] and fixed["skipped_undecodable"] == 0


def _descendants(pid):
    """Every process below `pid` (its children, theirs, ...), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_extraction_leaves_no_decode_worker_behind(extracted, model, tmp_path, stop):
    """Each decode worker holds about 700 MB: SIGKILL or SIGTERM (SLURM's preemption) of an extraction ends them."""
    _, manifest_path = extracted
    output = tmp_path / "embeddings"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "data_builders.recordings.extract_embeddings",
            f"--manifest={manifest_path}",
            f"--output_dir={output}",
            "--prompt_set=context",
            f"--model={model}",
            "--device=cpu",
            "--batch_size=1",
            "--decode_workers=2",
        ],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list((output / "context").glob("*.npz")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    helpers = _descendants(process.pid)  # the fork server, its decode workers, the resource tracker
    assert process.poll() is None and helpers, process.stderr.read()[-2000:]
    process.send_signal(stop)
    assert process.wait(timeout=60) in (-stop, 128 + stop)
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in helpers if _alive(pid)]
    if stop == signal.SIGTERM:
        assert "interrupted (SIGTERM)" in process.stderr.read() and process.returncode == 143


def _broken_model(model, tmp_path, change):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    change(broken)
    return str(broken)


def _other_model_type(folder):
    config = json.load(open(folder / "config.json"))
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "llava_next_video"}))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda folder: (folder / "model.safetensors").unlink(), "cannot be loaded"),
        (
            lambda folder: (folder / "model.safetensors").rename(folder / "pytorch_model.bin"),
            "safetensors weights only",
        ),
        (lambda folder: (folder / "config.json").write_text("{not json"), "cannot be loaded"),
        (lambda folder: (folder / "config.json").unlink(), "cannot be loaded"),
        (_other_model_type, "video_llava"),
    ],
    ids=["no_weights", "bin_weights", "bad_config", "no_config", "other_family"],
)
def test_a_video_model_that_cannot_be_used_is_named_in_one_error(model, tmp_path, change, message):
    broken = _broken_model(model, tmp_path, change)
    with pytest.raises(errors.UserError, match=message) as raised:
        extractor_lib.Extractor(broken, "cpu")
    assert broken in str(raised.value) and "\n" not in str(raised.value)


def test_extraction_flags_and_folders_are_checked_before_a_model_loads(extracted, tmp_path):
    _, manifest_path = extracted
    nowhere = str(tmp_path / "no_model_here")
    for options, message in [
        ({"num_shards": 2, "shard_index": 2}, "--shard_index=2 must be in"),
        ({"num_shards": 0}, "--num_shards >= 1"),
        ({"batch_size": 0}, "--batch_size must be at least 1"),
        ({"decode_workers": -1}, "--decode_workers must be 0"),
    ]:
        with pytest.raises(errors.ConfigError, match=message):
            extract_embeddings.extract(manifest_path, str(tmp_path / "e"), nowhere, "context", **options)
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(errors.UserError, match="--output_dir: cannot make the folder"):
        extract_embeddings.extract(manifest_path, str(tmp_path / "a_file"), nowhere, "context")
    assert (tmp_path / "a_file").read_text() == "mine"
    with pytest.raises(errors.UserError, match="no_model_here: no such folder"):
        extract_embeddings.extract(manifest_path, str(tmp_path / "e"), nowhere, "context")
    with pytest.raises(errors.ConfigError, match="--prompt_set=learned needs --learned_prompt"):
        extract_embeddings.extract(manifest_path, str(tmp_path / "e"), nowhere, "learned")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is here: --device=cuda works")
def test_cuda_without_a_cuda_device_is_refused_in_one_line(model):
    with pytest.raises(errors.UserError, match="--device=cuda: no CUDA device is available here"):
        extractor_lib.Extractor(model, "cuda")


@pytest.mark.slow
def test_the_extraction_commands_fail_in_one_line_with_status_2(extracted, tmp_path):
    _, manifest_path = extracted
    for module, args, named in [
        (
            "data_builders.recordings.extract_embeddings",
            [f"--manifest={manifest_path}", f"--output_dir={tmp_path}", "--prompt_set=context", "--batch_size=0"],
            "--batch_size must be at least 1, got 0",
        ),
        (
            "data_builders.mmact.extract_embeddings",
            [f"--manual_dir={tmp_path}", f"--output_dir={tmp_path}", "--output_dir=x", "--prompt_set=context"],
            "--output_dir is given twice",
        ),
    ]:
        done = run_module(module, *args)
        assert done.returncode == 2, done.stderr[-2000:]
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"{module}: error: ") and named in line


def test_writing_an_embedding_that_fails_leaves_no_temporary_file(tmp_path):
    with pytest.raises(OSError):
        extraction.write_atomic(str(tmp_path / ("a" * 300 + ".npz")), {"x": np.zeros(3)})
    assert os.listdir(tmp_path) == []


# Sensors-only builds: no model needed.


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
