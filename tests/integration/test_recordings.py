"""A lab's own recordings and UTD-MHAD: manifest -> extraction (tiny model) -> TFDS -> training -> bundle -> raw clips.

The generated sets are in their real layouts (clips, CSVs on their own clocks with a clock jump, gaps and repairs;
UTD-MHAD's .avi and .mat files with two sequences lacking a file), and the logits predicted from a raw clip and
sensor file must equal those of the same example read from the built dataset. Every test that extracts and builds
is in the slow tier (the fixtures generate, extract, build and train once per module).
"""

import csv
import dataclasses
import glob
import json
import os

import numpy as np
import pytest

from data_builders import extraction, prompt_tuning
from data_builders.recordings import build, extract_embeddings, synthetic
from data_builders.utd_mhad import layout as utd_layout
from harjax import errors
from harjax.data import batch as batch_lib, pipeline
from harjax.recordings import manifest, sensors
from harjax.serving import bundle as bundle_lib, export, predictor as predictor_lib, recordings as serving_recordings
from harjax.study import suites
from harjax.video import families, tiny_models
from tests.conftest import read_metrics, small_config


def _model(directory, contexts):
    return tiny_models.save_tiny_model(str(directory), extra_words=families.words(contexts))


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Generated own recordings, extracted with the tiny model and built."""
    root = tmp_path_factory.mktemp("own")
    written = synthetic.write_recordings(str(root / "tree"))
    model = _model(root / "model", synthetic.CONTEXTS)
    summary = extract_embeddings.extract(written["manifest"], str(root / "emb"), model, "context", batch_size=8)
    directory, report = build.build(written["manifest"], str(root / "data"), str(root / "emb"), leave_subjects_out=True)
    return {**written, "root": root, "model": model, "extraction": summary, "directory": directory, "report": report}


def test_the_build_reports_every_repair_and_skip_by_row(own):
    defects, report = own["defects"], own["report"]
    assert own["extraction"]["extracted"] == 32 and not own["extraction"]["failed"]
    skipped = {reason: sorted(row["id"] for row in rows) for reason, rows in report["skipped"].items()}
    assert skipped == {"low_coverage": sorted(defects["low_coverage"]), "missing_file": sorted(defects["missing_file"])}
    assert report["examples"] == 32 - 4
    per_example = report["alignment_per_example"]
    for identifier in defects["clock_jump"]:
        assert (
            per_example[identifier]["clock_jumps_back"] == 1
            and per_example[identifier]["steps_hidden_by_clock_jump"] > 0
        )
    for identifier in defects["gap"]:
        assert per_example[identifier]["gaps"] == 1 and per_example[identifier]["gap_steps_masked"] >= 5
    for identifier in defects["duplicates_and_out_of_order"]:
        assert per_example[identifier] == {"duplicate_timestamps_dropped": 1, "out_of_order_timestamps": 1}
    assert report["protocols"] == ["manifest", "loso_s1", "loso_s2", "loso_s3", "loso_s4"]
    with open(os.path.join(own["directory"], build.REPORT)) as f:
        assert json.load(f)["skipped"] == report["skipped"]


def test_alignment_puts_each_stream_on_the_clips_clock(own):
    """Two clocks (epoch ms, a phone's seconds) meet on the clip's grid: the signals agree at every step."""
    (recording,) = [r for r in manifest.read(own["manifest"]) if r.id == "s1_drinking_t0"]
    aligned = sensors.align(recording)
    assert aligned.channel_names == ("wrist_x", "wrist_y", "wrist_z", "phone_x", "phone_y", "phone_z")
    assert aligned.sensor.shape == (100, 6) and aligned.mask.all()  # 2 s clip at 50 Hz
    # Both streams carry the same class signal on the clip's clock (noise 0.1 each), so they agree where aligned.
    np.testing.assert_allclose(aligned.sensor[:, :3], aligned.sensor[:, 3:], atol=0.6)
    wrist, phone = recording.sensors  # the phone's offset a quarter second off: the streams disagree
    late = dataclasses.replace(recording, sensors=(wrist, dataclasses.replace(phone, offset_s=phone.offset_s + 0.25)))
    misaligned = sensors.align(late)

    def disagreement(result):
        return np.abs(result.sensor[:, :3] - result.sensor[:, 3:]).mean()

    assert disagreement(misaligned) > 2 * disagreement(aligned)


def test_the_recorded_embedding_kind_is_the_builds_also_under_an_explicit_tfds_config(own):
    """Raw-clip prediction embeds with the kind a run read: an explicit tfds_config wins over data.embedding."""
    config = small_config()
    config.data.update(source="recordings", data_dir=str(own["root"] / "data"), protocol="manifest", max_length=64)
    config.data.update(embedding="last_token", tfds_config="context-video_mean_last")
    train, _ = pipeline.load_splits(config)
    assert train.video_source["embedding"] == "video_mean_last"
    assert train.video_source["extraction"]["prompt_set"] == "context"


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id": "a b", "sensors": "x.csv"}, "column 'id'"),
        ({"id": "a"}, "column 'sensors'"),
        ({"id": "a", "sensors": "x.txt"}, "column 'sensors'"),
        ({"id": "a", "sensors": "x.csv", "split": "dev"}, "column 'split'"),
        ({"id": "a", "sensors": "x.csv", "subject": "one"}, "column 'subject'"),
        ({"id": "a", "sensors": "x.csv", "clip_start_s": 2, "clip_end_s": 1, "clip": "c.mp4"}, "column 'clip_end_s'"),
        ({"id": "a", "sensors": "wrist=x.csv;thigh=y.txt"}, "column 'sensors'"),
    ],
)
def test_a_bad_manifest_row_is_named_by_row_and_column(tmp_path, row, message):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "ok", "sensors": "x.csv"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(manifest.ManifestError, match=f"row 2, {message}"):
        manifest.read(str(path))


@pytest.fixture(scope="module")
def own_bundle(own, tmp_path_factory):
    """configs/full.py's small model trained on the own recordings' manifest split, exported."""
    from harjax.training import loop

    config = small_config()
    config.data.update(source="recordings", data_dir=str(own["root"] / "data"), protocol="manifest", max_length=64)
    config.train.update(batch_size=8, eval_batch_size=8, num_steps=4, eval_every=2, checkpoint_every=2)
    workdir = str(tmp_path_factory.mktemp("own_run"))
    loop.train_and_evaluate(config, workdir)
    return config, export.bundle_from_workdir(workdir, str(tmp_path_factory.mktemp("own_bundle") / "bundle"))


def test_raw_clips_and_sensor_files_predict_as_the_built_examples(own, own_bundle):
    """Extraction, alignment, crop and normalisation at prediction equal the build's: logits to 1e-4."""
    config, bundle = own_bundle
    skipped = {row["id"] for rows in own["report"]["skipped"].values() for row in rows}
    rows = [json.loads(line) for line in open(own["manifest"])]
    kept = [row for row in rows if row["split"] == "test" and row["id"] not in skipped]  # the built test split
    _check_raw_predictions(config, bundle, kept, str(own["root"] / "tree"))


def test_a_learned_prompt_bundle_reads_raw_clips_with_its_prompt(own, tmp_path):
    """A prompt learned on the manifest's split, carried by the bundle: raw clips predict as the built examples."""
    from harjax.training import loop

    examples, classes = prompt_tuning.manifest_training_clips(own["manifest"], "manifest", "context")
    assert examples and all(row["split"] == "train" for row in _rows(own) if row["id"] in {j.name for j, _ in examples})
    settings = prompt_tuning.Settings(
        model=own["model"], dataset=own["manifest"], protocol="manifest", num_tokens=2, learning_rate=3e-2
    )
    prompt_tuning.train(settings, examples, classes, str(tmp_path / "prompt"), steps=3, decode_workers=0)
    learned = str(tmp_path / "prompt" / prompt_tuning.PROMPT_FILE)
    emb, data = str(tmp_path / "emb"), str(tmp_path / "data")
    extract_embeddings.extract(own["manifest"], emb, own["model"], "learned", batch_size=8, learned_prompt=learned)
    build.build(own["manifest"], data, emb, prompt_set="learned_manifest")
    config = small_config()
    config.data.update(source="recordings", data_dir=data, protocol="manifest", prompt_set="learned", max_length=64)
    config.train.update(batch_size=8, eval_batch_size=8, num_steps=2, eval_every=2, checkpoint_every=2)
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config, workdir)
    bundle = export.bundle_from_workdir(workdir, str(tmp_path / "bundle"))
    assert bundle.meta["inputs"]["video_source"]["extraction"]["learned_prompt"]["protocol"] == "manifest"
    skipped = {row["id"] for rows in own["report"]["skipped"].values() for row in rows}
    kept = [row for row in _rows(own) if row["split"] == "test" and row["id"] not in skipped]
    _check_raw_predictions(config, bundle, kept, str(own["root"] / "tree"))


