"""harjax's MMAct input pipeline over the TFDS dataset built from dummy_data, and training on it."""

import contextlib

import numpy as np
import pytest

from configs import sensor_only
from data_builders.mmact import build, make_dummy_data
from harjax.data import batch as batch_lib, pipeline, sampling, tfds_source
from harjax.training import loop
from tests.conftest import assert_caches_serve_the_same_batches, read_metrics, small_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    build.build(
        make_dummy_data.DUMMY_DATA,
        f"{make_dummy_data.DUMMY_DATA}/embeddings",
        str(directory),
        make_dummy_data.TFDS_CONFIG,
    )
    return str(directory)


def _config(data_dir, module=None, **data):
    config = small_config(module) if module else small_config()
    config.data.update(
        {"source": "mmact", "data_dir": data_dir, "tfds_config": make_dummy_data.TFDS_CONFIG, "max_length": 128, **data}
    )
    config.train.update(batch_size=8, eval_batch_size=16)
    return config


def test_splits_follow_the_contract_and_the_protocol(data_dir):
    train_split, eval_split = pipeline.load_splits(_config(data_dir))
    assert train_split.num_classes == 37 and eval_split.class_names[0] == "carrying"
    # cross_subject: subject 1 trains, subject 17 tests; one trial of subject 1 has an undecodable cam1 clip
    # and another lacks cam4, but every trial keeps some camera.
    assert len(train_split) == 12 and train_split.report["skipped_no_camera"] == 0
    assert len(eval_split) == 12 * 4  # subject 17's trials have every view
    example = batch_lib.examples(eval_split, [0])
    assert example[batch_lib.SENSOR].shape == (1, 128, 12) and example[batch_lib.VIDEO].shape == (1, 32)
    assert example[batch_lib.SENSOR_MASK].sum() > 0 and example[batch_lib.TRIAL][0] == eval_split.views[0][0]
    views_of_first_trial = batch_lib.examples(eval_split, range(4))[batch_lib.VIDEO]
    assert len({view.tobytes() for view in views_of_first_trial}) == 4  # four cameras, four embeddings


def test_training_draws_a_random_camera_each_epoch(data_dir):
    train_split, _ = pipeline.load_splits(_config(data_dir))
    first = int(np.flatnonzero(train_split.listing.camera_mask[train_split.views[:, 0]].sum(1) > 1)[0])
    epochs = np.arange(20)
    draws = np.stack([sampling.uniform(0, sampling.CAMERA, epochs, first), np.zeros(20)], axis=1)
    cameras = train_split.select(np.full(20, first), draws)["camera"]
    available = np.flatnonzero(train_split.listing.camera_mask[train_split.views[first, 0]])
    assert set(cameras.tolist()) == set(available.tolist())  # over 20 epochs every camera of the trial comes up


def test_a_training_view_read_without_draws_uses_its_first_available_camera(data_dir):
    """What a teacher's per-example logits and calibration windows read: never a camera the trial lacks."""
    train_split, _ = pipeline.load_splits(_config(data_dir))
    masks = train_split.listing.camera_mask[train_split.views[:, 0]]  # [N, cameras]
    cameras = train_split.select(np.arange(len(train_split)), None)["camera"]
    np.testing.assert_array_equal(cameras, masks.argmax(axis=1))
    assert (~masks[:, 0]).any()  # the dummy data's undecodable cam1 clip: that trial reads another camera
    assert masks[np.arange(len(cameras)), cameras].all()


def test_long_training_trials_are_cropped_at_a_random_start(data_dir):
    train_split, _ = pipeline.load_splits(_config(data_dir, max_length=32))
    trial = np.zeros(8, np.int64)
    draws = np.stack([np.zeros(8), np.linspace(0, 0.999, 8)], axis=1)
    starts = train_split.select(trial, draws)["start"]
    excess = train_split.listing.sensor_length[train_split.views[0, 0]] - 32
    assert starts[0] == 0 and starts[-1] == excess and np.all(np.diff(starts) >= 0)
    batch = train_split.gather(*train_split.read(train_split.select(trial, draws)), np)
    assert batch[batch_lib.SENSOR_MASK].all()  # every crop is 32 recorded steps
    assert not np.array_equal(batch[batch_lib.SENSOR][0], batch[batch_lib.SENSOR][-1])


@pytest.mark.parametrize("protocol", ["cross_subject", "cross_scene"])
def test_sensors_are_standardised_with_the_protocols_statistics(data_dir, protocol):
    train_split, _ = pipeline.load_splits(_config(data_dir, protocol=protocol, max_length=256))
    rows = train_split.gather(
        train_split.columns(), train_split.select(np.arange(len(train_split)), np.zeros((len(train_split), 2))), np
    )
    recorded = rows[batch_lib.SENSOR][rows[batch_lib.SENSOR_MASK]]
    # acc_phone x (channel 0) is present in every training trial, so its standardised moments are 0 and 1 only
    # with this protocol's own training statistics.
    assert abs(recorded[:, 0].mean()) < 1e-3 and abs(recorded[:, 0].std() - 1) < 1e-3


def test_cross_view_evaluates_camera_4_only(data_dir):
    _, eval_split = pipeline.load_splits(_config(data_dir, protocol="cross_view"))
    assert set(eval_split.views[:, 1].tolist()) == {3}
    assert len(eval_split) == 24 - 1  # the trial without a cam4 clip has no view to score


