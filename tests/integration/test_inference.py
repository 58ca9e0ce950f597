"""A trained model used on new data: every format gives the one model's logits.

Bundle, predictions, streaming, StableHLO and ONNX; and every bad input fails with a message that names the file
and the problem.
"""

import csv
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import sensor_only
from harjax import errors
from harjax.data import batch as batch_lib, pipeline, synthetic
from harjax.evaluators import robustness
from harjax.models import ensemble
from harjax.serving import (
    batch as batch_prediction,
    bundle as bundle_lib,
    export,
    predictor as predictor_lib,
    streaming,
)
from harjax.training import loop
from tests import cli_runs
from tests.conftest import small_config, write_stream


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trained_full):
    """configs/full.py:synthetic (small), trained a few steps and exported in every format."""
    root = tmp_path_factory.mktemp("full")
    config = trained_full.fresh_config()
    trained_full.copy(root / "workdir")
    bundle = export.bundle_from_workdir(str(root / "workdir"), str(root / "bundle"), "latest")
    export.export_stablehlo(bundle, str(root / "bundle" / "stablehlo"), steps=32)
    export.export_onnx(bundle, str(root / "bundle" / "onnx"), steps=32)
    return config, root, bundle


def _raw_eval(config):
    """The eval split as a user would hold it: raw (not standardised) sensors."""
    return synthetic.generate(config.data.synthetic, "eval", config.seed).arrays


def _flax_logits(config, root, corrupt=None):
    """The trained model's logits on the eval split through the training code's own evaluation path."""
    run = loop._setup(config, str(root / "workdir"))
    try:
        state, _ = run.checkpointer.restore(run.checkpointer.latest_step, run.abstract_state)
        rows = run.predict_fns["test"]["predict"](state, corrupt).rows
    finally:
        run.close()
    return rows["logits"][np.argsort(rows[batch_lib.INDEX])]


def _standardised(bundle, raw):
    normalization = bundle.meta["inputs"]["normalization"]
    mask = raw[batch_lib.SENSOR_MASK]
    sensor = np.where(
        mask[..., None],
        (raw[batch_lib.SENSOR] - np.asarray(normalization["mean"], np.float32))
        / np.asarray(normalization["std"], np.float32),
        0,
    ).astype(np.float32)
    return [sensor, mask, raw[batch_lib.VIDEO], np.ones(len(mask), bool)]


def test_the_bundle_holds_what_inference_needs(trained):
    config, root, bundle = trained
    meta = bundle.meta
    assert meta["class_names"] == [f"class_{i:02d}" for i in range(6)]
    assert meta["inputs"]["channel_names"] == list(batch_lib.default_channel_names(12))
    assert meta["inputs"]["sampling_rate_hz"] == config.data.sampling_rate_hz
    assert len(meta["inputs"]["normalization"]["mean"]) == 12 and meta["inputs"]["video_shape"] == [32]
    assert meta["inputs"]["video_source"]["generator"] == "harjax.data.synthetic"
    assert meta["step"] == 6 and meta["metrics"]["eval/accuracy"] >= 0 and meta["jax_version"] == jax.__version__
    assert sorted(os.listdir(root / "bundle")) == [
        "MODEL_CARD.md",
        "bundle.json",
        "calibration.npz",  # training windows for int8 calibration (tests/integration/test_edge.py)
        "onnx",
        "params.msgpack",
        "stablehlo",
    ]
    card = open(root / "bundle" / "MODEL_CARD.md").read()
    assert "imu0_x" in card and "eval/accuracy" in card and "synthetic" in card
    assert meta["training"] == {"last_step": 6, "num_steps": 6, "finished": True} and "Unfinished" not in card
    assert "opt_state" not in json.dumps(meta) and set(bundle.variables) == {"params", "batch_stats"}


