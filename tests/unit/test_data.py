"""The batch contract, the npz and synthetic sources, and the pipeline's coverage guarantees."""

import contextlib
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from harjax.data import batch as batch_lib, npz, pipeline, sampling, synthetic
from tests.conftest import assert_caches_serve_the_same_batches


def _write_npz(path, n=10, steps=16, channels=12, video_dim=8, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "sensor": rng.normal(size=(n, steps, channels)).astype(np.float32),
        "label": rng.integers(0, 3, n),
        "sensor_mask": np.ones((n, steps), bool),
        "video": rng.normal(size=(n, video_dim)).astype(np.float32),
    }
    arrays.update(overrides)
    np.savez(path, **{name: array for name, array in arrays.items() if array is not None})
    return str(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(sensor=None), "missing required array 'sensor'"),
        (dict(label=None), "missing required array 'label'"),
        (dict(sensor=np.zeros((10, 16), np.float32)), r"'sensor' must be float \[N, T, C\], got float32 \[10, 16\]"),
        (dict(sensor=np.zeros((10, 16, 12), np.int64)), r"'sensor' must be float \[N, T, C\]"),
        (dict(label=np.zeros((9,), np.int64)), r"'label' must be int \[N\] with N=10"),
        (dict(label=np.zeros((10,), np.float32)), r"'label' must be int \[N\]"),
        (dict(label=-np.ones((10,), np.int64)), "'label' must be non-negative"),
        (dict(sensor_mask=np.ones((10, 15), bool)), r"'sensor_mask' must be bool \[N, T\] = \[10, 16\]"),
        (dict(sensor_mask=np.zeros((10, 16), bool)), "marks no recorded step in 10 rows"),
        (dict(video=np.zeros((9, 8), np.float32)), r"'video' must be float \[N, d_v\] or \[N, F, d_v\] with N=10"),
        (dict(video=np.full((10, 8), np.nan, np.float32)), "'video' must be finite"),
    ],
)
def test_bad_npz_arrays_name_the_file_array_and_expectation(tmp_path, overrides, message):
    path = _write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(batch_lib.DataError, match=message) as error:
        npz.load(path)
    assert path in str(error.value)


def test_missing_and_unreadable_files_say_what_they_are(tmp_path):
    with pytest.raises(batch_lib.DataError, match="nowhere.npz: no such file"):
        npz.load(str(tmp_path / "nowhere.npz"))
    (tmp_path / "junk.npz").write_text("time,acc_x\n0.0,1.0\n")  # a CSV saved under the wrong name
    with pytest.raises(batch_lib.DataError, match=r"junk\.npz: not an \.npz archive .*; it holds text$"):
        npz.load(str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "objects.npz", sensor=np.array([np.zeros(3), np.zeros(4)], dtype=object))
    with pytest.raises(batch_lib.DataError, match=r"objects\.npz: holds an array of Python objects"):
        npz.load(str(tmp_path / "objects.npz"))
    good = _write_npz(tmp_path / "cut.npz")
    with open(good, "r+b") as f:
        f.truncate(os.path.getsize(good) // 2)
    with pytest.raises(batch_lib.DataError, match=r"cut\.npz: "):
        npz.load(good)
    with pytest.raises(batch_lib.DataError, match="config.data.train_path"):
        npz.load("")


def test_splits_that_name_their_classes_differently_are_refused(tmp_path, caplog):
    names = np.array(["walk", "run", "sit", "stand", "lie", "jump"])
    train = _write_npz(tmp_path / "train.npz", class_names=names)
    other = _write_npz(tmp_path / "eval.npz", class_names=names[[0, 2, 1, 3, 4, 5]])
    with pytest.raises(batch_lib.DataError, match=r"class 1 is 'run' in .*train\.npz and 'sit' in .*eval\.npz"):
        npz.load_pair(train, other)
    fewer = _write_npz(tmp_path / "fewer.npz", class_names=names[:5], label=np.arange(10) % 5)
    with pytest.raises(batch_lib.DataError, match=r"train\.npz names 6 classes and .*fewer\.npz 5"):
        npz.load_pair(train, fewer)
    unnamed = _write_npz(tmp_path / "unnamed.npz")
    with caplog.at_level("INFO"):
        train_split, eval_split = npz.load_pair(train, unnamed)
    assert train_split.class_names == eval_split.class_names == tuple(names)
    assert "class names from" in caplog.text and "train.npz are used for both splits" in caplog.text
    train_split, eval_split = npz.load_pair(unnamed, train)  # names in the evaluation file only
    assert train_split.class_names == eval_split.class_names == tuple(names)


def test_npz_defaults_and_class_count(tmp_path):
    data = npz.load(_write_npz(tmp_path / "ok.npz", sensor_mask=None, video=None, label=np.arange(10) % 3))
    assert data.arrays[batch_lib.SENSOR_MASK].all() and not data.has_video
    assert data.num_classes == 3 and data.class_names == ("0", "1", "2")
    named = npz.load(_write_npz(tmp_path / "named.npz", class_names=np.array(["a", "b", "c", "d"])))
    assert named.num_classes == 4 and named.class_names == ("a", "b", "c", "d")
    with pytest.raises(batch_lib.DataError, match="only 2 classes are declared"):
        npz.load(_write_npz(tmp_path / "few.npz", label=np.arange(10) % 3), num_classes=2)


def test_video_config_on_video_free_data_says_what_to_do(tmp_path, config):
    config.data.source = "npz"
    config.data.train_path = _write_npz(tmp_path / "train.npz", video=None)
    config.data.eval_path = _write_npz(tmp_path / "eval.npz", video=None)
    with pytest.raises(batch_lib.DataError, match="needs video embeddings.*configs/sensor_only.py"):
        pipeline.load_splits(config)


def test_splits_with_different_shapes_are_rejected(tmp_path, config):
    config.data.source = "npz"
    config.data.train_path = _write_npz(tmp_path / "train.npz")
    config.data.eval_path = _write_npz(tmp_path / "eval.npz", channels=6)
    with pytest.raises(batch_lib.DataError, match="per-example shapes differ"):
        pipeline.load_splits(config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(source="csv"), "config.data.source must be one of"),
        (dict(source="mmact"), r"needs config\.data\.data_dir"),
        (dict(source="mmact", data_dir="/nonexistent"), r"no built MMAct dataset.*data_builders\.mmact\.build"),
        (dict(source="mmact", data_dir="/tmp", protocol="cross_moon"), "config.data.protocol must be one of"),
        (dict(source="recordings", data_dir="/nonexistent"), r"no built recordings dataset.*--name=recordings"),
    ],
)
def test_bad_sources_fail_clearly(config, overrides, message):
    config.data.update(overrides)
    with pytest.raises(ValueError, match=message):
        pipeline.load_splits(config)


