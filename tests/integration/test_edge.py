"""Off the workstation: int8 and float16 ONNX models, streams on onnxruntime, and the standalone numpy example."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import sensor_only
from harjax.serving import bundle as bundle_lib, export, predictor as predictor_lib, streaming
from harjax.training import loop
from tests.conftest import REPO, small_config, write_stream

STEPS = 32  # the small config's recordings: 0.64 s at 50 Hz
# The standalone example run with JAX and harjax unimportable: what it needs is numpy and onnxruntime alone.
WITHOUT_JAX = (
    "import runpy, sys\n"
    "for name in ('jax', 'jaxlib', 'flax', 'harjax'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@pytest.fixture(scope="module")
def edge_bundle(tmp_path_factory):
    """A sensor-only model (each recording by its own statistics, its level kept) in every ONNX format."""
    config = small_config(sensor_only)
    config.data.sensor_normalization = "recording_level"
    root = tmp_path_factory.mktemp("edge")
    loop.train_and_evaluate(config, str(root / "workdir"))
    bundle = export.bundle_from_workdir(str(root / "workdir"), str(root / "bundle"), "latest")
    for name in export.ONNX_FORMATS:
        export.EXPORTERS[name](bundle, os.path.join(bundle.directory, name), STEPS)
    return export.record_formats(
        bundle, export.measure_formats(bundle, export.workdir_splits(str(root / "workdir"))[1], STEPS)
    )


def test_every_onnx_format_is_recorded_with_its_size_and_accuracy(edge_bundle):
    formats = edge_bundle.meta["formats"]
    assert set(formats) == {"jax", *export.ONNX_FORMATS}
    for record in formats.values():
        assert record["bytes"] == os.path.getsize(os.path.join(edge_bundle.directory, record["file"]))
        assert 0.0 <= record["eval_accuracy"] <= 1.0 and record["window_steps"] == STEPS
    assert formats["onnx"]["agreement_with_jax"] == 1.0  # float32 ONNX is the same model
    assert formats["onnx_int8"]["bytes"] < formats["onnx"]["bytes"]
    assert formats["onnx_fp16"]["bytes"] < formats["onnx"]["bytes"]
    calibration = edge_bundle.meta["calibration"]
    assert calibration["windows"] == len(edge_bundle.calibration()["sensor"]) == 256  # the whole small split
    card = open(os.path.join(edge_bundle.directory, "MODEL_CARD.md")).read()
    assert "| onnx_int8 | onnx_int8/model.onnx |" in card and "agreement with jax" in card
    signature = json.load(open(os.path.join(edge_bundle.directory, "onnx_int8", "signature.json")))
    assert signature["calibration"] == calibration and signature["steps"] == STEPS
    # Which layers stayed float, and how close the int8 model is on the windows that chose them.
    assert isinstance(signature["kept_float"], list) and signature["calibration_logit_error"] >= 0.0
    assert 0.0 <= signature["calibration_agreement"] <= 1.0


def test_float16_gives_the_float32_logits_to_half_precision(edge_bundle):
    window = edge_bundle.calibration()
    batch = {name: window[name][:16] for name in window}
    logits = {
        runtime: predictor_lib.Predictor(edge_bundle, runtime=runtime)._run(batch).logits
        for runtime in ("jax", "onnx", "onnx_fp16")
    }
    np.testing.assert_allclose(logits["onnx"], logits["jax"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits["onnx_fp16"], logits["jax"], rtol=2e-2, atol=2e-2)


def test_int8_needs_the_bundles_calibration_windows(edge_bundle, tmp_path):
    copy = shutil.copytree(edge_bundle.directory, tmp_path / "bundle")
    os.remove(copy / bundle_lib.CALIBRATION_FILE)
    bundle = bundle_lib.Bundle.load(str(copy))
    with pytest.raises(bundle_lib.BundleError, match=r"calibration.npz: missing .* export the bundle again"):
        export.export_onnx_int8(bundle, str(copy / "int8_again"), STEPS)
    assert not os.path.exists(copy / "int8_again")
    np.savez(copy / bundle_lib.CALIBRATION_FILE, sensor=np.zeros((0, STEPS, 12), np.float32))
    with pytest.raises(bundle_lib.BundleError, match="holds no calibration windows"):
        export.export_onnx_int8(bundle, str(copy / "int8_again"), STEPS)


def _stream(bundle, runtime, path):
    predictor = predictor_lib.Predictor(bundle, runtime=runtime)
    return streaming.predict_stream(predictor, str(path), STEPS / 50, 0.5, 1, None, 8).rows


def test_onnx_streams_give_the_jax_streams_windows_and_classes(edge_bundle, tmp_path):
    write_stream(tmp_path / "long.csv", 100.0, 12.0, list(edge_bundle.channel_names))
    jax_rows = _stream(edge_bundle, "jax", tmp_path / "long.csv")
    for runtime in ("onnx", "onnx_fp16"):
        rows = _stream(edge_bundle, runtime, tmp_path / "long.csv")
        assert [row["start_s"] for row in rows] == [row["start_s"] for row in jax_rows]
        assert [row["predicted"] for row in rows] == [row["predicted"] for row in jax_rows], runtime
    int8 = _stream(edge_bundle, "onnx_int8", tmp_path / "long.csv")
    assert [row["start_s"] for row in int8] == [row["start_s"] for row in jax_rows]


def test_an_onnx_model_refuses_a_window_of_another_length(edge_bundle):
    predictor = predictor_lib.Predictor(edge_bundle, runtime="onnx_int8")
    with pytest.raises(predictor_lib.InputError, match=r"reads windows of 32 steps \(0.64 s at 50 Hz\), got 40"):
        predictor.predict_batch(np.zeros((1, 40, 12), np.float32))
    with pytest.raises(predictor_lib.InputError, match="choose one of"):
        predictor_lib.Predictor(edge_bundle, runtime="tflite")


def test_the_standalone_example_predicts_what_harjax_streams_without_jax(edge_bundle, tmp_path):
    write_stream(tmp_path / "long.csv", 100.0, 12.0, list(edge_bundle.channel_names), seed=3)
    expected = _stream(edge_bundle, "onnx_int8", tmp_path / "long.csv")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_JAX,
            os.path.join(REPO, "docs", "edge", "onnx_stream.py"),
            f"--bundle={edge_bundle.directory}",
            "--format=onnx_int8",
            f"--csv={tmp_path / 'long.csv'}",
            "--hop_s=0.5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == len(expected) > 20
    for row, want in zip(rows, expected, strict=True):
        assert float(row["start_s"]) == pytest.approx(want["start_s"])
        assert row["predicted"] == want["predicted"]
        assert float(row["probability"]) == pytest.approx(want["top"][0][1], abs=1e-4)


def test_the_fused_model_quantizes_to_int8_too(trained_full, tmp_path):
    """Its fusion layers' [1, N] Gemm biases (as jax2onnx writes them) are ones onnxruntime's quantizer cannot index."""
    bundle = export.bundle_from_workdir(trained_full.workdir, str(tmp_path / "bundle"), "latest")
    directory = os.path.join(bundle.directory, "onnx_int8")
    export.EXPORTERS["onnx_int8"](bundle, directory, STEPS)
    bundle = export.record_formats(
        bundle, export.measure_formats(bundle, export.workdir_splits(trained_full.workdir)[1], STEPS)
    )
    assert bundle.meta["formats"]["onnx_int8"]["agreement_with_jax"] >= 0.9
