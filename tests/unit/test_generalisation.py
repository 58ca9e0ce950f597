"""What trains models that generalise.

Augmentation, a validation split for model selection, per-recording normalisation.
"""

import jax
import numpy as np
import pytest

from configs import full, sensor_only
from harjax.data import batch as batch_lib, normalization, npz, pipeline, synthetic
from harjax.training import augment
from tests.conftest import EVERY_AUGMENTATION, small_config

STREAMS = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11))


def _settings(**enabled):
    settings = full.get_config("synthetic").data.augment
    settings.update(enabled)
    return settings


def _batch(rows=8, steps=40, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, steps + 1, rows)
    mask = np.arange(steps)[None] < lengths[:, None]
    return {
        batch_lib.SENSOR: np.where(mask[..., None], rng.normal(size=(rows, steps, 12)), 0).astype(np.float32),
        batch_lib.SENSOR_MASK: mask,
        batch_lib.LABEL: np.zeros(rows, np.int32),
        batch_lib.VIDEO: rng.normal(size=(rows, 16)).astype(np.float32),
    }


@pytest.mark.parametrize("name, value", list(EVERY_AUGMENTATION.items()) + [("all", None)])
def test_each_augmentation_keeps_shapes_masks_and_zero_padding(name, value):
    settings = _settings(**(EVERY_AUGMENTATION if name == "all" else {name: value}))
    batch = _batch()
    out = jax.device_get(jax.jit(lambda b, k: augment.augment(b, k, settings, STREAMS))(batch, jax.random.key(3)))
    mask = batch[batch_lib.SENSOR_MASK]
    assert out[batch_lib.SENSOR].shape == batch[batch_lib.SENSOR].shape and out[batch_lib.SENSOR].dtype == np.float32
    np.testing.assert_array_equal(out[batch_lib.SENSOR_MASK], mask)
    assert not out[batch_lib.SENSOR][~mask].any()  # padding is never augmented into values
    changed_sensor = not np.allclose(out[batch_lib.SENSOR], batch[batch_lib.SENSOR])
    changed_video = (
        not np.allclose(out[batch_lib.VIDEO], batch[batch_lib.VIDEO])
        or not out.get(batch_lib.VIDEO_PRESENT, np.ones(8, bool)).all()
    )
    assert changed_sensor or changed_video
    again = jax.device_get(augment.augment(batch, jax.random.key(3), settings, STREAMS))
    for key in out:  # a function of the key: the same draws give the same batch
        np.testing.assert_allclose(again[key], out[key], rtol=1e-4, atol=1e-4)  # jit and eager round alike


def test_time_transforms_stay_within_each_recording():
    """A recording of ones stays ones under time warp, crop and shift: no padding is read into it."""
    batch = _batch()
    batch[batch_lib.SENSOR] = batch[batch_lib.SENSOR_MASK][..., None].astype(np.float32) * np.ones(12, np.float32)
    out = augment.augment(batch, jax.random.key(0), _settings(time_warp=0.5, crop=0.5, shift=True), STREAMS)
    recorded = batch[batch_lib.SENSOR_MASK]
    np.testing.assert_allclose(np.asarray(out[batch_lib.SENSOR])[recorded], 1.0, rtol=1e-6)


def test_stream_drop_zeroes_whole_streams_and_keeps_one():
    out = np.asarray(
        augment.augment(_batch(rows=64), jax.random.key(1), _settings(stream_drop=0.9), STREAMS)[batch_lib.SENSOR]
    )
    for example in out:
        silent = [not example[:, list(stream)].any() for stream in STREAMS]
        assert sum(silent) < len(STREAMS)  # never every stream
        for stream, quiet in zip(STREAMS, silent, strict=True):  # a stream goes whole or not at all
            assert quiet or all(example[:, channel].any() for channel in stream)


def test_bad_augmentation_settings_name_the_key():
    with pytest.raises(ValueError, match=r"config\.data\.augment\.video_drop must be at most 1"):
        augment.check(_settings(video_drop=1.5))
    with pytest.raises(ValueError, match=r"config\.data\.augment\.jitter must be >= 0"):
        augment.check(_settings(jitter=-0.1))


def _write_npz(path, arrays, **extra):
    np.savez(path, **arrays, **extra)
    return str(path)


def test_the_validation_split_holds_out_whole_subjects(tmp_path):
    data = synthetic.generate(small_config().data.synthetic, "train", 0)
    subjects = np.arange(len(data)) % 10
    loaded = npz.load(_write_npz(tmp_path / "train.npz", data.arrays, subject=subjects))
    rest, validation = loaded.hold_out(0.2, seed=0)
    assert len(rest) + len(validation) == len(loaded)
    assert not set(rest.subjects.tolist()) & set(validation.subjects.tolist())
    assert len(set(validation.subjects.tolist())) == 2
    train_rows = {row.tobytes() for row in rest.arrays[batch_lib.SENSOR]}
    assert not any(row.tobytes() in train_rows for row in validation.arrays[batch_lib.SENSOR])


def test_without_subjects_the_validation_split_is_stratified_by_class():
    data = synthetic.generate(small_config().data.synthetic, "train", 0)
    rest, validation = data.hold_out(0.25, seed=0)
    for label in np.unique(data.labels):
        count = (data.labels == label).sum()
        assert (validation.labels == label).sum() == max(1, round(0.25 * count))
    assert len(rest) + len(validation) == len(data)
    with pytest.raises(ValueError, match=r"config\.data\.validation_fraction must be in \(0, 1\)"):
        data.hold_out(1.0, seed=0)


@pytest.mark.parametrize("mode", normalization.MODES)
def test_sensor_normalisation_modes(tmp_path, mode):
    config = small_config(sensor_only)
    config.data.sensor_normalization = mode
    train_split, eval_split = pipeline.load_splits(config)
    mask = eval_split.arrays[batch_lib.SENSOR_MASK]
    sensor = eval_split.arrays[batch_lib.SENSOR]
    assert not sensor[~mask].any()
    if mode == "recording":
        assert train_split.normalization == {"mode": "recording"}
    else:
        assert set(train_split.normalization) == {"mode", "mean", "std"}
    if mode != "dataset":  # each recording's std 1, its mean 0 or its level in the training split's units
        by_dataset = config.copy_and_resolve_references()
        by_dataset.data.sensor_normalization = "dataset"
        levels = pipeline.load_splits(by_dataset)[0].arrays[batch_lib.SENSOR]
        rows = train_split.arrays[batch_lib.SENSOR][:10]
        for row, level, recorded in zip(rows, levels[:10], train_split.arrays[batch_lib.SENSOR_MASK][:10], strict=True):
            expected = level[recorded].mean(0) if mode == "recording_level" else 0
            np.testing.assert_allclose(row[recorded].mean(0), expected, atol=1e-4)
            np.testing.assert_allclose(row[recorded].std(0), 1, atol=1e-3)
    config.data.sensor_normalization = "global"
    with pytest.raises(ValueError, match="config.data.sensor_normalization must be one of"):
        pipeline.load_splits(config)