def _rows(own):
    return [json.loads(line) for line in open(own["manifest"])]


def _check_raw_predictions(config, bundle, rows, directory):
    """Predictions from the rows' raw clips and sensor files equal those of the built eval split, in its order.

    `directory`: where the rows' relative paths start (a manifest of them is written there); the Python API on the
    first row's (clip, sensor files) pair gives the same logits.
    """
    predictor = predictor_lib.Predictor(bundle)
    new = os.path.join(directory, "new.jsonl")
    manifest.write(new, rows)
    table = serving_recordings.predict_recordings(predictor, new, batch_size=4)
    assert [row["id"] for row in table.rows] == [row["id"] for row in rows]
    assert [row["label"] for row in table.rows] == [row["label"] for row in rows]

    _, evaluation = pipeline.load_splits(config)
    assert len(evaluation) == len(rows)
    built = evaluation.gather(evaluation.columns(), evaluation.select(np.arange(len(evaluation)), None), np)
    expected = predictor_lib.forward(
        bundle_lib.inference_model(bundle.meta),
        1,
        bundle.variables,
        built[batch_lib.SENSOR],
        built[batch_lib.SENSOR_MASK],
        built[batch_lib.VIDEO],
        np.ones(len(evaluation), bool),
    )
    raw = predictor.predict_batch(*_prepared(predictor, new))
    np.testing.assert_allclose(raw.logits, np.asarray(expected), atol=1e-4)
    assert [row["predicted"] for row in table.rows] == raw.labels()

    first = rows[0]
    streams = {
        stream: {**spec, "path": os.path.join(directory, spec["path"])} for stream, spec in first["sensors"].items()
    }
    clip = os.path.join(directory, first["clip"])
    one = serving_recordings.predict_recording(predictor, streams, clip, first["context"])
    np.testing.assert_allclose(one.logits[0], raw.logits[0], atol=1e-5)


