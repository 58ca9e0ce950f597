"""Property tests of what users hand harjax: an npz loads with its documented meaning or fails in one line.

Whatever the arrays hold, the reader and the predict path either do what the README says or fail with one line
naming the file, never with a traceback and never leaving a partial output file. Sizes stay small and the shapes
few (each new shape compiles the predictor once), so these run in the fast tier; the examples are derandomised, so
a failure reproduces.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harjax import errors
from harjax.data import batch as batch_lib, npz
from harjax.serving import batch as batch_prediction, export, predictor as predictor_lib

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FLOATS = (np.float16, np.float32, np.float64)
INTS = (np.int64, np.int32, np.uint8)


FAULTS = (
    "sensor_rank",
    "sensor_dtype",
    "sensor_special",
    "label_rows",
    "label_negative",
    "label_float",
    "mask_gap",
    "mask_empty_row",
    "mask_values",
    "mask_shape",
    "video_rows",
    "video_nan",
    "names_few",
)


@st.composite
def _arrays(draw, rows=(0, 1, 3), steps=(1, 4, 8), channels=(1, 3, 12)) -> dict[str, np.ndarray]:
    """Arrays as a user's npz might hold them: half of them valid, the rest wrong in one or two ways."""
    n, t, c = draw(st.sampled_from(rows)), draw(st.sampled_from(steps)), draw(st.sampled_from(channels))
    faults = draw(st.one_of(st.just(set()), st.sets(st.sampled_from(FAULTS), min_size=1, max_size=2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    sensor = rng.normal(size=(n, t) if "sensor_rank" in faults else (n, t, c))
    if "sensor_special" in faults and sensor.size:
        sensor.flat[rng.integers(0, sensor.size, 2)] = draw(st.sampled_from((np.nan, np.inf, -np.inf)))
    dtype = draw(st.sampled_from((np.int32, np.bool_))) if "sensor_dtype" in faults else draw(st.sampled_from(FLOATS))
    arrays = {"sensor": sensor.astype(dtype)}
    labels = rng.integers(-1 if "label_negative" in faults else 0, 4, n + ("label_rows" in faults))
    arrays["label"] = labels.astype(np.float32 if "label_float" in faults else draw(st.sampled_from(INTS)))
    if draw(st.booleans()) or faults & {"mask_gap", "mask_empty_row", "mask_values", "mask_shape"}:
        mask = np.arange(t)[None] < rng.integers(1, t + 1, n)[:, None]  # [n, t]: recorded steps first
        if "mask_gap" in faults and t > 2 and n:
            mask[0], mask[0, 1] = True, False
        if "mask_empty_row" in faults and n:
            mask[0] = False
        if draw(st.booleans()) or "mask_values" in faults:  # 0/1 integers, as a user may save them
            mask = mask.astype(np.int64) * (2 if "mask_values" in faults else 1)
        arrays["sensor_mask"] = mask
        if "mask_shape" in faults:
            arrays["sensor_mask"] = arrays["sensor_mask"][:, : t - 1]
    if draw(st.booleans()) or faults & {"video_rows", "video_nan"}:
        video = rng.normal(size=(n + ("video_rows" in faults), *draw(st.sampled_from([(5,), (2, 5)]))))
        if "video_nan" in faults and video.size:
            video.flat[0] = np.nan
        arrays["video"] = video.astype(np.float32)
    if draw(st.booleans()) or "names_few" in faults:
        arrays["class_names"] = np.array([f"class{i}" for i in range(3 if "names_few" in faults else 4)])
    return arrays


def _one_line_naming(error: Exception, path: str) -> None:
    message = str(error)
    assert isinstance(error, errors.UserError), f"{type(error).__name__}: {message}"
    assert "\n" not in message and os.path.basename(path) in message, message


@SETTINGS
@given(arrays=_arrays())
def test_the_npz_reader_loads_the_documented_meaning_or_names_the_problem(tmp_path_factory, arrays):
    path = str(tmp_path_factory.mktemp("npz") / "split.npz")
    np.savez(path, **arrays)
    try:
        split = npz.load(path)
    except Exception as error:  # noqa: BLE001 - any other type is the failure this test looks for
        _one_line_naming(error, path)
        return
    sensor, mask, labels = (split.arrays[name] for name in (batch_lib.SENSOR, batch_lib.SENSOR_MASK, batch_lib.LABEL))
    assert sensor.dtype == np.float32 and sensor.ndim == 3 and np.isfinite(sensor).all()
    assert mask.dtype == bool and mask.shape == sensor.shape[:2]
    assert not (mask[:, 1:] & ~mask[:, :-1]).any()  # recorded steps first, padding after
    assert len(sensor) == 0 or mask.any(axis=1).all()  # every example has a recorded step
    assert labels.dtype == np.int32 and labels.shape == (len(sensor),) and (labels >= 0).all()
    assert (labels < split.num_classes).all() and len(split.class_names) == split.num_classes
    if "video" in split.arrays:
        assert len(split.arrays["video"]) == len(sensor) and np.isfinite(split.arrays["video"]).all()


@pytest.fixture(scope="module")
def predictor(trained_full, tmp_path_factory):
    """The shared trained run's model as a bundle (12 channels, video [32], 6 classes)."""
    bundle = export.bundle_from_workdir(trained_full.workdir, str(tmp_path_factory.mktemp("b") / "bundle"), "latest")
    return predictor_lib.Predictor(bundle, allow_missing_video=True)


@st.composite
def _prediction_inputs(draw) -> dict[str, np.ndarray]:
    arrays = draw(_arrays(rows=(0, 1, 2), steps=(8, 32), channels=(12, 12, 12, 11)))
    arrays.pop("class_names", None)  # a prediction input names its channels, not classes
    if "video" in arrays and arrays["video"].shape[1:] == (5,):
        arrays["video"] = np.zeros((len(arrays["video"]), 32), np.float32)  # mostly the bundle's width
    channels = [f"imu{k}_{axis}" for k in range(4) for axis in "xyz"]
    names = draw(st.sampled_from([None, None, "right", "right", "reversed", "short"]))
    if names is not None:
        arrays["channel_names"] = np.array(
            {"right": channels, "reversed": channels[::-1], "short": channels[:11]}[names]
        )
    return arrays


@SETTINGS
@given(arrays=_prediction_inputs())
def test_predict_writes_every_prediction_or_nothing_and_names_the_problem(predictor, tmp_path_factory, arrays):
    folder = tmp_path_factory.mktemp("predict")
    path, output = str(folder / "new.npz"), str(folder / "predictions.csv")
    np.savez(path, **arrays)
    try:
        table = batch_prediction.predict_file(predictor, path, batch_size=2)
        batch_prediction.write_rows(table, output)
    except Exception as error:  # noqa: BLE001 - any other type is the failure this test looks for
        _one_line_naming(error, path)
        assert sorted(os.listdir(folder)) == ["new.npz"]  # no output, whole or partial
        return
    lines = open(output).read().splitlines()
    assert len(lines) == 1 + len(arrays["sensor"]) and lines[0].startswith("index,predicted,")
    assert all(row["predicted"] in predictor.bundle.class_names for row in table.rows)
