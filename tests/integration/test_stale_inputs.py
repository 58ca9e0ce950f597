"""Nothing stale, nothing lost: extractions and builds keyed by everything they read (generated own recordings).

The half that trains, builds or starts commands of its own; the in-process checks are tests/unit/test_stale_inputs.py.
"""

import json
import os
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