def test_video_free_models_score_one_view_per_trial_and_are_warned_off_cross_view(data_dir, caplog):
    _, eval_split = pipeline.load_splits(_config(data_dir, module=sensor_only))
    assert len(eval_split) == 12 and batch_lib.VIDEO not in batch_lib.examples(eval_split, [0])
    assert "tested on the recordings it trained on" not in caplog.text
    pipeline.load_splits(_config(data_dir, module=sensor_only, protocol="cross_view"))
    assert "tested on the recordings it trained on" in caplog.text


def test_mmact_channels_are_named_by_stream(data_dir):
    train_split, _ = pipeline.load_splits(_config(data_dir))
    assert list(batch_lib.sensor_streams(train_split.channel_names)) == [
        "acc_phone",
        "acc_watch",
        "gyro",
        "orientation",
    ]


def test_embeddings_of_another_prompt_set_are_refused(data_dir):
    with pytest.raises(ValueError, match="prompt set 'context'.*config.data.prompt_set='scene'"):
        pipeline.load_splits(_config(data_dir, prompt_set="scene"))


def test_long_trials_are_cropped_to_max_length(data_dir):
    train_split, eval_split = pipeline.load_splits(_config(data_dir, max_length=64))
    assert train_split.report["longer_than_max_length"] == len(train_split)
    assert batch_lib.examples(eval_split, [0])[batch_lib.SENSOR_MASK].all()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_trains_and_reports_per_view_and_per_trial_scores(data_dir, tmp_path, num_workers):
    config = _config(data_dir, num_workers=num_workers)
    config.train.update(num_steps=4, eval_every=4, checkpoint_every=4)
    final = loop.train_and_evaluate(config, str(tmp_path))
    assert {"eval/accuracy", "eval/macro_f1", "eval/trial_accuracy", "eval/trial_macro_f1"} <= set(final)
    assert (tmp_path / "eval" / "eval_trial_step_4.json").exists()
    assert read_metrics(str(tmp_path))[-1]["eval/trial_accuracy"] == final["eval/trial_accuracy"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_iterator_repeats_batches_and_camera_draws(data_dir, num_workers):
    """An iterator started at a step gives the batches the uninterrupted iterator gave there.

    The random camera choice included; and worker processes change nothing: they give the batches threads give.
    """
    train_split, _ = pipeline.load_splits(_config(data_dir))
    uninterrupted = pipeline.train_iterator(train_split, 4, seed=0, process_index=0, process_count=1)
    for _ in range(5):  # into the second epoch (12 trials)
        next(uninterrupted)
    expected = [next(uninterrupted) for _ in range(4)]
    with contextlib.closing(
        pipeline.train_iterator(
            train_split, 4, seed=0, process_index=0, process_count=1, num_workers=num_workers, start_batch=5
        )
    ) as resumed:
        for batch in expected:
            again = next(resumed)
            for name in batch:
                np.testing.assert_array_equal(again[name], batch[name])


def test_video_free_models_report_no_redundant_per_trial_scores(data_dir, tmp_path):
    config = _config(data_dir, module=sensor_only)
    config.train.update(num_steps=2, eval_every=2, checkpoint_every=2)
    final = loop.train_and_evaluate(config, str(tmp_path))
    assert "eval/accuracy" in final and "eval/trial_accuracy" not in final  # one view per trial


@pytest.mark.parametrize("module", [None, sensor_only])
def test_every_data_cache_serves_the_same_batches(data_dir, module):
    """Random cameras and crops (max_length 64 crops every trial) drawn from (seed, step), for 20 steps (7 epochs)."""
    train_split, eval_split = pipeline.load_splits(_config(data_dir, module=module, max_length=64))
    assert_caches_serve_the_same_batches(train_split, eval_split, batch_size=4, steps=20)


class _NoRecordReads:
    """A data source that knows its length but refuses to decode a record."""

    def __init__(self, source):
        self._source = source

    def __len__(self):
        return len(self._source)

    def __getitem__(self, index):
        raise AssertionError(f"record {index} was decoded while listing the views")


def test_listing_the_views_decodes_no_record(data_dir, monkeypatch):
    opened = tfds_source._open

    def guarded(directory):
        builder = opened(directory)
        as_data_source = builder.as_data_source
        builder.as_data_source = lambda split: _NoRecordReads(as_data_source(split))
        return builder

    monkeypatch.setattr(tfds_source, "_open", guarded)
    train_split, eval_split = pipeline.load_splits(_config(data_dir))
    assert len(train_split) == 12 and len(eval_split) == 48 and len(train_split.labels) == 12


def test_a_dataset_without_a_stored_listing_is_listed_from_its_records(data_dir, monkeypatch, caplog):
    opened = tfds_source._open

    def older(directory):
        builder = opened(directory)
        builder.info.metadata.pop("index")
        return builder

    expected = pipeline.load_splits(_config(data_dir))
    monkeypatch.setattr(tfds_source, "_open", older)
    listed = pipeline.load_splits(_config(data_dir))
    assert "has no stored listing" in caplog.text
    for new, old in zip(listed, expected, strict=True):
        np.testing.assert_array_equal(new.views, old.views)
        np.testing.assert_array_equal(new.listing.sensor_length, old.listing.sensor_length)
