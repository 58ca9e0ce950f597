"""Cross-modal retrieval, missing-modality and occlusion robustness: checked against hand computations."""

import json
import os

import jax
import numpy as np
import pytest

from configs import full, sensor_only, video_only
from harjax.data import batch as batch_lib
from harjax.evaluators import attention, retrieval, robustness
from harjax.models import har_model
from harjax.training import loop
from tests.conftest import compiled, read_metrics, small_config


def test_a_perfect_aligner_retrieves_every_pair_first():
    embeddings = np.random.default_rng(0).normal(size=(20, 8))
    recalls = retrieval.retrieval_recalls(embeddings, embeddings.copy())
    assert recalls == {f"retrieval_{d}_r{k}": 1.0 for d in ("v2s", "s2v") for k in (1, 5, 10)}


def test_recall_at_k_by_hand():
    # Cosine similarities (rows: videos, columns: sensors), unit vectors at 0, 60 and 120 degrees:
    #   video 0 = sensor 1, video 1 = sensor 2, video 2 = sensor 0 exactly; its own pair comes second or third.
    angles = np.deg2rad([0, 60, 120])
    unit = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    video = unit[[1, 2, 0]]  # video i points where sensor (i + 1) % 3 does
    recalls = retrieval.retrieval_recalls(video, unit)
    # video 0 (60 deg): sims to sensors 0, 1, 2 = 0.5, 1, 0.5 -> own (sensor 0) ties with sensor 2: rank 2.
    # video 1 (120 deg): sims 1 -> -0.5, 0.5, 1 -> own (sensor 1, 0.5) is second: rank 1.
    # video 2 (0 deg): sims 1, 0.5, -0.5 -> own (sensor 2) is last: rank 2.
    assert recalls["retrieval_v2s_r1"] == 0.0
    assert recalls["retrieval_v2s_r5"] == 1.0
    # The matrix is symmetric in this case, so sensor-to-video ranks are the same.
    assert recalls["retrieval_s2v_r1"] == 0.0


def test_collapsed_embeddings_score_no_better_than_chance():
    same = np.ones((12, 4))
    recalls = retrieval.retrieval_recalls(same, same)
    assert recalls["retrieval_v2s_r1"] == recalls["retrieval_s2v_r1"] == 0.0  # ties count against the query
    assert recalls["retrieval_v2s_r10"] == 0.0  # 11 tied wrong candidates: never in the top 10


def test_views_of_one_recording_share_their_sensor_candidate():
    rng = np.random.default_rng(1)
    sensors = rng.normal(size=(5, 6))
    groups = np.repeat(np.arange(5), 3)  # three camera views per recording
    videos = sensors[groups] + 0.01 * rng.normal(size=(15, 6))
    recalls = retrieval.retrieval_recalls(videos, sensors[groups], groups)
    assert recalls["retrieval_v2s_r1"] == recalls["retrieval_s2v_r1"] == 1.0
    # Recording 0's views made copies of recording 1's sensor: recording 0 no longer finds its views first, and
    # recording 1 finds recording 0's (exact) views before its own (near) ones: both miss, 3 of 5 recordings hit.
    swapped = videos.copy()
    swapped[groups == 0] = sensors[1]
    assert retrieval.retrieval_recalls(swapped, sensors[groups], groups)["retrieval_s2v_r1"] == pytest.approx(0.6)


def _batch(rows=6, steps=32, channels=12, video_dim=32, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, steps + 1, rows)
    mask = np.arange(steps)[None] < lengths[:, None]
    return {
        batch_lib.SENSOR: np.where(mask[..., None], rng.normal(size=(rows, steps, channels)), 0).astype(np.float32),
        batch_lib.SENSOR_MASK: mask,
        batch_lib.LABEL: np.zeros(rows, np.int32),
        batch_lib.VIDEO: rng.normal(size=(rows, video_dim)).astype(np.float32),
        batch_lib.INDEX: np.arange(rows, dtype=np.int32),
    }


def _logits(config_module, batch, variables=None):
    init, apply = compiled(har_model.build_model(small_config(config_module), num_classes=6))
    variables = variables or init(jax.random.key(0), batch, train=False)
    return apply(variables, batch, train=False).logits, variables


@pytest.mark.parametrize(
    "config_module, condition",
    [
        (sensor_only, robustness.remove_video),  # a video-free model never reads the video
        (video_only, lambda batch: robustness.remove_channels(batch, range(12))),  # nor a sensor-free one its sensors
        (video_only, lambda batch: robustness.occlude(batch, 0.5, seed=0)),
    ],
)
def test_removing_what_a_model_does_not_use_changes_nothing(config_module, condition):
    batch = _batch()
    clean, variables = _logits(config_module, batch)
    corrupted, _ = _logits(config_module, condition(batch), variables)
    np.testing.assert_array_equal(corrupted, clean)