def test_every_format_gives_the_trained_models_logits(trained):
    config, root, bundle = trained
    raw = _raw_eval(config)
    expected = _flax_logits(config, root)
    predictor = predictor_lib.Predictor(bundle)
    got = predictor.predict_batch(raw[batch_lib.SENSOR], raw[batch_lib.SENSOR_MASK], raw[batch_lib.VIDEO])
    np.testing.assert_allclose(got.logits, expected, rtol=1e-5, atol=1e-5)

    inputs = _standardised(bundle, raw)
    np.savez(root / "inputs.npz", *inputs)
    script = f"""
import sys, numpy as np, jax
exported = jax.export.deserialize(open({str(root / "bundle" / "stablehlo" / "model.jax_export")!r}, 'rb').read())
params = np.load({str(root / "bundle" / "stablehlo" / "params.npz")!r})
inputs = np.load({str(root / "inputs.npz")!r})
logits = exported.call([params[key] for key in sorted(params.files)], *[inputs[f"arr_{{i}}"] for i in range(4)])
assert not any(name.startswith('harjax') for name in sys.modules), 'the artifact needs no harjax code'
np.save({str(root / "stablehlo_logits.npy")!r}, np.asarray(logits))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=str(root),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(root / "stablehlo_logits.npy"), expected, rtol=1e-5, atol=1e-5)

    import onnxruntime

    session = onnxruntime.InferenceSession(str(root / "bundle" / "onnx" / "model.onnx"))
    names = [node.name for node in session.get_inputs()]
    onnx_logits = session.run(None, dict(zip(names, inputs, strict=True)))[0]
    np.testing.assert_allclose(onnx_logits, expected, rtol=1e-4, atol=1e-4)


def test_predict_writes_classes_top5_and_attention(trained, tmp_path):
    config, root, bundle = trained
    raw = _raw_eval(config)
    np.savez(tmp_path / "new.npz", **raw)
    predictor = predictor_lib.Predictor(bundle)
    table = batch_prediction.predict_file(predictor, str(tmp_path / "new.npz"), batch_size=16)
    batch_prediction.write_rows(table, str(tmp_path / "out.jsonl"))
    batch_prediction.write_rows(table, str(tmp_path / "out.csv"))
    records = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    expected = predictor.predict_batch(raw[batch_lib.SENSOR], raw[batch_lib.SENSOR_MASK], raw[batch_lib.VIDEO])
    assert [record["predicted"] for record in records] == expected.labels()
    assert [record["label"] for record in records] == [bundle.class_names[i] for i in raw[batch_lib.LABEL]]
    assert len(records[0]["top"]) == 5 and records[0]["top"][0]["class"] == records[0]["predicted"]
    assert np.asarray(records[0]["alpha"]).shape == (config.model.num_segments, 16)
    table = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert len(table) == len(records) and float(table[0]["top1_probability"]) >= float(table[0]["top5_probability"])


def test_a_missing_video_is_refused_or_removed_as_in_the_robustness_evaluation(trained):
    config, root, bundle = trained
    raw = _raw_eval(config)
    with pytest.raises(predictor_lib.InputError, match="no 'video' embeddings.*--allow_missing_video"):
        predictor_lib.Predictor(bundle).predict_batch(raw[batch_lib.SENSOR], raw[batch_lib.SENSOR_MASK])
    removed = predictor_lib.Predictor(bundle, allow_missing_video=True).predict_batch(
        raw[batch_lib.SENSOR], raw[batch_lib.SENSOR_MASK]
    )
    assert not removed.video_given.any()
    np.testing.assert_allclose(
        removed.logits, _flax_logits(config, root, robustness.remove_video), rtol=1e-5, atol=1e-5
    )


def test_streaming_windows_a_recording_at_the_bundles_rate(trained, tmp_path):
    config, root, bundle = trained
    channels = list(bundle.channel_names)
    time, values = write_stream(tmp_path / "long.csv", rate_hz=100.0, seconds=6.0, channels=channels)
    video = np.random.default_rng(1).normal(size=32).astype(np.float32)
    np.save(tmp_path / "context.npy", video)
    predictor = predictor_lib.Predictor(bundle)
    rows = streaming.predict_stream(
        predictor,
        str(tmp_path / "long.csv"),
        window_s=0.64,
        hop_s=0.5,
        smooth=3,
        video_path=str(tmp_path / "context.npy"),
        batch_size=4,
    ).rows
    rate = bundle.sampling_rate_hz  # 50 Hz: every second row of the 100 Hz recording
    assert [row["start_s"] for row in rows[:3]] == [0.0, 0.5, 1.0]
    assert rows[0]["end_s"] == pytest.approx(32 / rate)
    assert len(rows) == 1 + int((len(np.arange(0, 5.99 + 1e-9, 1 / rate)) - 32) // 25)
    window = values[::2][25 : 25 + 32].astype(np.float32)  # the second window, resampled by hand
    expected = predictor.predict(window, video)
    assert rows[1]["predicted"] == expected.label
    assert [name for name, _ in rows[1]["top"]] == [name for name, _ in expected.top]
    for index in range(2, len(rows)):  # the majority of the last three windows' labels
        recent = [row["predicted"] for row in rows[index - 2 : index + 1]]
        assert recent.count(rows[index]["smoothed"]) == max(recent.count(label) for label in recent)


def test_a_clock_jump_splits_the_stream_and_a_long_gap_is_masked(trained, tmp_path):
    config, root, bundle = trained
    channels = list(bundle.channel_names)
    rng = np.random.default_rng(3)
    first = np.arange(0, 3.0, 0.02)  # 50 Hz for 3 s, then the clock restarts at 1 s and runs 3 s more
    second = 1.0 + np.arange(0, 3.0, 0.02)
    second = second[(second < 2.0) | (second > 2.6)]  # 0.6 s without samples: a long gap
    time = np.concatenate([first, second])
    values = rng.normal(size=(len(time), len(channels)))
    np.savez(tmp_path / "jump.npz", time=time, sensor=values, channel_names=np.array(channels))
    predictor = predictor_lib.Predictor(bundle, allow_missing_video=True)
    table = streaming.predict_stream(predictor, str(tmp_path / "jump.npz"), 0.64, 0.32, 3, None, 8)
    segments = [row["segment"] for row in table.rows]
    assert set(segments) == {0, 1} and segments == sorted(segments)
    for row in table.rows:  # every window lies inside its own segment's clock
        low, high = (0.0, 3.0) if row["segment"] == 0 else (1.0, 4.0)
        assert low - 1e-6 <= row["start_s"] and row["end_s"] <= high + 1e-6
    masked = [row for row in table.rows if row["gap_steps_masked"]]
    assert masked and all(row["segment"] == 1 and row["start_s"] <= 2.6 and row["end_s"] > 2.0 for row in masked)
    assert table.rows[segments.index(1)]["smoothed"] == table.rows[segments.index(1)]["predicted"]  # a fresh track
    with pytest.raises(errors.UserError, match=r"jump\.npz: the clock jumps back at row 150"):
        streaming.predict_stream(predictor, str(tmp_path / "jump.npz"), 0.64, 0.32, 3, None, 8, on_clock_jump="stop")


def test_an_input_without_rows_writes_the_header_of_any_prediction(trained, tmp_path):
    config, root, bundle = trained
    raw = _raw_eval(config)
    predictor = predictor_lib.Predictor(bundle)
    for name, rows in (("full", slice(None, 4)), ("empty", slice(0, 0))):
        np.savez(tmp_path / f"{name}.npz", **{key: value[rows] for key, value in raw.items()})
        table = batch_prediction.predict_file(predictor, str(tmp_path / f"{name}.npz"), batch_size=16)
        batch_prediction.write_rows(table, str(tmp_path / f"{name}.csv"))
    header = open(tmp_path / "full.csv").readline()
    assert open(tmp_path / "empty.csv").read() == header and header.startswith("index,predicted,")
    assert "label" in header  # the inputs have labels, so both outputs name the true class
    np.savez(tmp_path / "wrong.npz", sensor=np.zeros((0, 32, 5), np.float32))
    with pytest.raises(predictor_lib.InputError, match=r"wrong\.npz: 'sensor' has 5 channels"):
        batch_prediction.predict_file(predictor, str(tmp_path / "wrong.npz"), batch_size=16)


def test_a_prediction_never_replaces_a_file_it_did_not_write(trained, tmp_path):
    config, root, bundle = trained
    np.savez(tmp_path / "new.npz", **_raw_eval(config))
    table = batch_prediction.predict_file(predictor_lib.Predictor(bundle), str(tmp_path / "new.npz"), 64)
    (tmp_path / "notes.csv").write_text("my own notes\n")
    with pytest.raises(predictor_lib.InputError, match=r"notes\.csv exists and is not a prediction file"):
        batch_prediction.write_rows(table, str(tmp_path / "notes.csv"))
    assert (tmp_path / "notes.csv").read_text() == "my own notes\n"
    batch_prediction.write_rows(table, str(tmp_path / "out.csv"))
    batch_prediction.write_rows(table, str(tmp_path / "out.csv"))  # an earlier prediction file is replaced


def test_export_never_replaces_what_it_did_not_write(trained, tmp_path):
    config, root, bundle = trained
    workdir = str(root / "workdir")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    (tmp_path / "file").write_text("")
    refused = {
        str(tmp_path / "mine"): r"exists and is not a harjax bundle \(it holds 1 entries: thesis\.tex\)",
        str(tmp_path / "file"): "exists and is a file",
        workdir: "is the workdir or holds it",
        str(root): "is the workdir or holds it",
        os.path.join(workdir, "checkpoints"): "inside checkpoints, which the run writes",
        os.path.join(workdir, "eval", "bundle"): "inside eval, which the run writes",
    }
    listing = sorted(os.listdir(workdir))
    for output, message in refused.items():
        with pytest.raises(export.ExportError, match=message):
            export.bundle_from_workdir(workdir, output, "latest")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work" and sorted(os.listdir(workdir)) == listing
    inside = export.bundle_from_workdir(workdir, os.path.join(workdir, "bundle"), "latest")  # a new subfolder
    again = export.bundle_from_workdir(workdir, inside.directory, "latest")  # an earlier bundle is replaced
    assert again.meta["params_sha256"] == inside.meta["params_sha256"]

    earlier = shutil.copytree(root / "bundle", tmp_path / "earlier")  # with its stablehlo/ and onnx/ folders
    (earlier / ".stablehlo-k3j4h5g6").mkdir()  # what a killed format export leaves: the export's own
    (earlier / "DEPLOY_NOTES.txt").write_text("my deployment notes")
    (earlier / "calibration").mkdir()
    (earlier / "calibration" / "x.txt").write_text("1")
    listing = sorted(os.listdir(earlier))
    card = (earlier / "MODEL_CARD.md").read_text()
    message = (
        r"is an earlier bundle that also holds 2 entries no export writes \(DEPLOY_NOTES\.txt, calibration/\), "
        "which replacing it would delete; move them out of it, or export to a new folder"
    )
    with pytest.raises(export.ExportError, match=message):
        export.bundle_from_workdir(workdir, str(earlier), "latest")
    with pytest.raises(export.ExportError, match=message):  # harjax.export --bundle=B --output=earlier
        export.write_bundle(str(earlier), bundle.meta, bundle.variables)
    assert sorted(os.listdir(earlier)) == listing and (earlier / "MODEL_CARD.md").read_text() == card
    assert (earlier / "DEPLOY_NOTES.txt").read_text() == "my deployment notes"
    assert (earlier / "calibration" / "x.txt").read_text() == "1"
    shutil.move(earlier / "DEPLOY_NOTES.txt", tmp_path)
    shutil.move(earlier / "calibration", tmp_path)
    export.write_bundle(str(earlier), bundle.meta, bundle.variables)  # moved out: the earlier bundle is replaced
    assert sorted(os.listdir(earlier)) == ["MODEL_CARD.md", "bundle.json", "params.msgpack"]


def test_a_bundle_of_an_interrupted_run_says_it_is_unfinished(trained, tmp_path, caplog):
    """A run stopped before its last step (Ctrl-C, preemption) exports marked unfinished, never as a finished one."""
    config, root, bundle = trained
    workdir = shutil.copytree(root / "workdir", tmp_path / "workdir")
    record = json.loads((workdir / "config.json").read_text())
    record["config"]["train"]["num_steps"] = 40  # its checkpoints end at step 6: stopped at 6 of 40
    (workdir / "config.json").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        unfinished = export.bundle_from_workdir(str(workdir), str(tmp_path / "bundle"), "latest")
    assert unfinished.meta["training"] == {"last_step": 6, "num_steps": 40, "finished": False}
    assert f"{workdir}: the run stopped at step 6 of 40 and is unfinished" in caplog.text
    card = (tmp_path / "bundle" / "MODEL_CARD.md").read_text().splitlines()
    assert card[2].startswith("**Unfinished: the run stopped at step 6 of 40**"), card[:4]  # under the title
    copy = export.write_bundle(str(tmp_path / "copy"), unfinished.meta, unfinished.variables)  # --bundle=B --output
    assert copy.meta["training"]["finished"] is False
    assert "**Unfinished" in (tmp_path / "copy" / "MODEL_CARD.md").read_text()


def test_a_failed_format_export_leaves_the_earlier_one_whole(trained, tmp_path, monkeypatch):
    config, root, bundle = trained
    copy = export.write_bundle(str(tmp_path / "bundle"), bundle.meta, bundle.variables)
    export.export_stablehlo(copy, os.path.join(copy.directory, "stablehlo"), steps=32)
    before = {
        name: open(os.path.join(copy.directory, "stablehlo", name), "rb").read()
        for name in os.listdir(os.path.join(copy.directory, "stablehlo"))
    }

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export.export_stablehlo(copy, os.path.join(copy.directory, "stablehlo"), steps=16)
    after = {
        name: open(os.path.join(copy.directory, "stablehlo", name), "rb").read()
        for name in os.listdir(os.path.join(copy.directory, "stablehlo"))
    }
    assert after == before
    assert sorted(os.listdir(copy.directory)) == ["MODEL_CARD.md", "bundle.json", "params.msgpack", "stablehlo"]


def _export_cli(*args):
    return cli_runs.run_module("harjax.export", *args)


def test_the_export_command_writes_a_bundle_and_refuses_bad_input_in_one_line(trained, tmp_path):
    config, root, bundle = trained
    damaged = export.write_bundle(str(tmp_path / "damaged"), bundle.meta, bundle.variables).directory
    with open(os.path.join(damaged, bundle_lib.PARAMS_FILE), "r+b") as f:
        f.truncate(100)
    other = str(tmp_path / "other")  # a workdir whose checkpoint another model wrote
    shutil.copytree(root / "workdir", other)
    record = json.load(open(os.path.join(other, "config.json")))
    record["config"]["model"]["model_dim"] = 64
    json.dump(record, open(os.path.join(other, "config.json"), "w"))
    (tmp_path / "file").write_text("")
    cases = [
        (["--workdir=" + str(tmp_path / "nowhere"), f"--output={tmp_path / 'b1'}"], "nowhere: no such directory"),
        ([f"--workdir={root / 'workdir'}", f"--output={tmp_path / 'cli'}"], "entries no export writes (NOTES.txt)"),
        ([f"--bundle={damaged}", "--format=stablehlo"], "params.msgpack: unreadable"),
        ([f"--workdir={other}", f"--output={tmp_path / 'b2'}"], "of a model with other parameter shapes"),
        ([f"--workdir={root / 'workdir'}", f"--output={tmp_path / 'file'}"], "exists and is a file"),
    ]
    result = _export_cli(f"--workdir={root / 'workdir'}", f"--output={tmp_path / 'cli'}", "--format=bundle,stablehlo")
    assert result.returncode == 0, result.stderr[-3000:]  # the README's command
    assert sorted(os.listdir(tmp_path / "cli")) == [
        "MODEL_CARD.md",
        "bundle.json",
        "calibration.npz",
        "params.msgpack",
        "stablehlo",
    ]
    (tmp_path / "cli" / "NOTES.txt").write_text("mine")  # the earlier bundle is no longer export's alone
    for args, message in cases:
        result = _export_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("harjax.export: error: ") and message in last, last
    assert (tmp_path / "cli" / "NOTES.txt").read_text() == "mine"


def test_nan_steps_are_masked_and_counted(trained):
    config, _, bundle = trained
    raw = _raw_eval(config)
    sensor = raw[batch_lib.SENSOR][:4].copy()
    sensor[0, 2, 5] = np.nan
    sensor[1, 3:6] = np.nan
    result = predictor_lib.Predictor(bundle).predict_batch(
        sensor, raw[batch_lib.SENSOR_MASK][:4], raw[batch_lib.VIDEO][:4]
    )
    assert result.nan_steps.tolist() == [1, 3, 0, 0] and np.isfinite(result.logits).all()
    masked = raw[batch_lib.SENSOR_MASK][:4].copy()
    masked[0, 2] = False
    masked[1, 3:6] = False
    again = predictor_lib.Predictor(bundle).predict_batch(np.nan_to_num(sensor), masked, raw[batch_lib.VIDEO][:4])
    np.testing.assert_allclose(result.logits, again.logits, rtol=1e-6)


def _cli(*args):
    return cli_runs.run_module("harjax.predict", *args)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing bundle", r"nowhere: no such bundle directory"),
        ("corrupt parameters", r"params\.msgpack: unreadable"),
        (
            "newer bundle",
            r"bundle\.json: written by harjax 9\.9 in bundle format 99; this harjax .* reads formats up to",
        ),
        ("wrong channel count", r"'sensor' has 6 channels; the bundle's model reads 12: imu0_x"),
        ("unknown class index", r"'label' holds class indices \[6\]"),
        ("shorter than a window", r"no window of 5 s fits: its longest stretch of recorded time lasts 0\.\d+ s"),
        ("unreadable stream video", r"context\.npy: not a readable \.npy array"),
    ],
)
def test_bad_input_fails_naming_the_file_and_writes_nothing(trained, tmp_path, case, message):
    config, root, bundle = trained
    raw = _raw_eval(config)
    bundle_dir = str(root / "bundle")
    args = [f"--input={tmp_path / 'in.npz'}"]
    np.savez(tmp_path / "in.npz", **raw)
    if case == "missing bundle":
        bundle_dir = str(tmp_path / "nowhere")
    elif case in ("corrupt parameters", "newer bundle"):
        bundle_dir = str(tmp_path / "copy")
        export.write_bundle(bundle_dir, bundle.meta, bundle.variables)
        if case == "corrupt parameters":
            with open(os.path.join(bundle_dir, bundle_lib.PARAMS_FILE), "r+b") as f:
                f.seek(100)
                f.write(b"\x00" * 64)  # values changed, the format intact: only the checksum can tell
        else:
            json.dump(
                bundle.meta | {"bundle_format": 99, "harjax_version": "9.9"},
                open(os.path.join(bundle_dir, bundle_lib.BUNDLE_FILE), "w"),
            )
    elif case == "wrong channel count":
        np.savez(tmp_path / "in.npz", **raw | {batch_lib.SENSOR: raw[batch_lib.SENSOR][..., :6]})
    elif case == "unknown class index":
        np.savez(tmp_path / "in.npz", **raw | {batch_lib.LABEL: np.full(len(raw[batch_lib.LABEL]), 6)})
    elif case == "unreadable stream video":
        write_stream(tmp_path / "long.csv", 50.0, 10.0, list(bundle.channel_names))
        (tmp_path / "context.npy").write_bytes(b"not an array")
        args = [f"--stream={tmp_path / 'long.csv'}", "--window_s=5", "--hop_s=1", f"--video={tmp_path / 'context.npy'}"]
    else:
        write_stream(tmp_path / "short.csv", 50.0, 0.5, list(bundle.channel_names))
        args = [f"--stream={tmp_path / 'short.csv'}", "--window_s=5", "--hop_s=1"]
    result = _cli(f"--bundle={bundle_dir}", *args, f"--output={tmp_path / 'out.csv'}")
    assert result.returncode != 0
    assert __import__("re").search(message, result.stderr), result.stderr[-2000:]
    assert not any(name.startswith("out") for name in os.listdir(tmp_path))


@pytest.mark.parametrize(
    "model",
    [
        dict(encoder="inception", ridge_weight=0.4),
        dict(encoder="minirocket"),
        dict(encoder="minirocket", head="ridge"),
    ],
    ids=["inception beside a ridge", "minirocket", "minirocket ridge head"],
)
def test_a_sensor_only_ensemble_trained_on_npz_goes_through_every_format(tmp_path, model):
    """An ensemble of two models: the bundle, StableHLO, ONNX and streams compute the ensemble.

    InceptionTime-style members are batch-normalised, MiniRocket's carry the biases and feature statistics fitted
    before step 0, a ridge its fitted classifier (as the head, with no trained parameters, or as a member of the
    other family whose probabilities are mixed in), so every format also carries each member's non-trained state
    (a LayerNorm's path is the CNN's, which the other export tests take); the inputs are normalised as
    configs/sensor_small.py's ('recording_level'), so predictions must standardise raw recordings as training did.
    """
    config = small_config(sensor_only)
    config.model.update(ensemble_size=2, **model)
    config.model.inception.update(depth=3, filters=8, kernel_sizes=(3, 9), bottleneck=8, norm="batch")
    config.model.minirocket.update(num_features=168, stride=2, dim=16)
    for split in ("train", "eval"):
        data = synthetic.generate(config.data.synthetic, split, config.seed)
        np.savez(
            tmp_path / f"{split}.npz",
            **{name: array for name, array in data.arrays.items() if name != batch_lib.VIDEO},
            channel_names=np.array([f"imu{k}_{axis}" for k in range(4) for axis in "xyz"]),
        )
    config.data.update(
        source="npz",
        train_path=str(tmp_path / "train.npz"),
        eval_path=str(tmp_path / "eval.npz"),
        sampling_rate_hz=20.0,
        sensor_normalization="recording_level",
    )
    loop.train_and_evaluate(config, str(tmp_path / "workdir"))
    bundle = export.bundle_from_workdir(str(tmp_path / "workdir"), str(tmp_path / "bundle"), "best")
    assert not bundle.uses_video and bundle.sampling_rate_hz == 20.0 and bundle.meta["inputs"]["video_source"] == {}
    export.export_stablehlo(bundle, str(tmp_path / "bundle" / "stablehlo"), steps=32)
    export.export_onnx(bundle, str(tmp_path / "bundle" / "onnx"), steps=32)
    raw = np.load(tmp_path / "eval.npz")
    predictor = predictor_lib.Predictor(bundle)
    got = predictor.predict_batch(
        raw[batch_lib.SENSOR], raw[batch_lib.SENSOR_MASK], channel_names=[str(name) for name in raw["channel_names"]]
    )
    train_split, eval_split = pipeline.load_splits(config)
    del train_split
    standardised = batch_lib.examples(eval_split, range(len(eval_split)))
    # The bundle's logits are the members' mean probabilities, each member the single model of its parameters.
    assert bundle.ensemble_size == 2 and "ensemble of 2 members" in open(tmp_path / "bundle" / "MODEL_CARD.md").read()
    model = bundle_lib.inference_model(bundle.meta)
    member_probabilities = [
        jax.nn.softmax(model.apply(ensemble.member(bundle.variables, m), standardised, train=False).logits)
        for m in range(2)
    ]
    np.testing.assert_allclose(got.probabilities, np.mean(member_probabilities, axis=0), rtol=1e-5, atol=1e-6)
    exported = jax.export.deserialize(open(tmp_path / "bundle" / "stablehlo" / "model.jax_export", "rb").read())
    params = np.load(tmp_path / "bundle" / "stablehlo" / "params.npz")
    stablehlo_logits = exported.call(
        [params[key] for key in sorted(params.files)],
        standardised[batch_lib.SENSOR],
        standardised[batch_lib.SENSOR_MASK],
    )
    np.testing.assert_allclose(got.logits, stablehlo_logits, rtol=1e-5, atol=1e-5)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "bundle" / "onnx" / "model.onnx"))
    names = [node.name for node in session.get_inputs()]
    onnx_logits = session.run(
        None, dict(zip(names, [standardised[batch_lib.SENSOR], standardised[batch_lib.SENSOR_MASK]], strict=True))
    )[0]
    np.testing.assert_allclose(onnx_logits, got.logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(predictor_lib.InputError, match=r"not the bundle's .*another order"):
        predictor.predict_batch(raw[batch_lib.SENSOR], channel_names=list(reversed(bundle.channel_names)))
    time, values = write_stream(tmp_path / "long.csv", 20.0, 10.0, list(bundle.channel_names))
    rows = streaming.predict_stream(predictor, str(tmp_path / "long.csv"), 1.6, 0.8, 1, None, 8).rows
    assert rows[0]["video"] == "not used" and rows[1]["start_s"] == 0.8 and rows[0]["smoothed"] == rows[0]["predicted"]


def test_recordings_shorter_than_the_segments_are_trained_scored_counted_and_predicted(tmp_path):
    """A test split with 2-step recordings under an encoder of stride 2 and 4 segments: scored, not refused.

    The classical methods pad such a recording and score it; here its one encoder step is shared by the segments.
    """
    config = small_config(sensor_only)
    config.model.update(encoder="inception")
    config.model.inception.update(stride=2)
    for split in ("train", "eval"):
        arrays = dict(synthetic.generate(config.data.synthetic, split, config.seed).arrays)
        del arrays[batch_lib.VIDEO]
        if split == "eval":  # the first 5 recordings keep 2 steps: 1 encoder step for 4 segments
            arrays[batch_lib.SENSOR_MASK] = arrays[batch_lib.SENSOR_MASK].copy()
            arrays[batch_lib.SENSOR_MASK][:5, 2:] = False
            arrays[batch_lib.SENSOR] = np.where(arrays[batch_lib.SENSOR_MASK][..., None], arrays[batch_lib.SENSOR], 0)
        np.savez(tmp_path / f"{split}.npz", **arrays)
    config.data.update(source="npz", train_path=str(tmp_path / "train.npz"), eval_path=str(tmp_path / "eval.npz"))
    workdir = str(tmp_path / "workdir")
    metrics = loop.train_and_evaluate(config, workdir)
    assert np.isfinite(metrics["eval/accuracy"])
    record = json.load(open(os.path.join(workdir, "config.json")))["data"]
    assert record["eval"]["short_recordings"] == 5 and record["train"]["short_recordings"] == 0
    bundle = export.bundle_from_workdir(workdir, str(tmp_path / "bundle"), "best")
    raw = np.load(tmp_path / "eval.npz")
    got = predictor_lib.Predictor(bundle).predict_batch(raw[batch_lib.SENSOR][:5, :2])
    assert np.all(np.isfinite(got.probabilities)) and np.allclose(got.probabilities.sum(-1), 1.0, atol=1e-5)