def _prepared(predictor, path):
    values, masks, video = serving_recordings._prepare(predictor, manifest.read(path), "cpu")
    sensor, mask = serving_recordings._padded(values, masks)
    return sensor, mask, video


def _rows_and_an_undamaged_one(own):
    rows = [json.loads(line) for line in open(own["manifest"])]
    return rows, next(row for row in rows if row["id"] not in sum(own["defects"].values(), []))


def test_prediction_refuses_a_row_by_name(own, own_bundle):
    predictor = predictor_lib.Predictor(own_bundle[1])
    rows, good = _rows_and_an_undamaged_one(own)
    cases = {
        "missing": ({**good, "id": "gone", "clip": "clips/none.mp4"}, "gone.*no such clip"),
        "label": ({**good, "id": "odd", "label": "juggling"}, "label 'juggling'"),
        "coverage": (next(row for row in rows if row["id"] == own["defects"]["low_coverage"][0]), "min_coverage"),
    }
    for row, message in cases.values():
        path = own["root"] / "tree" / "bad.jsonl"
        manifest.write(str(path), [good, row])
        with pytest.raises(errors.UserError, match=message):
            serving_recordings.predict_recordings(predictor, str(path))


def test_a_row_listing_its_streams_in_another_order_predicts_as_the_bundles_order(own, own_bundle):
    _, bundle = own_bundle
    _, good = _rows_and_an_undamaged_one(own)
    flipped = {**good, "id": "flipped", "sensors": dict(reversed(list(good["sensors"].items())))}
    path = own["root"] / "tree" / "flipped.jsonl"
    manifest.write(str(path), [good, flipped])
    table = serving_recordings.predict_recordings(predictor_lib.Predictor(bundle), str(path))
    assert list(flipped["sensors"]) == ["phone", "wrist"] and list(bundle.channel_names[:1]) == ["wrist_x"]
    first, second = table.rows
    assert [name for name, _ in first["top"]] == [name for name, _ in second["top"]]
    np.testing.assert_allclose([p for _, p in first["top"]], [p for _, p in second["top"]], atol=1e-6)