def test_sensor_standardisation_uses_train_statistics_on_recorded_steps(config):
    train, evaluation = pipeline.load_splits(config)
    recorded = train.arrays[batch_lib.SENSOR][train.arrays[batch_lib.SENSOR_MASK]]
    np.testing.assert_allclose(recorded.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(recorded.std(0), 1, atol=1e-3)
    padding = ~evaluation.arrays[batch_lib.SENSOR_MASK]
    assert padding.any() and (evaluation.arrays[batch_lib.SENSOR][padding] == 0).all()


def test_synthetic_is_seeded_and_each_modality_alone_is_ambiguous(config):
    first, again = (synthetic.generate(config.data.synthetic, "train", seed=3) for _ in range(2))
    np.testing.assert_array_equal(first.arrays[batch_lib.SENSOR], again.arrays[batch_lib.SENSOR])
    assert first.fingerprint == again.fingerprint
    assert synthetic.generate(config.data.synthetic, "train", seed=4).fingerprint != first.fingerprint
    lengths = first.arrays[batch_lib.SENSOR_MASK].sum(1)
    assert lengths.min() < lengths.max()  # varying lengths
    labels = first.arrays[batch_lib.LABEL]
    # classes 0 and 1 share a video prototype; the massive dimensions aside, their means coincide
    video = first.arrays[batch_lib.VIDEO]
    typical = np.median(np.abs(video), axis=0) < 10
    means = [video[labels == c][:, typical].mean(0) for c in (0, 1, 2)]
    assert np.abs(means[0] - means[1]).mean() < 0.3 < np.abs(means[0] - means[2]).mean()


@pytest.mark.parametrize("process_count", [1, 3])
def test_eval_batches_cover_every_example_exactly_once(config, process_count):
    _, evaluation = pipeline.load_splits(config)  # 100 examples: no batch size divides it
    seen, batch_counts = [], []
    for process in range(process_count):
        batches = list(pipeline.eval_batches(evaluation, 16, process, process_count))
        batch_counts.append(len(batches))
        for batch in batches:
            assert len(batch[batch_lib.LABEL]) == 16
            seen.extend(
                batch[batch_lib.SENSOR][batch[batch_lib.VALID]].reshape(batch[batch_lib.VALID].sum(), -1).tolist()
            )
    assert len(set(batch_counts)) == 1  # every process runs the same number of eval steps
    assert len(seen) == len(evaluation)
    assert sorted(map(tuple, seen)) == sorted(map(tuple, evaluation.arrays[batch_lib.SENSOR].reshape(100, -1).tolist()))


def test_train_iterator_shards_processes_and_resumes_at_a_step(config):
    train, _ = pipeline.load_splits(config)
    shards = [next(pipeline.train_iterator(train, 64, 0, p, 2))[batch_lib.SENSOR] for p in range(2)]
    rows = [set(map(tuple, shard.reshape(64, -1).tolist())) for shard in shards]
    assert not rows[0] & rows[1]  # disjoint shards
    single = next(pipeline.train_iterator(train, 128, 0, 0, 1))[batch_lib.SENSOR]
    np.testing.assert_array_equal(np.concatenate(shards), single)  # the same global batch, in process order

    iterator = pipeline.train_iterator(train, 32, 0, 0, 1)
    next(iterator)
    expected = [next(iterator)[batch_lib.LABEL] for _ in range(12)]  # crosses an epoch boundary (256 / 32 = 8)
    resumed = pipeline.train_iterator(train, 32, 0, 0, 1, start_batch=1)
    for batch in expected:
        np.testing.assert_array_equal(next(resumed)[batch_lib.LABEL], batch)
    # A resume onto two processes reads the same global batches, split in process order.
    halves = [pipeline.train_iterator(train, 16, 0, p, 2, start_batch=1) for p in range(2)]
    for batch in expected:
        np.testing.assert_array_equal(np.concatenate([next(half)[batch_lib.LABEL] for half in halves]), batch)


def test_input_workers_outlive_sigterm(config):
    """Input worker processes keep serving after SIGTERM, far beyond what they had buffered.

    Clusters signal every process of a job on preemption; the trainer still needs batches until its checkpoint
    step.
    """
    train, _ = pipeline.load_splits(config)
    expected = pipeline.train_iterator(train, 32, 0, 0, 1)
    with contextlib.closing(pipeline.train_iterator(train, 32, 0, 0, 1, num_workers=2)) as iterator:
        for _ in range(2):  # a batch from each worker: both have started and set their signal handling
            np.testing.assert_array_equal(next(iterator)[batch_lib.LABEL], next(expected)[batch_lib.LABEL])
        workers = multiprocessing.active_children()
        assert workers, "num_workers=2 started no worker processes"
        for worker in workers:
            os.kill(worker.pid, signal.SIGTERM)
        time.sleep(0.5)
        assert all(worker.is_alive() for worker in workers)
        for _ in range(24):  # three epochs
            np.testing.assert_array_equal(next(iterator)[batch_lib.LABEL], next(expected)[batch_lib.LABEL])


def test_negative_num_workers_is_rejected(config):
    train, _ = pipeline.load_splits(config)
    with pytest.raises(ValueError, match="config.data.num_workers must be >= 0"):
        pipeline.train_iterator(train, 32, 0, 0, 1, num_workers=-1)


def test_batch_size_must_split_over_devices():
    with pytest.raises(ValueError, match="config.train.batch_size=30 must be a positive multiple of the 8 devices"):
        pipeline.per_process_batch_size(30, 8, 1, "config.train.batch_size")
    assert pipeline.per_process_batch_size(32, 8, 2, "config.train.batch_size") == 16


def test_every_data_cache_serves_the_same_batches(config):
    train, evaluation = pipeline.load_splits(config)
    assert_caches_serve_the_same_batches(train, evaluation, batch_size=32, steps=12)  # 256 examples: 1.5 epochs


def test_training_batches_are_a_function_of_seed_and_step():
    order = sampling.TrainingOrder(num_examples=10, global_batch=4, seed=1)
    first_epoch = np.concatenate([order.batch(step)[0] for step in range(2)] + [order.batch(2)[0][:2]])
    assert sorted(first_epoch.tolist()) == list(range(10))  # an epoch is a permutation
    examples, epochs = order.batch(2)  # positions 8..11 straddle epochs 0 and 1
    assert epochs.tolist() == [0, 0, 1, 1]
    again = sampling.TrainingOrder(num_examples=10, global_batch=4, seed=1)
    np.testing.assert_array_equal(again.batch(7)[0], order.batch(7)[0])
    halves = [order.batch(7, process, 2)[0] for process in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), order.batch(7)[0])
    assert not np.array_equal(sampling.TrainingOrder(10, 4, seed=2).batch(0)[0], order.batch(0)[0])
    draws = sampling.uniform(1, sampling.CAMERA, np.arange(1000), 5)
    assert 0 <= draws.min() and draws.max() < 1 and abs(draws.mean() - 0.5) < 0.05


def test_splits_of_different_lengths_train_together(tmp_path, config):
    """npz files padded each to its own longest recording: the model is length-agnostic, so they pair as they are."""
    config.data.source = "npz"
    config.data.train_path = _write_npz(tmp_path / "train.npz", n=64, steps=16)
    config.data.eval_path = _write_npz(tmp_path / "eval.npz", n=20, steps=40)
    config.data.synthetic.video_dim = 8
    train, evaluation = pipeline.load_splits(config)
    assert train.example_spec[batch_lib.SENSOR][0] == (16, 12)
    assert evaluation.example_spec[batch_lib.SENSOR][0] == (40, 12)