def test_a_removed_video_is_the_training_mean():
    """With the running statistics of the video standardisation, 'video removed' equals feeding their mean."""
    batch = _batch()
    init, apply = compiled(har_model.build_model(small_config(full), num_classes=6))
    variables = init(jax.random.key(0), batch, train=False)
    mean = np.random.default_rng(2).normal(size=32).astype(np.float32)
    variables = {**variables, "batch_stats": {"video_standardise": {"mean": mean, "var": np.full(32, 4.0, np.float32)}}}
    removed = apply(variables, robustness.remove_video(batch), train=False).logits
    at_mean = apply(variables, {**batch, batch_lib.VIDEO: np.tile(mean, (6, 1))}, train=False).logits
    clean = apply(variables, batch, train=False).logits
    np.testing.assert_allclose(removed, at_mean, atol=1e-6)
    assert not np.allclose(removed, clean, atol=1e-3)


def test_a_removed_stream_zeroes_only_its_channels():
    batch = _batch()
    removed = robustness.remove_channels(batch, [3, 4, 5])
    assert not removed[batch_lib.SENSOR][..., 3:6].any()
    np.testing.assert_array_equal(removed[batch_lib.SENSOR][..., :3], batch[batch_lib.SENSOR][..., :3])
    assert batch[batch_lib.SENSOR][..., 3:6].any()  # the input batch is left as it was


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_occlusion_masks_one_contiguous_span_of_recorded_steps(fraction):
    batch = _batch(rows=40, seed=3)
    occluded = robustness.occlude(batch, fraction, seed=7)
    before, after = batch[batch_lib.SENSOR_MASK], occluded[batch_lib.SENSOR_MASK]
    hidden = before & ~after
    assert not (after & ~before).any()  # padding never becomes recorded
    np.testing.assert_array_equal(hidden.sum(1), np.round(fraction * before.sum(1)))
    for row in hidden:  # one run of hidden steps
        positions = np.flatnonzero(row)
        assert len(positions) == 0 or (np.diff(positions) == 1).all()
    assert not occluded[batch_lib.SENSOR][hidden].any()
    np.testing.assert_array_equal(occluded[batch_lib.SENSOR][after], batch[batch_lib.SENSOR][after])
    # The span depends on the example (its index, or its trial), not on the batch it is in.
    alone = robustness.occlude({name: value[5:6] for name, value in batch.items()}, fraction, seed=7)
    np.testing.assert_array_equal(alone[batch_lib.SENSOR_MASK][0], after[5])


def test_views_of_a_trial_lose_the_same_span():
    batch = _batch(rows=4)
    batch[batch_lib.SENSOR_MASK][:] = True
    batch[batch_lib.TRIAL] = np.array([9, 9, 9, 4], np.int32)
    after = robustness.occlude(batch, 0.25, seed=0)[batch_lib.SENSOR_MASK]
    np.testing.assert_array_equal(after[0], after[1])
    np.testing.assert_array_equal(after[0], after[2])


def test_conditions_follow_the_modalities_and_the_streams():
    names = ["acc_phone_x", "acc_phone_y", "acc_phone_z", "gyro_x", "gyro_y", "gyro_z"]
    assert list(robustness.conditions(True, True, names, (0.1, 0.5), seed=0)) == [
        "clean",
        "video_removed",
        "acc_phone_removed",
        "gyro_removed",
        "occluded_10pct",
        "occluded_50pct",
    ]
    assert list(robustness.conditions(False, True, names, (), seed=0)) == ["clean", "acc_phone_removed", "gyro_removed"]


def test_bad_occlusion_fractions_name_the_key(tmp_path, config):
    config.evals.robustness.update(at_end=True, occlusion_fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"config\.evals\.robustness\.occlusion_fractions must lie in \(0, 1\)"):
        loop.train_and_evaluate(config, str(tmp_path))


def test_training_logs_retrieval_and_writes_the_analysis(trained_full):
    config, workdir = trained_full.config, trained_full.workdir
    records = read_metrics(workdir)
    evals = [record for record in records if "eval/accuracy" in record]
    assert [record["step"] for record in evals] == [0, 3, 6]  # step 0: the untrained model
    assert all(0 <= record["eval/retrieval_v2s_r10"] <= 1 and "eval/retrieval_s2v_r1" in record for record in evals)
    robust = [record for record in records if "robustness/clean/accuracy" in record]
    assert len(robust) == 1 and robust[0]["robustness/clean/accuracy"] == evals[-1]["eval/accuracy"]
    assert robust[0]["step"] == 6 and robust[0]["attention/examples"] == 3  # after training, in one record
    weights = np.load(os.path.join(workdir, attention.FILE))
    assert weights["alpha"].shape[:2] == (3, config.model.num_segments)
    assert len(set(weights["label"].tolist())) == 3  # three classes
    np.testing.assert_allclose(weights["alpha"].sum(-1), 1.0, rtol=1e-5)  # every segment holds recorded steps
    assert set(json.load(open(os.path.join(workdir, robustness.FILE)))["conditions"]) == {
        "clean",
        "video_removed",
        "imu0_removed",
        "imu1_removed",
        "imu2_removed",
        "imu3_removed",
        "occluded_10pct",
        "occluded_25pct",
        "occluded_50pct",
    }