@pytest.fixture(scope="module")
def utd(tmp_path_factory):
    """The paper suite's generated UTD-MHAD release ('tiny': 27 actions x 8 subjects x 1 trial), extracted and built."""
    from data_builders.utd_mhad import demo

    data_dir = tmp_path_factory.mktemp("utd") / "data"
    demo.prepare(str(data_dir), tree="tiny")
    (directory,) = glob.glob(str(data_dir / "utd_mhad" / "context-video_mean_last" / "*"))
    with open(os.path.join(directory, build.REPORT)) as f:
        report = json.load(f)
    return {
        "data_dir": data_dir,
        "scan": utd_layout.scan(str(data_dir / "manual")),
        "failed": extraction.undecodable(str(data_dir / "embeddings" / "context")),
        "report": report,
    }


def test_utd_mhad_lacking_sequences_are_found_by_scanning_and_reported(utd):
    lacking = [(entry["sequence"], entry["missing"]) for entry in utd["scan"].missing]
    assert lacking == [("a23_s2_t1", ["rgb"])]  # the spec's a8_s1_t2 has no trial 2 in this tree
    assert utd["failed"] == {"a23_s2_t1"}
    assert [row["id"] for row in utd["report"]["skipped"]["missing_file"]] == ["a23_s2_t1"]
    assert utd["report"]["examples"] == 27 * 8 - 1
    assert utd["report"]["protocols"] == ["cross_subject", *(f"loso_s{subject}" for subject in range(1, 9))]


def test_utd_mhad_reads_cross_subject_with_its_27_classes(utd):
    config = small_config()
    config.data.update(source="recordings", dataset="utd_mhad", data_dir=str(utd["data_dir"]), protocol="cross_subject")
    train, evaluation = pipeline.load_splits(config)
    assert train.class_names == utd_layout.ACTIONS and train.num_classes == 27
    assert len(train) == 27 * 4 and len(evaluation) == 27 * 4 - 1  # odd subjects train, even test
    assert train.channel_names == tuple(f"inertial_{name}" for name in utd_layout.CHANNELS)


def _utd_suite_overrides(data_dir) -> list[str]:
    """The paper suite's smoke steps, on the fixture's generated release (with the suite at size tiny)."""
    from configs.suites import paper

    sizes = {**paper.VARIANT_OVERRIDES["smoke"], "data.data_dir": str(data_dir)}
    return [f"--config.{key}={suites.format_value(value)}" for key, value in sizes.items()]


@pytest.fixture(scope="module")
def utd_suite(utd, tmp_path_factory):
    """Two of the :utd_mhad suite's leave-one-subject-out folds of the full model, trained by the suite runner."""
    from tests.cli_runs import run_module

    root = tmp_path_factory.mktemp("utd_suite")
    flags = [
        "--suite=configs/suites/paper.py:utd_mhad,size=tiny",
        f"--workdir={root}",
        "--seeds=1",
        "--only=loso",
        *_utd_suite_overrides(utd["data_dir"]),
    ]
    for index in (0, 1):  # loso/full on loso_s1 and loso_s2
        done = run_module("harjax.experiments", *flags, f"--run_index={index}")
        assert done.returncode == 0, done.stderr[-3000:]
    done = run_module("harjax.experiments", *flags, "--report")
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_the_utd_mhad_suite_reports_leave_one_subject_out_as_mean_and_std_over_folds(utd_suite):
    scores = []
    for fold in ("loso_s1", "loso_s2"):
        records = read_metrics(utd_suite / "runs" / "loso" / "full" / fold / "seed0")
        scores.append(next(r["eval/macro_f1"] for r in reversed(records) if "eval/macro_f1" in r))
    with open(utd_suite / "report" / "results.csv") as f:
        (full,) = [row for row in csv.DictReader(f) if (row["group"], row["run"]) == ("loso", "full")]
    assert (full["folds_finished"], full["folds"], full["seeds_finished"]) == ("2", "8", "")
    assert float(full["macro_f1_mean"]) == pytest.approx(np.mean(scores))
    assert float(full["macro_f1_std"]) == pytest.approx(np.std(scores, ddof=1))
    report = (utd_suite / "report" / "results.md").read_text()
    assert "| run | " + " | ".join(f"loso_s{subject}" for subject in range(1, 9)) + " |" in report
    assert f"| `loso/full` | {100 * scores[0]:.1f} | {100 * scores[1]:.1f} | – |" in report
    assert "Skipped in this variant: MMAct's protocols" in report
    assert "Left out: `prompt_scene`" in report
    assert "- `loso/sensor_only/loso_s8` seed 0: missing" in report


def test_a_utd_mhad_fold_bundle_predicts_raw_clips_and_mat_files_as_the_built_examples(utd, utd_suite):
    """The fold-1 model (subject 1 never seen) on subject 1's raw .avi clips and .mat files."""
    from configs import common

    workdir = str(utd_suite / "runs" / "loso" / "full" / "loso_s1" / "seed0")
    bundle = export.bundle_from_workdir(workdir, str(utd_suite / "bundle"))
    overrides = [flag[len("--config.") :] for flag in _utd_suite_overrides(utd["data_dir"])]
    config = suites.resolve_config("configs/full.py:utd_mhad,size=tiny", [*overrides, "data.protocol=loso_s1"])
    assert common.SIZES["tiny"]["data.max_length"] == config.data.max_length
    skipped = {row["id"] for rows in utd["report"]["skipped"].values() for row in rows}
    rows = [json.loads(line) for line in open(utd["data_dir"] / "manifest.jsonl")]
    subject_one = [row for row in rows if row["subject"] == 1 and row["id"] not in skipped]
    _check_raw_predictions(config, bundle, subject_one, str(utd_suite))


def test_a_sensors_only_build_of_streams_of_different_widths_is_read_and_guarded(tmp_path):
    """A CSV manifest without clips: a 3-channel CSV stream and a 6-channel .npy stream at a fixed rate."""
    from configs import sensor_only

    rng = np.random.default_rng(0)
    lines = ["id,sensors,sensor_rate_hz,channels,label,subject,split"]
    for index in range(8):
        time = np.arange(0, 3, 0.02)  # 3 s at 50 Hz
        wrist = np.column_stack([time, rng.normal(size=(len(time), 3))])
        np.savetxt(tmp_path / f"w{index}.csv", wrist, delimiter=",", header="time,x,y,z", comments="")
        np.save(tmp_path / f"t{index}.npy", rng.normal(size=(150, 6)))
        label, split = ("sit", "walk")[index % 2], "train" if index < 4 else "test"
        lines.append(f'r{index},wrist=w{index}.csv;thigh=t{index}.npy,50,"a,b,c,d,e,f",{label},{index},{split}')
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    directory, report = build.build(str(path), str(tmp_path / "data"))
    assert report["examples"] == 8 and report["protocols"] == ["manifest"]
    config = small_config(sensor_only)
    config.data.update(source="recordings", data_dir=str(tmp_path / "data"), protocol="manifest", max_length=64)
    train, evaluation = pipeline.load_splits(config)
    assert len(train.channel_names) == 9 and train.channel_names[3:] == tuple(f"thigh_{c}" for c in "abcdef")
    batch = evaluation.gather(evaluation.columns(), evaluation.select(np.arange(4), None), np)
    assert batch[batch_lib.SENSOR].shape == (4, 64, 9) and batch[batch_lib.SENSOR_MASK].all()

    path.write_text("\n".join(lines[:-1]) + "\n")  # the manifest changed: its old build is not reused
    with pytest.raises(errors.UserError, match="built from other inputs \\(the manifest"):
        build.build(str(path), str(tmp_path / "data"))


def test_the_recordings_commands_fail_in_one_line_naming_the_input(tmp_path):
    from tests.cli_runs import run_module

    for module, args, named in [
        ("data_builders.recordings.build", [f"--manifest={tmp_path}/m.jsonl", f"--data_dir={tmp_path}"], "m.jsonl"),
        ("data_builders.utd_mhad.layout", [f"--release_dir={tmp_path}/r", f"--output={tmp_path}/m.jsonl"], "/r"),
    ]:
        done = run_module(module, *args)
        assert done.returncode == 2, done.stderr[-2000:]
        (line,) = done.stderr.strip().splitlines()
        assert named in line and "Traceback" not in done.stderr
